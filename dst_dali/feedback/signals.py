"""The feedback signal: how much of a detector's loss small objects owe, measured each forward
pass from the very per-proposal losses the model trains on, without changing those losses.

Objects are grouped by the area of their matched ground-truth box in network-input pixels, as
COCO does (sizes.py): small < 32², medium < 96², large otherwise.
"""
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .signal_table import FEEDBACK_SIGNALS, INPUT_SIGNAL, LOSS_SIGNALS, STATIC_SIGNALS
from .sizes import MEDIUM_AREA, SMALL_AREA


def area_groups(areas: torch.Tensor) -> torch.Tensor:
    """(3, N) boolean masks: small, medium, large."""
    small = areas < SMALL_AREA
    medium = ~small & (areas < MEDIUM_AREA)
    return torch.stack([small, medium, ~small & ~medium])


def roi_loss_parts(predictor, predictions, proposals) -> torch.Tensor:
    """(2, 4) tensor: rows reg, cls; columns the loss summed over positive proposals matched to
    small, medium, large objects, and over all of them.

    `predictor` is detectron2's FastRCNNOutputLayers (or a subclass with its attributes);
    `predictions` and `proposals` are what its `losses()` receives. The regression part calls
    detectron2's own `_dense_box_regression_loss` with a foreground mask per group, so it is
    the model's loss (smooth L1 / GIoU / ...), only split.
    """
    from detectron2.layers import cat
    from detectron2.modeling.box_regression import _dense_box_regression_loss
    scores, deltas = predictions
    out = torch.zeros(2, 4, device=scores.device)
    if not len(proposals):
        return out
    gt_classes = cat([p.gt_classes for p in proposals], dim=0)
    fg = (gt_classes >= 0) & (gt_classes < predictor.num_classes)
    if not fg.any():
        return out
    proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)[fg]
    gt_boxes = cat([p.gt_boxes.tensor for p in proposals], dim=0)[fg]
    classes = gt_classes[fg]
    box_dim = proposal_boxes.shape[1]
    if deltas.shape[1] == box_dim:  # class-agnostic regression
        fg_deltas = deltas[fg]
    else:
        fg_deltas = deltas.view(-1, predictor.num_classes, box_dim)[fg, classes]
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    masks = area_groups(areas)
    for g in range(3):
        out[0, g] = _dense_box_regression_loss(
            [proposal_boxes], predictor.box2box_transform, [fg_deltas.unsqueeze(0)], [gt_boxes],
            masks[g].unsqueeze(0), predictor.box_reg_loss_type, predictor.smooth_l1_beta)
    if getattr(predictor, "use_sigmoid_ce", False):
        target = F.one_hot(classes, scores.shape[1]).float()[:, :-1]
        cls = F.binary_cross_entropy_with_logits(scores[fg][:, :-1], target,
                                                 reduction="none").sum(1)
    else:
        cls = F.cross_entropy(scores[fg], classes, reduction="none")
    out[1, :3] = (masks.float() * cls).sum(1)
    out[:, 3] = out[:, :3].sum(1)
    return out


def dense_loss_parts(model, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                     box_reg_loss_type: str, smooth_l1_beta: float = 0.0) -> torch.Tensor:
    """(2, 4) like roi_loss_parts, for a dense detector (RetinaNet, FCOS): its losses over
    positive anchors (the box regression, and the focal classification), split by the area of
    each anchor's matched box. The arguments are what the model's `losses()` receives."""
    from detectron2.layers import cat
    from detectron2.modeling.box_regression import _dense_box_regression_loss
    from fvcore.nn import sigmoid_focal_loss
    labels = torch.stack(gt_labels)                      # (N, R)
    boxes = torch.stack(gt_boxes)                        # (N, R, 4)
    pos = (labels >= 0) & (labels != model.num_classes)
    out = torch.zeros(2, 4, device=labels.device)
    if not pos.any():
        return out
    areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    masks = area_groups(areas) & pos                     # (3, N, R)
    logits = cat(pred_logits, dim=1)
    target = F.one_hot(labels.clamp(0, model.num_classes), model.num_classes + 1)[..., :-1]
    focal = sigmoid_focal_loss(logits, target.to(logits.dtype), alpha=model.focal_loss_alpha,
                               gamma=model.focal_loss_gamma, reduction="none").sum(-1)
    for g in range(3):
        out[0, g] = _dense_box_regression_loss(
            anchors, model.box2box_transform, pred_anchor_deltas, gt_boxes, masks[g],
            box_reg_loss_type=box_reg_loss_type, smooth_l1_beta=smooth_l1_beta)
        out[1, g] = focal[masks[g]].sum()
    out[:, 3] = out[:, :3].sum(1)
    return out


def retinanet_loss_parts(model, anchors, pred_logits, gt_labels, pred_anchor_deltas,
                         gt_boxes) -> torch.Tensor:
    """dense_loss_parts of detectron2's RetinaNet, with its own box loss settings."""
    return dense_loss_parts(model, anchors, pred_logits, gt_labels, pred_anchor_deltas,
                            gt_boxes, model.box_reg_loss_type, model.smooth_l1_beta)


def fcos_loss_parts(model, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                    pred_centerness) -> torch.Tensor:
    """dense_loss_parts of detectron2's FCOS: its GIoU box loss (the centerness loss, a
    quality estimate, is not split)."""
    return dense_loss_parts(model, anchors, pred_logits, gt_labels, pred_anchor_deltas,
                            gt_boxes, "giou")


def torchvision_retinanet_parts(head, targets, head_outputs, anchors, matched_idxs):
    """(2, 4) like roi_loss_parts, for torchvision's RetinaNet: what its `head.compute_loss`
    receives, split by the area of each positive anchor's matched box. Row 0 is its
    bbox_regression loss itself (torchvision's own `_box_loss`, normalized as the model does:
    by the image's positives, then by the images), row 1 the focal loss of the positives."""
    from torchvision.models.detection._utils import _box_loss
    from torchvision.ops import sigmoid_focal_loss
    reg_head = head.regression_head
    out = torch.zeros(2, 4, device=head_outputs["cls_logits"].device)
    images = max(1, len(targets))
    for t, logits, deltas, a, m in zip(targets, head_outputs["cls_logits"],
                                       head_outputs["bbox_regression"], anchors, matched_idxs):
        fg = torch.where(m >= 0)[0]
        if not len(fg):
            continue
        gt = t["boxes"][m[fg]]
        masks = area_groups((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
        target = torch.zeros_like(logits[fg])
        target[torch.arange(len(fg)), t["labels"][m[fg]]] = 1.0
        focal = sigmoid_focal_loss(logits[fg], target, reduction="none").sum(1)
        norm = max(1, len(fg)) * images
        for g in range(3):
            out[0, g] += _box_loss(reg_head._loss_type, reg_head.box_coder, a[fg[masks[g]]],
                                   gt[masks[g]], deltas[fg[masks[g]]]) / norm
            out[1, g] += focal[masks[g]].sum() / norm
    out[:, 3] = out[:, :3].sum(1)
    return out


def torchvision_fcos_parts(head, targets, head_outputs, anchors, matched_idxs):
    """(2, 4) like roi_loss_parts, for torchvision's FCOS: its GIoU bbox_regression loss over
    positive locations (reduction "none", normalized by the positives as the model does) and
    the focal loss of those locations, split by matched-box area (the centerness loss, a
    quality estimate, is not split)."""
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss
    logits = head_outputs["cls_logits"]
    out = torch.zeros(2, 4, device=logits.device)
    matched = torch.stack(matched_idxs)
    fg = matched >= 0
    if not fg.any():
        return out
    gt_boxes = torch.stack([t["boxes"][m.clip(min=0)] if len(t["boxes"])
                            else t["boxes"].new_zeros((len(m), 4))
                            for t, m in zip(targets, matched_idxs)])
    gt_labels = torch.stack([t["labels"][m.clip(min=0)] if len(t["labels"])
                             else t["labels"].new_zeros(len(m))
                             for t, m in zip(targets, matched_idxs)])
    norm = max(1, int(fg.sum()))
    pred = head.box_coder.decode(head_outputs["bbox_regression"], torch.stack(anchors))
    giou = generalized_box_iou_loss(pred[fg], gt_boxes[fg], reduction="none") / norm
    target = torch.zeros_like(logits[fg])
    target[torch.arange(len(target)), gt_labels[fg]] = 1.0
    focal = sigmoid_focal_loss(logits[fg], target, reduction="none").sum(1) / norm
    gt = gt_boxes[fg]
    masks = area_groups((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).to(giou.dtype)
    out[0, :3], out[1, :3] = (masks * giou).sum(1), (masks * focal).sum(1)
    out[:, 3] = out[:, :3].sum(1)
    return out


def signal_parts(parts: torch.Tensor, signal: str) -> torch.Tensor:
    """The (small, medium, large, total) row of `parts` for a feedback signal."""
    if signal not in LOSS_SIGNALS:
        raise ValueError(f"signal={signal!r} is not measured from the model's losses; "
                         f"those are {FEEDBACK_SIGNALS}")
    return LOSS_SIGNALS[signal](parts)


class _Wrapped:
    """An instance attribute set over what `owner.name` was, and restored as it was: the
    class's method (the attribute removed) or an instance attribute someone else had set."""
    _NONE = object()

    def __init__(self, owner, name: str, value):
        self.owner, self.name, self.value = owner, name, value
        self.before = owner.__dict__.get(name, self._NONE)
        setattr(owner, name, value)

    def restore(self) -> None:
        if self.owner.__dict__.get(self.name) is not self.value:
            return  # wrapped again since: leave the newer wrapper alone
        if self.before is self._NONE:
            del self.owner.__dict__[self.name]
        else:
            setattr(self.owner, self.name, self.before)


class _PartsProbe:
    """What a probe's training forward left: `parts` until popped."""
    parts: Optional[torch.Tensor] = None

    def pop(self) -> Optional[torch.Tensor]:
        parts, self.parts = self.parts, None
        return parts

    def peek(self) -> Optional[torch.Tensor]:
        """The parts pop() would give, left in place."""
        return self.parts


class LossShareProbe(_PartsProbe):
    """Wraps a detectron2 detector's loss so each training forward also leaves its loss parts
    in `self.parts` (see roi_loss_parts, retinanet_loss_parts). The returned losses are
    untouched: the parts are computed afterwards, without gradients."""

    def __init__(self, model):
        try:
            from detectron2.modeling.meta_arch.fcos import FCOS
            from detectron2.modeling.meta_arch.retinanet import RetinaNet
        except ImportError:  # not a detectron2 model then: the error below names the signals
            FCOS = RetinaNet = ()
        model = getattr(model, "module", model)  # DistributedDataParallel
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        if predictor is not None and hasattr(predictor, "losses"):
            owner, parts_of = predictor, roi_loss_parts
        elif isinstance(model, FCOS):
            owner, parts_of = model, fcos_loss_parts
        elif isinstance(model, RetinaNet):
            owner, parts_of = model, retinanet_loss_parts
        else:
            raise ValueError(f"{type(model).__name__} has neither an ROI box predictor "
                             "(roi_heads.box_predictor) nor RetinaNet's or FCOS's losses to "
                             "measure the loss share from; use signal= (DST.SIGNAL in a yaml "
                             f"config) one of {(INPUT_SIGNAL,) + STATIC_SIGNALS}")
        self.parts: Optional[torch.Tensor] = None
        original = owner.losses

        def losses(*args):
            result = original(*args)
            with torch.no_grad():
                self.parts = parts_of(owner, *args)
            return result

        self._wrapped = _Wrapped(owner, "losses", losses)

    def remove(self) -> None:
        """Gives the model back the losses() it had before (its own, or a wrapper of yours)."""
        self._wrapped.restore()


class TorchvisionDenseProbe(_PartsProbe):
    """The loss split for torchvision's dense detectors (RetinaNet, FCOS): wraps the model's
    `head.compute_loss(targets, head_outputs, anchors, matched_idxs)`, which both call with
    each anchor's matched box, and after it leaves the parts of torchvision_retinanet_parts or
    torchvision_fcos_parts in `self.parts`. The returned losses are untouched."""

    def __init__(self, model):
        from torchvision.models.detection import FCOS, RetinaNet
        inner = getattr(model, "module", model)
        if not isinstance(inner, (RetinaNet, FCOS)):
            raise ValueError(f"{type(inner).__name__} is not torchvision's RetinaNet or FCOS")
        head = inner.head
        parts_of = torchvision_fcos_parts if isinstance(inner, FCOS) else \
            torchvision_retinanet_parts
        self.parts: Optional[torch.Tensor] = None
        original = head.compute_loss

        def compute_loss(targets, head_outputs, anchors, matched_idxs):
            losses = original(targets, head_outputs, anchors, matched_idxs)
            with torch.no_grad():
                self.parts = parts_of(head, targets, head_outputs, anchors, matched_idxs)
            return losses

        self._wrapped = _Wrapped(head, "compute_loss", compute_loss)

    def remove(self) -> None:
        """Gives the head back the compute_loss it had before."""
        self._wrapped.restore()


class TorchvisionLossShareProbe:
    """The same loss split for torchvision's two-stage detectors (Faster/Mask R-CNN RoIHeads),
    so DSTLoader's torchvision output gets feedback too. It keeps what the training forward
    computes anyway: the matched ground truth of each sampled proposal (from
    `select_training_samples`) and the box predictor's outputs (a forward hook); `pop()` then
    splits fastrcnn_loss's terms (smooth L1 with beta 1/9, cross-entropy) by matched-box area.
    The model and its losses are untouched."""

    def __init__(self, model):
        heads = getattr(getattr(model, "module", model), "roi_heads", None)
        if heads is None or not hasattr(heads, "select_training_samples"):
            raise ValueError(f"{type(model).__name__} has no torchvision RoIHeads")
        self._sampled = self._predicted = None
        original = heads.select_training_samples

        def select_training_samples(proposals, targets):
            out = original(proposals, targets)
            _, matched, labels, regression_targets = out
            areas = []
            for m, t in zip(matched, targets):
                gt = (t["boxes"][m.clamp(min=0)] if len(t["boxes"])
                      else t["boxes"].new_zeros(len(m), 4))  # on the boxes' device
                areas.append((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
            self._sampled = (torch.cat(labels), torch.cat(regression_targets), torch.cat(areas))
            return out

        self._wrapped = _Wrapped(heads, "select_training_samples", select_training_samples)
        self._hook = heads.box_predictor.register_forward_hook(self._keep_predictions)

    def remove(self) -> None:
        """Gives the heads back the select_training_samples they had and drops the hook."""
        self._wrapped.restore()
        self._hook.remove()

    def _keep_predictions(self, module, inputs, outputs):
        if module.training:
            self._predicted = tuple(o.detach() for o in outputs)

    def pop(self) -> Optional[torch.Tensor]:
        """(2, 4) like roi_loss_parts, for the last training forward; None if there was none."""
        parts = self.peek()
        self._sampled = self._predicted = None
        return parts

    def peek(self) -> Optional[torch.Tensor]:
        """The parts pop() would give, left in place."""
        if self._sampled is None or self._predicted is None:
            return None
        (labels, targets, areas), (logits, deltas) = self._sampled, self._predicted
        out = torch.zeros(2, 4, device=logits.device)
        pos = torch.where(labels > 0)[0]
        if len(pos) == 0:
            return out
        deltas = deltas.reshape(len(labels), -1, 4)[pos, labels[pos]]
        reg = F.smooth_l1_loss(deltas, targets[pos], beta=1 / 9, reduction="none").sum(1)
        cls = F.cross_entropy(logits[pos], labels[pos], reduction="none")
        masks = area_groups(areas[pos]).float()
        out[0, :3], out[1, :3] = (masks * reg).sum(1), (masks * cls).sum(1)
        out[:, 3] = out[:, :3].sum(1)
        return out


# Probes of other libraries' models, registered by their integration when it is imported
# (dst_dali.integrations.ultralytics): (does it take this model, the probe's class), first match
PROBES: List[Tuple[Callable[[object], bool], Callable]] = []


def register_probe(takes: Callable[[object], bool], probe: Callable) -> None:
    if (takes, probe) not in PROBES:
        PROBES.append((takes, probe))


def probe_for(model):
    """The loss-share probe of a detector (DDP-wrapped or not): a registered one that takes it,
    TorchvisionLossShareProbe for torchvision's R-CNNs, TorchvisionDenseProbe for its RetinaNet
    and FCOS, LossShareProbe for detectron2's R-CNNs, RetinaNet and FCOS. torchvision's models
    never import detectron2."""
    for takes, probe in PROBES:
        if takes(model):
            return probe(model)
    inner = getattr(model, "module", model)
    if type(inner).__module__.startswith("ultralytics."):
        raise ValueError(f"{type(inner).__name__} is an Ultralytics model: import "
                         "dst_dali.ultralytics first, which measures its loss parts")
    if hasattr(getattr(inner, "roi_heads", None), "select_training_samples"):
        return TorchvisionLossShareProbe(model)
    if type(inner).__module__.startswith("torchvision.") and \
            hasattr(getattr(inner, "head", None), "compute_loss"):
        return TorchvisionDenseProbe(model)
    return LossShareProbe(model)


def box_count_parts(boxes) -> torch.Tensor:
    """(4,) counts of ground-truth boxes (a list of (N, 4) ltrb arrays, one per sample) that
    are small, medium, large, and all: the "input" signal of the paper's ablation."""
    boxes = torch.cat([torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    counts = area_groups(areas).sum(1).float()
    return torch.cat([counts, counts.sum().reshape(1)])
