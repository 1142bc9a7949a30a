"""DSTLoader as a drop-in in stock training loops, with only the documented lines: a
torchvision-reference-style loop and a detectron2 plain_train_net-style loop run DST (collage
batches when r <= tau); watching again replaces the probe and unwatch removes it; a feedback
controller nobody feeds is reported."""
import os
import warnings

import numpy as np
import pytest
import torch

from dst_dali import DSTLoader, FeedbackController

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "train", "configs", "demo_coco128_cpu.yaml")


def check_decisions_follow_r(loader, kinds, tau):
    """kinds[i] is the kind of batch i; the controller saw r of batches 0..n-2 (and of the
    last one when the loop drew one more batch, as zip(loader, range(n)) does)."""
    shares = loader.controller.shares
    assert len(kinds) - 1 <= len(shares) <= len(kinds)
    for r, kind in zip(shares, kinds[1:]):
        assert (kind == "collage") == (r is not None and r <= tau)
    assert "collage" in kinds


@pytest.mark.slow
def test_torchvision_reference_loop(coco128, tmp_path):
    """As references/detection/engine.py's train_one_epoch: for images, targets in loader.
    The loop leaves a feedback record (record_dir): a row an iteration the controller saw,
    with its kind, r as fed, the decision and the batch's boxes by size (counted here from the
    targets, COCO's areas in input pixels)."""
    from dst_dali.feedback.history import read_histories

    from .torchvision_models import torchvision_faster_rcnn
    # the loader's sizes (no resize); the ResNet frozen: its backward is most of a step
    model = torchvision_faster_rcnn(91, min_size=192, max_size=320, trainable_layers=0)
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(192,),
                       max_size=320, output="torchvision", labels="coco", device="cpu",
                       controller=FeedbackController(tau=0.5), record_dir=str(tmp_path))
    loader.watch(model)  # the one added line
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.train()
    kinds, counts = [], []
    for i, (images, targets) in enumerate(loader):
        kinds.append(loader.last_kind)
        area = torch.cat([(t["boxes"][:, 2] - t["boxes"][:, 0]) *
                          (t["boxes"][:, 3] - t["boxes"][:, 1]) for t in targets]).numpy()
        counts.append([int(np.sum(area < 32 ** 2)),
                       int(np.sum((area >= 32 ** 2) & (area < 96 ** 2))),
                       int(np.sum(area >= 96 ** 2))])
        loss_dict = model(images, targets)
        losses = sum(loss for loss in loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        if i == 5:
            break
    check_decisions_follow_r(loader, kinds, 0.5)
    rows = read_histories(str(tmp_path))[0]["history"]  # on disk while the loop runs
    c = loader.controller
    assert [h["iteration"] for h in rows] == list(range(len(c.shares))) and len(rows) >= 5
    assert [h["kind"] for h in rows] == kinds[:len(rows)]
    assert [h["next"] for h in rows] == c.decisions
    assert [h["decided_by"] for h in rows] == ["r"] * len(rows)
    assert [h["share"] for h in rows] == pytest.approx(c.shares, rel=1e-5)
    assert [[h["n_small"], h["n_medium"], h["n_large"]] for h in rows] == counts[:len(rows)]
    assert any(h["n_small"] for h in rows)
    for h in rows:
        assert h["small"] + h["medium"] + h["large"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_detectron2_plain_train_net_loop(coco128):
    """As detectron2's tools/plain_train_net.py do_train: zip(data_loader, range(...))."""
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    from dst_dali.config import load_config
    cfg = load_config(DEMO, ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TRAIN", "(256,)",
                             "INPUT.MAX_SIZE_TRAIN", "384"])
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(256,),
                       max_size=384, device="cpu", controller=FeedbackController(tau=0.5))
    loader.watch(model)
    model.train()
    kinds = []
    from detectron2.utils.events import EventStorage
    with EventStorage(0):
        for data, iteration in zip(loader.endless(), range(0, 6)):
            kinds.append(loader.last_kind)
            loss_dict = model(data)
            losses = sum(loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
        check_decisions_follow_r(loader, kinds, 0.5)
        # watching again replaces the probe rather than wrapping the model twice; unwatch
        # gives the model its own losses() back
        first = loader.feed.probe
        loader.watch(model)
        model(data)
        assert first.pop() is None and loader.feed.probe.pop() is not None
    loader.unwatch()
    assert "losses" not in vars(model.roi_heads.box_predictor)


def test_unfed_controller_warns_once(coco128):
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=1, min_size=(64,),
                       max_size=96, device="cpu", controller=FeedbackController(0.1))
    with pytest.warns(UserWarning, match="nothing has fed it; call loader.watch"):
        for _ in range(11):
            loader.next_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.next_batch()  # once only
    fed = DSTLoader(coco128.images, coco128.annotations, batch_size=1, min_size=(64,),
                    max_size=96, device="cpu", controller=FeedbackController(0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(12):
            fed.next_batch()
            fed.controller.observe(0.5, 1.0)


def test_watched_model_that_never_runs_warns(coco128):
    from .torchvision_models import torchvision_faster_rcnn
    model = torchvision_faster_rcnn(91)
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=1, min_size=(64,),
                       max_size=96, output="torchvision", device="cpu").watch(model)
    with pytest.warns(UserWarning, match="left no loss parts"):
        for _ in range(12):
            loader.next_batch()


def test_torchvision_targets_coco_labels_area_iscrowd(coco128):
    """labels="coco": the category ids of the annotation file, as torchvision's reference
    (num_classes 91); "contiguous": 1..C. area is the box's, iscrowd 0, all on the image's
    device."""
    import json
    with open(coco128.annotations) as f:
        cats = sorted(c["id"] for c in json.load(f)["categories"])
    a = DSTLoader(coco128.images, coco128.annotations, batch_size=2, output="torchvision",
                  labels="coco", device="cpu", seed=3)
    b = DSTLoader(coco128.images, coco128.annotations, batch_size=2, output="torchvision",
                  device="cpu", seed=3)
    for kind in ("regular", "collage"):
        (_, ta), (_, tb) = a.next_batch(kind), b.next_batch(kind)
        for x, y in zip(ta, tb):
            np.testing.assert_array_equal(x["labels"].numpy(),
                                          np.asarray(cats)[y["labels"].numpy() - 1])
            assert set(x["labels"].tolist()) <= set(cats) and y["labels"].min() >= 1
            box = x["boxes"]
            torch.testing.assert_close(x["area"], (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
            assert x["iscrowd"].tolist() == [0] * len(box)
            assert x["labels"].device == x["boxes"].device == x["area"].device
    with pytest.raises(ValueError, match="labels='voc'"):
        DSTLoader(coco128.images, coco128.annotations, labels="voc", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_torchvision_dense_detectors_train_with_watch(coco128, arch):
    """torchvision's RetinaNet and FCOS in the reference loop: loader.watch(model) feeds the
    controller r of their box-regression loss (tau = 1: every fed r asks for a collage)."""
    from .torchvision_models import torchvision_dense_model
    model = torchvision_dense_model(arch, num_classes=81)  # labels 1..80
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(256,),
                       max_size=256, output="torchvision", device="cpu",
                       controller=FeedbackController(tau=1.0)).watch(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    kinds = []
    for (images, targets), _ in zip(loader, range(4)):
        kinds.append(loader.last_kind)
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    check_decisions_follow_r(loader, kinds, 1.0)
    assert loader.last_feedback["local"][3] > 0


def test_coco_labels_refuse_a_dataset_whose_category_ids_start_at_0(coco128):
    """A list of dicts (or VOC) has contiguous ids from 0; as torchvision labels, 0 is the
    background: labels='coco' is refused, 'contiguous' gives 1..C."""
    from detectron2.data.datasets import load_coco_json

    from dst_dali.data.catalog import index_of_dataset_dicts
    dicts = load_coco_json(coco128.annotations, coco128.images, "coco128_contiguous")
    index = index_of_dataset_dicts("coco128_contiguous", dicts, list(range(80)),
                                   [str(i) for i in range(80)])
    with pytest.raises(ValueError, match="labels='contiguous'"):
        DSTLoader(index=index, output="torchvision", labels="coco", device="cpu")
    loader = DSTLoader(index=index, output="torchvision", device="cpu", min_size=(64,),
                       max_size=96)
    _, targets = loader.next_batch("regular")
    assert all(t["labels"].min() >= 1 for t in targets if len(t["labels"]))


def test_loader_without_torch_says_how_to_install(tmp_path):
    import subprocess
    import sys
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoTorch())\n")
    r = subprocess.run([sys.executable, "-c", "from dst_dali.loader import DSTLoader"],
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    # a ModuleNotFoundError (an ImportError), so `import dst_dali`'s lazy names say the same
    assert "ModuleNotFoundError: dst_dali.loader needs torch and torchvision: pip install " \
           "'dst_dali[loader]'" in r.stderr, r.stderr[-800:]


@pytest.mark.slow
def test_plain_loop_checkpoint_resumes_exactly(coco128):
    """A torchvision loop checkpointed after step 3 (model, optimizer, loader.state_dict(),
    dst_dali.checkpoint.rng_states(), as the README says) and resumed in a fresh process's
    worth of objects delivers the same kinds and images as the uninterrupted run, and ends
    with the same controller history. The loader's state carries the step's loss parts, which
    its controller had not seen yet when the checkpoint was taken."""
    import io

    from dst_dali.checkpoint import rng_states, set_rng_states

    from .torchvision_models import torchvision_dense_model

    def start(seed):
        torch.manual_seed(seed)
        model = torchvision_dense_model("retinanet", num_classes=81, size=192)
        loader = DSTLoader(coco128.images, coco128.annotations, batch_size=2, min_size=(192,),
                           max_size=192, output="torchvision", device="cpu", seed=5,
                           controller=FeedbackController(tau=0.35)).watch(model)
        return model, loader, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def steps(model, loader, optimizer, n):
        seen = []
        for _ in range(n):  # (zip(loader, range(n)) would draw one batch more, untrained)
            images, targets = loader.next_batch()
            seen.append((loader.last_kind, loader.last_image_ids))
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return seen

    ref_model, ref_loader, ref_optimizer = start(0)
    reference = steps(ref_model, ref_loader, ref_optimizer, 7)
    model, loader, optimizer = start(0)
    assert steps(model, loader, optimizer, 3) == reference[:3]
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(), "rng": rng_states()}, buffer)
    del model, loader, optimizer
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model, loader, optimizer = start(123)  # other weights until the checkpoint is loaded
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    loader.load_state_dict(state["loader"])
    set_rng_states(state["rng"])
    resumed = steps(model, loader, optimizer, 4)
    assert resumed == reference[3:]
    kinds = {kind for kind, _ in reference}
    assert kinds == {"regular", "collage"}, kinds
    ref_loader.observe_last()
    loader.observe_last()
    assert loader.controller.decisions == ref_loader.controller.decisions
    assert loader.controller.shares == ref_loader.controller.shares
    # the feedback record too: the resumed loader's is the uninterrupted one's, row for row
    assert len(loader.record.rows) == 7
    assert loader.record.rows == ref_loader.record.rows
