"""The DST feedback controller: after each iteration, choose the next batch's kind.

r = (loss owed to small objects) / (loss of all objects) of the iteration just trained; the next
iteration gets a collage batch iff r <= tau (the paper: tau = 0.1 on the box-regression loss).
"""
import math
import random
from typing import List, Optional

COLLAGE, REGULAR = "collage", "regular"


def sum_over_ranks(values) -> List[float]:
    """`values` (numbers or 0-d tensors, or a 1-D tensor) summed over torch.distributed ranks,
    as Python floats.

    One all-reduce and one host read a call: every rank then divides the same sums and makes
    the same decision (the original code decided per rank).
    """
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # numpy-only use
        return [float(v) for v in values]
    values = list(values)
    tensors = [x for x in values if isinstance(x, torch.Tensor)]
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not tensors and not distributed:
        return [float(v) for v in values]
    device = tensors[0].device if tensors else torch.device("cpu")
    if distributed and dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    stacked = torch.stack([torch.as_tensor(x, dtype=torch.float64, device=device)
                           for x in values])
    if distributed:
        dist.all_reduce(stacked)
    return stacked.tolist()  # the one host read


class _Controller:
    """History and state shared by every controller: r per observed iteration (None: no
    evidence or not measured) and the kind chosen for the iteration after it."""

    def __init__(self):
        self._collage_next = False  # the first iteration is regular
        self.shares: List[Optional[float]] = []
        self.decisions: List[str] = []

    def _record(self, share: Optional[float], collage_next: bool) -> None:
        self._collage_next = collage_next
        self.shares.append(share)
        self.decisions.append(COLLAGE if collage_next else REGULAR)

    def wants_collage(self) -> bool:
        """Whether the next iteration should be a collage batch."""
        return self._collage_next

    @property
    def collage_rate(self) -> float:
        """Share of observed iterations followed by a collage batch."""
        return self.decisions.count(COLLAGE) / len(self.decisions) if self.decisions else 0.0

    def state_dict(self) -> dict:
        return {"collage_next": self._collage_next, "shares": list(self.shares),
                "decisions": list(self.decisions)}

    def load_state_dict(self, state: dict) -> None:
        self._collage_next = bool(state["collage_next"])
        self.shares = list(state["shares"])
        self.decisions = list(state["decisions"])


class FeedbackController(_Controller):
    """Decides regular vs collage batches from the small-object share of the loss.

    The first iteration is regular. An iteration with no loss to share (total == 0: no positive
    proposals) gives no evidence, and the next iteration is regular: the collage is a response
    to measured under-training of small objects, never a default.
    """

    def __init__(self, tau: float = 0.1):
        if not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:  # NaN fails too
            raise ValueError(f"tau={tau!r}: the small-object loss share threshold must be a "
                             "number in [0, 1]")
        super().__init__()
        self.tau = float(tau)

    def observe(self, small, total, summed_over_ranks: bool = False) -> Optional[float]:
        """Feeds one iteration's loss owed to small objects and its total; returns r.
        Under torch.distributed the two are summed over ranks first, unless the caller did."""
        if not summed_over_ranks:
            small, total = sum_over_ranks((small, total))
        small, total = float(small), float(total)
        finite = math.isfinite(small) and math.isfinite(total)
        # small is a part of total; summed in floating point it may exceed it by rounding
        if not finite or small < 0 or small > total * (1 + 1e-6) + 1e-12:
            raise ValueError(f"observe(small={small}, total={total}): need 0 <= small <= total, "
                             "both finite")
        share = small / total if total > 0 else None
        self._record(share, share is not None and share <= self.tau)
        return share

    def state_dict(self) -> dict:
        return {**super().state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        if state.get("tau") != self.tau:
            raise ValueError(f"checkpoint has tau={state.get('tau')}, this controller "
                             f"tau={self.tau}")
        super().load_state_dict(state)


STATIC_MODES = ("random", "always_collage", "never")


class StaticController(_Controller):
    """The ablation's controls, whose choice does not depend on the loss: collage with
    probability `prob` ("random"; one seeded stream, so every rank draws alike), always, or
    never (the baseline). `observe()` records the measured share, if any, for the plots."""

    def __init__(self, mode: str, prob: float = 0.5, seed: int = 0):
        if mode not in STATIC_MODES:
            raise ValueError(f"mode={mode!r}: must be one of {STATIC_MODES}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob={prob!r}: must be in [0, 1]")
        super().__init__()
        self.mode, self.prob = mode, prob
        self._rng = random.Random(seed)
        self._collage_next = mode == "always_collage"

    def observe(self, small=None, total=None, summed_over_ranks: bool = False):
        share = None
        if small is not None and total is not None:
            if not summed_over_ranks:
                small, total = sum_over_ranks((small, total))
            share = float(small) / float(total) if float(total) > 0 else None
        if self.mode == "random":
            collage = self._rng.random() < self.prob
        else:
            collage = self.mode == "always_collage"
        self._record(share, collage)
        return share

    def state_dict(self) -> dict:
        return {**super().state_dict(), "mode": self.mode, "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"checkpoint has mode={state.get('mode')}, this controller "
                             f"mode={self.mode}")
        super().load_state_dict(state)
        self._rng.setstate(state["rng"])
