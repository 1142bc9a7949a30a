"""The loss-share signal: detectron2's ROI parts against an independent recomputation (numpy)
on hand-built cases; on real forwards of RetinaNet, FCOS and torchvision's Faster R-CNN, the
parts add up to the model's own box loss, which the probes leave unchanged and can be removed
from; the "input" signal's box counts."""
import os

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from dst_dali.feedback.signals import (
    LossShareProbe,
    box_count_parts,
    roi_loss_parts,
    signal_parts,
)

from .torchvision_models import DENSE_TARGETS, torchvision_dense_model

NUM_CLASSES = 3
WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BETA = 0.5


def predictor(agnostic=False):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.box_regression import Box2BoxTransform
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
    return FastRCNNOutputLayers(ShapeSpec(channels=8), box2box_transform=Box2BoxTransform(WEIGHTS),
                                num_classes=NUM_CLASSES, smooth_l1_beta=BETA,
                                cls_agnostic_bbox_reg=agnostic)


def hand_built(fg_classes, agnostic=False):
    """Two images of proposals; gt boxes of areas 10x10 (small), 50x50 (medium), 120x120
    (large); classes NUM_CLASSES are background."""
    from detectron2.structures import Boxes, Instances
    gen = torch.Generator().manual_seed(0)
    proposals = []
    for img, classes in enumerate(fg_classes):
        n = len(classes)
        sides = torch.tensor([10.0, 50.0, 120.0, 10.0, 50.0, 300.0])[:n]
        x0 = torch.rand(n, generator=gen) * 50
        gt = torch.stack([x0, x0, x0 + sides, x0 + sides], 1)
        jitter = (torch.rand(n, 4, generator=gen) - 0.5) * sides[:, None] * 0.4
        inst = Instances((600, 600))
        inst.proposal_boxes = Boxes(gt + jitter)
        inst.gt_boxes = Boxes(gt)
        inst.gt_classes = torch.tensor(classes)
        proposals.append(inst)
    R = sum(len(c) for c in fg_classes)
    scores = torch.randn(R, NUM_CLASSES + 1, generator=gen)
    deltas = torch.randn(R, 4 if agnostic else NUM_CLASSES * 4, generator=gen) * 0.3
    return (scores, deltas), proposals


def reference(predictions, proposals, agnostic=False):
    """numpy: Box2BoxTransform deltas, smooth L1 (beta), softmax CE, summed by gt area."""
    scores, deltas = (t.numpy().astype(np.float64) for t in predictions)
    p = np.concatenate([x.proposal_boxes.tensor.numpy() for x in proposals]).astype(np.float64)
    g = np.concatenate([x.gt_boxes.tensor.numpy() for x in proposals]).astype(np.float64)
    c = np.concatenate([x.gt_classes.numpy() for x in proposals])
    out = np.zeros((2, 4))
    for i in np.flatnonzero(c < NUM_CLASSES):
        pw, ph = p[i, 2] - p[i, 0], p[i, 3] - p[i, 1]
        px, py = p[i, 0] + 0.5 * pw, p[i, 1] + 0.5 * ph
        gw, gh = g[i, 2] - g[i, 0], g[i, 3] - g[i, 1]
        gx, gy = g[i, 0] + 0.5 * gw, g[i, 1] + 0.5 * gh
        target = np.array([WEIGHTS[0] * (gx - px) / pw, WEIGHTS[1] * (gy - py) / ph,
                           WEIGHTS[2] * np.log(gw / pw), WEIGHTS[3] * np.log(gh / ph)])
        pred = deltas[i, :4] if agnostic else deltas[i, 4 * c[i]:4 * c[i] + 4]
        d = np.abs(pred - target)
        reg = np.where(d < BETA, 0.5 * d ** 2 / BETA, d - 0.5 * BETA).sum()
        z = scores[i] - scores[i].max()
        cls = -(z[c[i]] - np.log(np.exp(z).sum()))
        area = gw * gh
        group = 0 if area < 32 ** 2 else (1 if area < 96 ** 2 else 2)
        out[:, group] += [reg, cls]
    out[:, 3] = out[:, :3].sum(1)
    return out


@pytest.mark.parametrize("agnostic", [False, True])
def test_loss_parts_equal_independent_recomputation(agnostic):
    fg = [[0, 1, 2, NUM_CLASSES, 0], [2, NUM_CLASSES, 1, 0, 1, 2]]
    predictions, proposals = hand_built(fg, agnostic)
    pred = predictor(agnostic)
    parts = roi_loss_parts(pred, predictions, proposals).numpy()
    ref = reference(predictions, proposals, agnostic)
    np.testing.assert_allclose(parts, ref, rtol=1e-5, atol=1e-6)
    assert ref[0, 0] > 0 and ref[0, 2] > 0  # the case has small and large positives
    # the split adds up to exactly the regression loss the model trains on
    with EventStorage():  # detectron2's losses() logs classification stats
        loss = pred.losses(predictions, proposals)["loss_box_reg"].item()
    assert parts[0, 3] / 11 == pytest.approx(loss, rel=1e-5)  # detectron2 divides by R = 11
    np.testing.assert_allclose(signal_parts(torch.tensor(parts), "joint").numpy(),
                               ref[0] + ref[1], rtol=1e-5)


def test_no_positives_gives_no_evidence():
    predictions, proposals = hand_built([[NUM_CLASSES] * 3])
    parts = roi_loss_parts(predictor(), predictions, proposals)
    assert torch.equal(parts, torch.zeros(2, 4))


def test_probe_leaves_the_loss_unchanged():
    from types import SimpleNamespace
    predictions, proposals = hand_built([[0, 1, 2], [NUM_CLASSES, 0]])
    pred = predictor()
    model = SimpleNamespace(roi_heads=SimpleNamespace(box_predictor=pred))
    with EventStorage():
        before = pred.losses(predictions, proposals)
        probe = LossShareProbe(model)
        after = pred.losses(predictions, proposals)
    assert {k: v.item() for k, v in before.items()} == {k: v.item() for k, v in after.items()}
    np.testing.assert_allclose(probe.pop().numpy(), reference(predictions, proposals), rtol=1e-5)
    assert probe.pop() is None
    probe.remove()  # the predictor's own losses() again: nothing is measured any more
    assert "losses" not in vars(pred)
    with EventStorage():
        pred.losses(predictions, proposals)
    assert probe.pop() is None
    with pytest.raises(ValueError, match="neither an ROI box predictor"):
        LossShareProbe(SimpleNamespace())


def test_input_signal_counts_boxes_by_area():
    boxes = [np.array([[0, 0, 10, 10], [0, 0, 40, 40]]), np.array([[0, 0, 100, 100]]),
             np.zeros((0, 4))]
    assert box_count_parts(boxes).tolist() == [1.0, 1.0, 1.0, 3.0]


@pytest.mark.parametrize("arch, backbone, box_loss", [
    ("RetinaNet", "build_retinanet_resnet_fpn_backbone", "loss_box_reg"),
    ("FCOS", "build_fcos_resnet_fpn_backbone", "loss_fcos_loc")])
def test_dense_detector_parts_split_its_losses(arch, backbone, box_loss):
    """On a real (tiny, untrained) RetinaNet or FCOS forward (FCOS from a yaml config, through
    dst_dali.integrations.detectron2.fcos): the probe leaves the losses unchanged, and the
    regression parts of small,
    medium and large objects add up to the box loss the model trains on."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from dst_dali.integrations.detectron2.fcos import add_fcos_config
    cfg = get_cfg()
    add_fcos_config(cfg)
    cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.BACKBONE.NAME = arch, backbone
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RETINANET.NUM_CLASSES = cfg.MODEL.FCOS.NUM_CLASSES = 3
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    inst = Instances((256, 256))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 30, 30], [40, 40, 140, 140], [0, 0, 250, 250]]))
    inst.gt_classes = torch.tensor([0, 1, 2])
    batch = [{"image": torch.randint(0, 255, (3, 256, 256), dtype=torch.uint8), "instances": inst}]
    with EventStorage():
        plain = model(batch)
        del model.loss_normalizer  # an EMA each forward creates or updates: start both alike
        probe = LossShareProbe(model)
        probed = model(batch)
    assert {k: v.item() for k, v in plain.items()} == pytest.approx(
        {k: v.item() for k, v in probed.items()})
    parts = probe.pop()
    assert (parts[0, 3] / model.loss_normalizer).item() == pytest.approx(
        probed[box_loss].item(), rel=1e-4)
    assert parts[0, 0] > 0 and parts[0, 2] > 0 and parts[1, 3] > 0


def test_torchvision_probe_splits_fastrcnn_loss():
    """On a real torchvision Faster R-CNN training forward: the probe leaves the losses as
    they are, its regression parts add up to loss_box_reg (fastrcnn_loss divides the sum by the
    number of sampled proposals), and small, medium and large positives each get their part."""
    from dst_dali.feedback.signals import TorchvisionLossShareProbe

    from .torchvision_models import torchvision_faster_rcnn
    model = torchvision_faster_rcnn(4, min_size=256, max_size=256)
    model.train()
    images = [torch.rand(3, 256, 256)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 100, 100], [0, 0, 250, 250]]),
                "labels": torch.tensor([1, 2, 3])}]
    torch.manual_seed(1)
    plain = model(images, targets)
    probe = TorchvisionLossShareProbe(model)
    torch.manual_seed(1)  # the same proposal sampling
    probed = model(images, targets)
    assert {k: v.item() for k, v in plain.items()} == {k: v.item() for k, v in probed.items()}
    labels, _, areas = probe._sampled
    parts = probe.pop()
    assert parts[0, 3].item() / len(labels) == pytest.approx(probed["loss_box_reg"].item(),
                                                             rel=1e-5)
    pos = labels > 0
    groups = [(areas[pos] < 32 ** 2).sum(), ((areas[pos] >= 32 ** 2) & (areas[pos] < 96 ** 2)).sum(),
              (areas[pos] >= 96 ** 2).sum()]
    assert all(g > 0 for g in groups)  # small, medium and large positives all present
    assert all((parts[0, i] > 0).item() for i in range(3))
    assert probe.pop() is None
    probe.remove()  # the heads' own method, no hook left: a forward leaves nothing to pop
    assert "select_training_samples" not in vars(model.roi_heads)
    assert not model.roi_heads.box_predictor._forward_hooks
    model(images, targets)
    assert probe.pop() is None


def test_torchvision_probe_with_an_image_without_boxes():
    """An image with no boxes among the batch (all its proposals background): the split still
    adds up to torchvision's own loss_box_reg, and only the boxed image's positives count."""
    from dst_dali.feedback.signals import TorchvisionLossShareProbe

    from .torchvision_models import torchvision_faster_rcnn
    model = torchvision_faster_rcnn(4, min_size=256, max_size=256)
    model.train()
    probe = TorchvisionLossShareProbe(model)
    images = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    targets = [{"boxes": torch.tensor([[40.0, 40, 100, 100]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    losses = model(images, targets)
    labels, _, areas = probe._sampled
    parts = probe.pop()
    assert parts[0, 3].item() / len(labels) == pytest.approx(losses["loss_box_reg"].item(),
                                                             rel=1e-5)
    assert (labels > 0).any()  # torchvision adds the ground truth to the proposals
    assert torch.all(areas[labels > 0] == 60.0 * 60.0)  # the one box, medium
    assert parts[0, 1].item() == pytest.approx(parts[0, 3].item())


@pytest.mark.parametrize("arch", ["retinanet", "fcos"])
def test_torchvision_dense_probe_splits_bbox_regression(arch):
    """torchvision's RetinaNet and FCOS (the paper's Table 6 detectors): the probe leaves the
    losses as they are, its regression parts of small, medium and large positives add up to
    the model's own bbox_regression loss, and an image without boxes among the batch counts
    nothing. remove() gives the head back what it had, a user's own wrapper included."""
    from dst_dali.feedback.signals import TorchvisionDenseProbe, probe_for
    model = torchvision_dense_model(arch)
    images = [torch.rand(3, 256, 256) for _ in DENSE_TARGETS]
    plain = model(images, DENSE_TARGETS)
    calls = []
    own = model.head.compute_loss

    def users_wrapper(*args):
        calls.append(1)
        return own(*args)
    model.head.compute_loss = users_wrapper
    probe = probe_for(model)
    assert isinstance(probe, TorchvisionDenseProbe)
    probed = model(images, DENSE_TARGETS)
    assert {k: v.item() for k, v in plain.items()} == {k: v.item() for k, v in probed.items()}
    assert torch.equal(probe.peek(), probe.peek())  # peek leaves the parts
    parts = probe.pop()
    assert abs(parts[0, 3].item() - probed["bbox_regression"].item()) < 1e-6
    assert parts[0, :3].sum().item() == pytest.approx(parts[0, 3].item(), abs=1e-7)
    assert all(parts[0, g].item() > 0 for g in range(3)) and parts[1, 3] > 0
    assert probe.pop() is None
    probe.remove()
    assert model.head.compute_loss is users_wrapper and len(calls) == 1
    model(images, DENSE_TARGETS)
    assert probe.pop() is None and len(calls) == 2


def test_torchvision_dense_probe_splits_one_group_alone():
    """A batch whose only box is small: all of the regression loss is the small group's."""
    from dst_dali.feedback.signals import probe_for
    model = torchvision_dense_model("retinanet")
    probe = probe_for(model)
    losses = model([torch.rand(3, 256, 256)], [DENSE_TARGETS[1]])
    parts = probe.pop()
    assert parts[0, 0].item() == pytest.approx(losses["bbox_regression"].item(), abs=1e-6)
    assert parts[0, 1].item() == parts[0, 2].item() == 0.0


def test_detectron2_probe_removal_restores_a_users_wrapper():
    from types import SimpleNamespace
    predictions, proposals = hand_built([[0, 1, 2], [NUM_CLASSES, 0]])
    pred = predictor()
    own = pred.losses
    calls = []

    def users_wrapper(*args):
        calls.append(1)
        return own(*args)
    pred.losses = users_wrapper
    probe = LossShareProbe(SimpleNamespace(roi_heads=SimpleNamespace(box_predictor=pred)))
    with EventStorage():
        pred.losses(predictions, proposals)
    assert probe.pop() is not None and calls == [1]
    probe.remove()
    assert pred.losses is users_wrapper


@pytest.mark.slow
def test_torchvision_path_imports_no_detectron2(tmp_path):
    """torchvision's RetinaNet watched where detectron2 is not installed."""
    import subprocess
    import sys
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoDetectron2:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'detectron2':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoDetectron2())\n")
    code = ("import sys, torch\n"
            "from tests.torchvision_models import torchvision_dense_model, DENSE_TARGETS\n"
            "from dst_dali.feedback.signals import probe_for\n"
            "model = torchvision_dense_model('fcos')\n"
            "probe = probe_for(model)\n"
            "model([torch.rand(3, 256, 256)], DENSE_TARGETS[:1])\n"
            "assert probe.pop()[0, 3] > 0\n"
            "assert not any(m.startswith('detectron2') for m in sys.modules)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}:{root}"})
    assert r.returncode == 0, r.stderr[-1500:]
