"""The DST feedback controller: after each iteration, choose the next batch's kind.

r = (loss owed to small objects) / (loss of all objects) of the iteration just trained; the next
iteration gets a collage batch iff r <= tau (the paper: tau = 0.1 on the box-regression loss).
"""
import math
from typing import List, Optional

COLLAGE, REGULAR = "collage", "regular"


def _sum_over_ranks(small, total):
    """(small, total) summed over torch.distributed ranks, as two Python floats.

    One all-reduce of a 2-vector and one host read a call: every rank then divides the same
    sums and makes the same decision (the original code decided per rank).
    """
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # numpy-only use
        return float(small), float(total)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return float(small), float(total)
    device = small.device if isinstance(small, torch.Tensor) else "cpu"
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    both = torch.stack([torch.as_tensor(small, dtype=torch.float64),
                        torch.as_tensor(total, dtype=torch.float64)]).to(device)
    dist.all_reduce(both)
    small, total = both.tolist()
    return small, total


class FeedbackController:
    """Decides regular vs collage batches from the small-object share of the loss.

    The first iteration is regular. An iteration with no loss to share (total == 0: no positive
    proposals) gives no evidence, and the next iteration is regular: the collage is a response
    to measured under-training of small objects, never a default.
    """

    def __init__(self, tau: float = 0.1):
        if not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:  # NaN fails too
            raise ValueError(f"tau={tau!r}: the small-object loss share threshold must be a "
                             "number in [0, 1]")
        self.tau = float(tau)
        self._collage_next = False
        self.shares: List[Optional[float]] = []  # r of each observed iteration (None: no evidence)
        self.decisions: List[str] = []           # the kind chosen for the iteration after it

    def observe(self, small, total) -> Optional[float]:
        """Feeds one iteration's loss owed to small objects and its total; returns r."""
        small, total = _sum_over_ranks(small, total)
        finite = math.isfinite(small) and math.isfinite(total)
        # small is a part of total; summed in floating point it may exceed it by rounding
        if not finite or small < 0 or small > total * (1 + 1e-6) + 1e-12:
            raise ValueError(f"observe(small={small}, total={total}): need 0 <= small <= total, "
                             "both finite")
        share = small / total if total > 0 else None
        self._collage_next = share is not None and share <= self.tau
        self.shares.append(share)
        self.decisions.append(COLLAGE if self._collage_next else REGULAR)
        return share

    def wants_collage(self) -> bool:
        """Whether the next iteration should be a collage batch."""
        return self._collage_next

    @property
    def collage_rate(self) -> float:
        """Share of observed iterations followed by a collage batch."""
        return self.decisions.count(COLLAGE) / len(self.decisions) if self.decisions else 0.0

    def state_dict(self) -> dict:
        return {"tau": self.tau, "collage_next": self._collage_next,
                "shares": list(self.shares), "decisions": list(self.decisions)}

    def load_state_dict(self, state: dict) -> None:
        if state["tau"] != self.tau:
            raise ValueError(f"checkpoint has tau={state['tau']}, this controller tau={self.tau}")
        self._collage_next = bool(state["collage_next"])
        self.shares = list(state["shares"])
        self.decisions = list(state["decisions"])
