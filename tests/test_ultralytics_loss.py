"""The box loss split for Ultralytics' detection models (a v8-style head, YOLO11, and an
end-to-end one, YOLO26): on a fixed batch the probed loss, its logged items and every gradient
are torch.equal to the unprobed ones; small, medium and large parts sum to the box loss; r is
1 on an all-small batch and 0 on an all-large one; the validator's calls leave nothing; the
end-to-end criterion's update() and rebuild still work; the model pickles without dst_dali."""
import copy
import os
import pickle

import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
tasks = pytest.importorskip("ultralytics.nn.tasks")
cfg = pytest.importorskip("ultralytics.cfg")

from dst_dali.feedback.signals import probe_for  # noqa: E402
from dst_dali.ultralytics import UltralyticsBoxLossProbe  # noqa: E402

IMGSZ = 256


def model_of(yaml: str):
    torch.manual_seed(0)
    model = tasks.DetectionModel(yaml, nc=8, verbose=False)
    model.args = cfg.get_cfg()  # the hyperparameters the criterion reads (box, cls, dfl gains)
    return model.train()


def batch_of(sides, seed=0):
    """Two images, boxes of the given sides in pixels at random places; Ultralytics' batch."""
    rng = np.random.default_rng(seed)
    boxes, owner = [], []
    for i in range(2):
        for side in sides:
            c = rng.uniform(side / 2 + 1, IMGSZ - side / 2 - 1, 2)
            boxes.append([c[0] / IMGSZ, c[1] / IMGSZ, side / IMGSZ, side / IMGSZ])
            owner.append(i)
    n = len(boxes)
    return {"img": torch.from_numpy(rng.uniform(0, 1, (2, 3, IMGSZ, IMGSZ)).astype(np.float32)),
            "cls": torch.from_numpy(rng.integers(0, 8, (n, 1)).astype(np.float32)),
            "bboxes": torch.tensor(boxes, dtype=torch.float32),
            "batch_idx": torch.tensor(owner, dtype=torch.float32)}


def run(model, batch):
    model.zero_grad(set_to_none=True)
    loss, items = model.loss(batch)
    loss.sum().backward()
    return loss.detach(), {k: v.clone() for k, v in items.items()}, \
        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("yaml", ["yolo11n.yaml", "yolo26n.yaml"])
def test_the_split_changes_nothing_and_adds_up(yaml):
    batch = batch_of([12, 40, 140])
    plain = model_of(yaml)
    probed = copy.deepcopy(plain)
    probe = probe_for(probed)
    assert isinstance(probe, UltralyticsBoxLossProbe)
    reference, measured = run(plain, batch), run(probed, batch)
    assert torch.equal(reference[0], measured[0])
    assert reference[1].keys() == measured[1].keys()
    assert all(torch.equal(reference[1][k], measured[1][k]) for k in reference[1])
    assert reference[2].keys() == measured[2].keys() and len(reference[2]) > 100
    assert all(torch.equal(reference[2][k], measured[2][k]) for k in reference[2])
    parts = probe.pop()
    assert probe.pop() is None
    box = parts[0]
    assert (box[:3] > 0).all()
    assert box[:3].sum().item() == pytest.approx(box[3].item(), abs=1e-6)
    if "one2one" not in type(probed.criterion).__name__.lower() and \
            not hasattr(probed.criterion, "one2many"):  # a v8 head logs this very box loss
        logged = measured[1]["box_loss"] + measured[1]["dfl_loss"]
        assert box[3].item() == pytest.approx(logged.item(), abs=1e-6)


@pytest.mark.parametrize("yaml", ["yolo11n.yaml", "yolo26n.yaml"])
def test_r_is_one_on_small_objects_and_zero_on_large_ones(yaml):
    model = model_of(yaml)
    probe = probe_for(model)
    run(model, batch_of([10, 14, 20]))
    small = probe.pop()[0]
    assert small[3] > 0 and (small[0] / small[3]).item() == pytest.approx(1.0, abs=1e-6)
    run(model, batch_of([120, 160, 200]))
    large = probe.pop()[0]
    assert large[3] > 0 and large[0].item() == 0.0 and large[2] / large[3] > 0.5


def test_the_validator_end_to_end_updates_and_rebuilds():
    model = model_of("yolo26n.yaml")
    probe = probe_for(model)
    batch = batch_of([12, 40, 140])
    with torch.inference_mode():  # as Ultralytics' validator calls the loss
        model.loss(batch)
    assert probe.pop() is None
    before = model.criterion.o2m
    model.criterion.update()  # E2ELoss's branch weighting still reaches it
    assert model.criterion.o2m < before
    model.criterion = model.init_criterion()  # as Ultralytics rebuilds it on resume
    probe.attach()
    run(model, batch)
    assert probe.pop() is not None
    saved = copy.deepcopy(model)
    saved.criterion = None  # as save_model does before pickling
    assert b"dst_dali" not in pickle.dumps(saved)
    probe.remove()
    run(model, batch)
    assert probe.pop() is None


def test_only_the_box_signal_is_measured(coco128):
    from dst_dali import DSTLoader
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=1, device="cpu")
    with pytest.raises(ValueError, match=r"signal='cls': DetectionModel's loss parts give "
                                         r"\('reg',\) only"):
        loader.watch(model_of("yolo11n.yaml"), signal="cls")
    assert loader.feed.probe is None
    loader.close()
