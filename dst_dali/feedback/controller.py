"""The DST feedback controller: after each iteration, choose the next batch's kind.

r = (loss owed to small objects) / (loss of all objects) of the iteration just trained; the next
iteration gets a collage batch iff r <= tau (the paper: tau = 0.1 on the box-regression loss).
A controller is a policy over numbers: where the numbers come from (this rank's batch, or all
ranks' summed) is the caller's choice (dst_dali.feedback.feed).
"""
import logging
import math
import random
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..stream.kinds import COLLAGE, KINDS, REGULAR

logger = logging.getLogger("dst_dali.controller")  # the name users filter logs by


class _Controller:
    """History and state shared by every controller: r per observed iteration (None: no
    evidence or not measured) and the kind chosen for the iteration after it."""

    decided_by = "control"  # what a decision of this controller looks at (record.COLUMNS)

    def __init__(self):
        self._collage_next = False  # the first iteration is regular
        self.shares: List[Optional[float]] = []
        self.decisions: List[str] = []
        self.reasons: List[str] = []  # decided_by of each decision

    def _record(self, share: Optional[float], collage_next: bool,
                reason: Optional[str] = None) -> None:
        self._collage_next = collage_next
        self.shares.append(share)
        self.decisions.append(COLLAGE if collage_next else REGULAR)
        self.reasons.append(reason or self.decided_by)

    def wants_collage(self) -> bool:
        """Whether the next iteration should be a collage batch."""
        return self._collage_next

    @property
    def collage_rate(self) -> float:
        """Share of observed iterations followed by a collage batch."""
        return self.decisions.count(COLLAGE) / len(self.decisions) if self.decisions else 0.0

    def state_dict(self) -> dict:
        return {"collage_next": self._collage_next, "shares": list(self.shares),
                "decisions": list(self.decisions), "reasons": list(self.reasons)}

    def load_state_dict(self, state: dict) -> None:
        self._collage_next = bool(state["collage_next"])
        self.shares = list(state["shares"])
        self.decisions = list(state["decisions"])
        # a state from before the reasons were kept: its decisions were this controller's own
        self.reasons = list(state.get("reasons", [self.decided_by] * len(self.decisions)))


# r is a share, in [0, 1]: a tau below 0 never collages (the baseline through the same loader
# and controller), a tau of 1 collages after every iteration that had a loss to share
TAU_RULE = "a number in [-1, 1] (below 0: never a collage)"


def valid_tau(tau) -> bool:
    return isinstance(tau, (int, float)) and not isinstance(tau, bool) and -1.0 <= tau <= 1.0


class FeedbackController(_Controller):
    """Decides regular vs collage batches from the small-object share of the loss.

    Args:
        tau: the threshold on r, in [-1, 1] (below 0: never a collage); None to calibrate it
            (needs warmup).
        warmup: the first `warmup` iterations are regular whatever r is; their r are recorded,
            and when tau is None it becomes their `quantile` (the last one's r then decides
            the next iteration) (the paper's Sec. 4.3: tau = 0.1
            is about the median of r in a baseline run).
        quantile: in [0, 1], see warmup.
        pool: turns this process's warm-up r values into the ones tau is computed from (e.g.
            every rank's, gathered); by default they are used as they are.
        explore: the share of decisions after the warm-up drawn at random instead (a fair
            coin, from a stream seeded by `seed`), recorded as "exploration": iterations whose
            decision ignored r, on which a DST run can measure whether r anticipates the next
            batch (dst_dali.feedback.diagnostics). 0, the default, is the paper's rule.

    The first iteration is regular. An iteration with no loss to share (total == 0: no positive
    proposals) gives no evidence, and the next iteration is regular: the collage is a response
    to measured under-training of small objects, never a default.
    """

    decided_by = "r"

    def __init__(self, tau: Optional[float] = 0.1, warmup: int = 0, quantile: float = 0.5,
                 pool: Optional[Callable[[List[float]], Sequence[float]]] = None,
                 explore: float = 0.0, seed: int = 0):
        if tau is not None and not valid_tau(tau):
            raise ValueError(f"tau={tau!r}: the small-object loss share threshold must be "
                             f"{TAU_RULE} (or None, calibrated after a warm-up)")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup={warmup!r}: must be a non-negative integer")
        if tau is None and warmup == 0:
            raise ValueError("tau=None is calibrated from warm-up iterations: give warmup > 0")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile={quantile!r}: must be in [0, 1]")
        if isinstance(explore, bool) or not isinstance(explore, (int, float)) or \
                not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore={explore!r}: the share of decisions drawn at random "
                             "must be a number in [0, 1]")
        super().__init__()
        self.explore = float(explore)
        self._rng = random.Random(seed)
        self.tau = None if tau is None else float(tau)
        self.calibrated = tau is None
        self.warmup, self.quantile = warmup, quantile
        self._pool = pool or list

    def observe(self, small, total) -> Optional[float]:
        """Feeds one iteration's loss owed to small objects and its total; returns r."""
        small, total = float(small), float(total)
        finite = math.isfinite(small) and math.isfinite(total)
        # small is a part of total; summed in floating point it may exceed it by rounding
        if not finite or small < 0 or small > total * (1 + 1e-6) + 1e-12:
            raise ValueError(f"observe(small={small}, total={total}): need 0 <= small <= total, "
                             "both finite")
        share = small / total if total > 0 else None
        observed = len(self.shares) + 1  # this iteration included
        if self.calibrated and observed == self.warmup:
            warm = [r for r in self.shares + [share] if r is not None]
            self.tau = calibrate_tau(self._pool(warm), self.quantile)
        if observed < self.warmup:
            self._record(share, False, "warmup")
        elif self.explore and self._rng.random() < self.explore:
            self._record(share, self._rng.random() < 0.5, "exploration")
        else:
            self._record(share, share is not None and share <= self.tau)
        return share

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "tau": self.tau, "calibrated": self.calibrated,
                 "warmup": self.warmup, "quantile": self.quantile}
        if self.explore:
            state.update(explore=self.explore, rng=self._rng.getstate())
        return state

    def load_state_dict(self, state: dict) -> None:
        mine = {"calibrated": self.calibrated, "warmup": self.warmup, "quantile": self.quantile,
                "explore": self.explore or None}
        if not self.calibrated:
            mine["tau"] = self.tau
        saved = {key: state.get(key) for key in mine}
        if saved != mine:
            raise ValueError(f"checkpoint's controller has {saved}, this one {mine}")
        super().load_state_dict(state)
        self.tau = state["tau"]
        if self.explore:
            self._rng.setstate(_rng_state(state["rng"]))


def calibrate_tau(shares: Sequence[float], quantile: float = 0.5) -> float:
    """tau as the `quantile` of observed r values (None and non-finite ones left out): the
    paper's rule, a tau with that share of iterations at r <= tau. Tied values can make the
    split impossible, most often many r = 0 (batches whose positives hold no small object):
    tau is still the quantile, the nearest split there is, and a warning gives the split it
    makes, as it does for every tau = 0."""
    values = np.array([r for r in shares if r is not None and math.isfinite(r)], np.float64)
    if not len(values):
        raise ValueError("no iteration measured r (no positive proposals): cannot calibrate "
                         "tau; lengthen the warm-up or set tau")
    tau = float(np.quantile(values, quantile))
    split = float(np.mean(values <= tau))
    if tau == 0.0 or abs(split - quantile) > max(0.05, 1.0 / len(values)):
        logger.warning("tau = %.6g, the %g quantile of %d r values, of which %.0f%% are 0: "
                       "r <= tau after %.0f%% of them, not %.0f%% (tied values), so collages "
                       "follow that share of iterations", tau, quantile, len(values),
                       100 * np.mean(values == 0), 100 * split, 100 * quantile)
    return tau


def _share_or_none(small, total) -> Optional[float]:
    """r of an iteration a control observes, for its record: None if not measured."""
    if small is None or total is None or float(total) <= 0:
        return None
    return float(small) / float(total)


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

    def observe(self, small=None, total=None) -> Optional[float]:
        share = _share_or_none(small, total)
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
        self._rng.setstate(_rng_state(state["rng"]))


def _rng_state(state):
    """random.Random's state as a checkpoint gives it back (tuples may come back as lists)."""
    return tuple(tuple(x) if isinstance(x, list) else x for x in state)


class ReplayController(_Controller):
    """A yoked control: replays another run's decisions (its controller's `decisions`, the kind
    chosen after each iteration), so this run trains collages at the same rate and the same
    iterations while its choice owes nothing to its own model. `decisions` is read as the run
    goes, so it may be a list another run is still filling."""

    def __init__(self, decisions: Sequence[str], source: str = "the replayed run"):
        super().__init__()
        self.source = decisions
        self.source_name = source

    def observe(self, small=None, total=None) -> Optional[float]:
        share = _share_or_none(small, total)
        i = len(self.decisions)
        if i >= len(self.source):
            raise ValueError(f"{self.source_name} has {len(self.source)} decisions; this run "
                             f"needs the one after iteration {i}")
        if self.source[i] not in KINDS:
            raise ValueError(f"{self.source_name}: decision {i} is {self.source[i]!r}, not one "
                             f"of {KINDS}")
        self._record(share, self.source[i] == COLLAGE)
        return share
