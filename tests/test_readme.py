"""The README's Python snippets run as written, a few iterations each on coco128. The test
supplies what a snippet says is the user's: `model` (a small one: detectron2's demo ResNet-18,
its backbone frozen, or torchvision's MobileNet Faster R-CNN, at the snippet's sizes),
`optimizer`, `start_iter = 0`, `max_iter = 2`, a registered `coco_2017_train` stand-in
(coco128), a 1-process gloo group (the plain loop then shards by it), and `torch`; a
torchvision epoch is cut after 2 forwards (at the snippets' 800 px each takes seconds), the
Ultralytics run after its first batch, with coco128 in YOLO form as `my_data.yaml`."""
import csv
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)
DEMO = os.path.join(ROOT, "train", "configs", "demo_coco128_cpu.yaml")


class Enough(Exception):
    """Raised after a few training forwards to end a snippet's epoch."""


def snippet(marker):
    found = [s for s in SNIPPETS if marker in s]
    assert len(found) == 1, f"one README snippet with {marker!r}"
    return found[0]


def stop_after(model, n):
    calls = []

    def hook(module, inputs, outputs):
        calls.append(1)
        if len(calls) >= n:
            raise Enough
    model.register_forward_hook(hook)
    return calls


@pytest.fixture
def coco_2017_train_stand_in(monkeypatch, coco128):
    """coco128 registered under the name the snippet reads."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import load_coco_json
    if "coco_2017_train" in DatasetCatalog.list():
        DatasetCatalog.remove("coco_2017_train")
    load_coco_json(coco128.annotations, coco128.images, "coco_2017_train")  # its metadata
    DatasetCatalog.register("coco_2017_train",
                            lambda: load_coco_json(coco128.annotations, coco128.images,
                                                   "coco_2017_train"))
    yield


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_the_snippets_are_the_ones_tested():
    assert len(SNIPPETS) == 4


@pytest.mark.slow
def test_plain_detectron2_loop_snippet(coco_2017_train_stand_in, one_process_group):
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from dst_dali.config import load_config
    # its backbone frozen: a backbone's backward at the snippet's 800 px takes seconds
    cfg = load_config(DEMO, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.FREEZE_AT", "5"])
    model = build_model(cfg).train()
    user = {"model": model, "optimizer": build_optimizer(cfg, model), "start_iter": 0,
            "max_iter": 2}
    with EventStorage(0):  # detectron2's models log into one
        exec(snippet("from_detectron2(\"coco_2017_train\""), user)
    loader = user["loader"]
    # 2 trained; zip draws a 3rd before range ends, as in detectron2's plain_train_net
    assert loader.iteration == 3 and loader.settings.num_shards == 1
    assert loader.observe_last() is not None  # watched: the forwards fed it


@pytest.mark.slow
def test_torchvision_snippets_train_and_checkpoint(tmp_path, monkeypatch):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    monkeypatch.chdir(ROOT)  # the snippet's data/coco128 paths
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                              num_classes=91, min_size=800,
                                              max_size=1333).train()
    calls = stop_after(model, 2)
    user = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.001),
            "torch": torch}
    with pytest.raises(Enough):
        exec(snippet("for images, targets in loader:"), user)
    assert len(calls) == 2 and user["loader"].iteration == 2
    monkeypatch.chdir(tmp_path)
    exec(snippet("rng_states()"), user)
    assert (tmp_path / "checkpoint.pth").exists()
    assert user["loader"].state_dict()["delivered"] == user["state"]["loader"]["delivered"]


@pytest.mark.slow
def test_ultralytics_snippet(tmp_path, monkeypatch):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    from bench.common import coco128_yolo
    from dst_dali.ultralytics import DSTDetectionTrainer
    data = coco128_yolo(str(tmp_path / "coco128_yolo"))
    (tmp_path / "my_data.yaml").write_text(open(data).read())
    monkeypatch.chdir(tmp_path)
    # under pytest, Ultralytics puts a run without a project beside its own package: here
    import ultralytics.cfg
    monkeypatch.setattr(ultralytics.cfg, "ROOT", tmp_path / "ultralytics")
    seen = []
    preprocess = DSTDetectionTrainer.preprocess_batch

    def one_batch(self, batch):  # trained; the second one's fetch has fed the first's r
        seen.append((batch["img"].shape, self.save_dir))
        if len(seen) > 1:
            raise Enough
        return preprocess(self, batch)
    monkeypatch.setattr(DSTDetectionTrainer, "preprocess_batch", one_batch)
    with pytest.raises(Enough):
        exec(snippet("trainer=DSTDetectionTrainer"), {})
    shape, save_dir = seen[0]
    assert shape == (16, 3, 640, 640)
    with open(os.path.join(save_dir, "dst_history", "rank0.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["kind"] == "regular" and float(rows[0]["r"]) >= 0
    assert str(save_dir).startswith(str(tmp_path))
