"""r for Ultralytics' detection losses: the small objects' share of the box loss (CIoU and DFL,
or L1 where the head has no DFL, with the criterion's gains) over the foreground anchors, by
the area in input pixels of the box each anchor is assigned to. An end-to-end head
(E2ELoss) is read in its one-to-many branch.

The probe wraps the box-loss module of the model's criterion: its call is Ultralytics' own,
untouched, so the loss, its logged items and every gradient are what they would be; the
parts are three more calls of the same module under no_grad, each on the foreground anchors
of one size (the box loss is a sum over foreground anchors divided by the score sum, so the
parts add up to it). Nothing is set on the model, which Ultralytics pickles into its
checkpoints: only on the criterion, which it builds lazily and never saves. Calls in
inference mode (the validator's) leave no parts.
"""
from typing import Optional

import torch

from ...feedback.signals import _PartsProbe, _Wrapped, area_groups


def is_ultralytics_model(model) -> bool:
    inner = getattr(model, "module", model)
    return type(inner).__module__.startswith("ultralytics.") and hasattr(inner, "init_criterion")


def box_branch(criterion):
    """The loss whose box term r is read from: the one-to-many branch of an end-to-end
    criterion, else the criterion itself."""
    return getattr(criterion, "one2many", criterion)


class UltralyticsBoxLossProbe(_PartsProbe):
    """Leaves (2, 4) parts after each training forward of an Ultralytics detection model: row 0
    the box loss of small, medium and large targets and their total, row 1 zeros (the
    classification loss is not split: only signal "reg" is measured)."""
    signals = ("reg",)

    def __init__(self, model):
        self.model = getattr(model, "module", model)
        self._wrapped: Optional[_Wrapped] = None
        self.attach()

    def attach(self) -> None:
        """Wraps the criterion's box loss, building the criterion as Ultralytics would if it is
        not built yet; again after Ultralytics rebuilt it (an end-to-end head's on resume)."""
        if getattr(self.model, "criterion", None) is None:
            self.model.criterion = self.model.init_criterion()
        branch = box_branch(self.model.criterion)
        module = branch.bbox_loss
        if self._wrapped is not None and self._wrapped.owner is module:
            return
        if self._wrapped is not None:
            self._wrapped.restore()
        original = type(module).forward.__get__(module)
        probe = self

        def forward(pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores,
                    target_scores_sum, fg_mask, imgsz, stride):
            args = (pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores,
                    target_scores_sum)
            loss_iou, loss_dfl = original(*args, fg_mask, imgsz, stride)
            if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
                probe.parts = probe._split(original, args, fg_mask, imgsz, stride, branch,
                                           loss_iou, loss_dfl)
            return loss_iou, loss_dfl

        self._wrapped = _Wrapped(module, "forward", forward)

    @staticmethod
    def _split(original, args, fg_mask, imgsz, stride, branch, loss_iou, loss_dfl):
        gains = branch.hyp.box, branch.hyp.dfl
        out = torch.zeros(2, 4, device=loss_iou.device)
        with torch.no_grad():
            boxes = args[3] * stride  # the assigned targets, in input pixels
            areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
            groups = area_groups(areas.reshape(-1)).reshape(3, *areas.shape)
            for g in range(3):
                iou, dfl = original(*args, fg_mask & groups[g], imgsz, stride)
                out[0, g] = gains[0] * iou + gains[1] * dfl
            out[0, 3] = gains[0] * loss_iou.detach() + gains[1] * loss_dfl.detach()
        return out

    def remove(self) -> None:
        if self._wrapped is not None:
            self._wrapped.restore()
            self._wrapped = None
