"""What the loader feeds its controller: r of each delivered batch, read once its training forward
has run (the watched model's loss parts, dst_dali.feedback.signals, or the batch's own boxes for
signal "input"), this rank's or summed over the ranks; and the one warning when nothing feeds a
FeedbackController, since DST silently off is the costliest failure.

    delivered batch -> model forward (the probe keeps its loss parts) -> observe() before the
    next batch -> controller.observe(small, total) -> the next batch's kind
"""
from typing import List, Optional, Sequence

from ..stream.distributed import sum_over_ranks
from .controller import FeedbackController
from .signal_table import DECISIONS, FEEDBACK_SIGNALS, INPUT_SIGNAL, WATCH_SIGNALS
from .signals import box_count_parts, probe_for, signal_parts

UNFED_WARNING_AFTER = 10  # controller-driven batches without feedback before the warning


def check_watch_args(signal: str, decision: str) -> None:
    if signal not in WATCH_SIGNALS:
        raise ValueError(f"signal={signal!r}: must be one of {WATCH_SIGNALS}")
    if decision not in DECISIONS:
        raise ValueError(f"decision={decision!r}: must be one of {DECISIONS}")


class ControllerFeed:
    """The link from the training forwards to the controller. `signal` None: nothing is
    watched. `observed`: the last delivered batch's r has been fed (or there is none);
    `carried`: a resumed state's row, fed first."""

    def __init__(self):
        self.signal: Optional[str] = None
        self.decision: Optional[str] = None
        self.probe = None
        self.observed, self.unfed, self.warned = True, 0, False
        self.carried: Optional[List[float]] = None
        self.last_feedback: Optional[dict] = None

    def watch(self, model, signal: str, decision: str) -> None:
        if signal in FEEDBACK_SIGNALS and model is None:
            raise ValueError(f"signal={signal!r} is measured from a model's loss: give model")
        self.unwatch()
        self.probe = probe_for(model) if model is not None else None
        measured = getattr(self.probe, "signals", FEEDBACK_SIGNALS)
        if signal in FEEDBACK_SIGNALS and signal not in measured:
            self.unwatch()
            raise ValueError(f"signal={signal!r}: {type(model).__name__}'s loss parts give "
                             f"{measured} only")
        self.signal, self.decision = signal, decision
        self.observed = self.carried is None  # nothing to observe, unless a state carried it

    def unwatch(self) -> None:
        if self.probe is not None:
            self.probe.remove()
        self.probe = self.signal = self.decision = None

    def observe(self, controller, boxes: Sequence) -> Optional[dict]:
        """Feeds `controller` r of the last delivered batch (`boxes`: its samples' boxes), once
        a batch; {"local": (small, medium, large, total) of this rank, "share": r as fed}, or
        None when nothing is watched."""
        if self.signal is None:
            return None
        if self.observed:
            return self.last_feedback
        self.observed = True
        row = self.row(boxes, pop=True)
        self.unfed = 0 if row is not None else self.unfed + 1
        local = row if row is not None else [0.0] * 4
        fed = sum_over_ranks(local) if self.decision == "global" else local
        share = controller.observe(fed[0], fed[3])
        self.last_feedback = {"local": local, "share": share}
        return self.last_feedback

    def row(self, boxes: Sequence, pop: bool) -> Optional[List[float]]:
        """(small, medium, large, total) of the last delivered batch's training forward, None
        when it left nothing (one host read); pop: taken from the probe, else left there."""
        if self.carried is not None:
            row = self.carried
            self.carried = None if pop else row
            return row
        if self.signal == INPUT_SIGNAL:
            return box_count_parts(boxes).tolist()
        if self.probe is None:
            return None
        parts = self.probe.pop() if pop else self.probe.peek()
        return signal_parts(parts, self.signal).tolist() if parts is not None else None

    def due(self, boxes: Sequence) -> Optional[List[float]]:
        """The row a checkpoint keeps: the last batch's, read but not observed, when its forward
        has run and the controller has not seen it yet."""
        return None if self.observed or self.signal is None else self.row(boxes, pop=False)

    def resume(self, due: Optional[List[float]]) -> None:
        self.carried = due
        self.observed = due is None

    def unfed_reason(self, controller) -> Optional[str]:
        """Why the controller is not being fed, once (None: it is, or it was said)."""
        if self.warned:
            return None
        if self.signal is None and isinstance(controller, FeedbackController) \
                and not controller.decisions:
            reason = ("a FeedbackController is attached but nothing has fed it; call "
                      "loader.watch(model) once (or controller.observe(small, total) each "
                      "iteration)")
        elif self.signal in FEEDBACK_SIGNALS and self.unfed >= UNFED_WARNING_AFTER:
            reason = ("the watched model has left no loss parts for the last "
                      f"{self.unfed} batches; is it in training mode, and does each batch go "
                      "through model(...)?")
        else:
            return None
        self.warned = True
        return reason
