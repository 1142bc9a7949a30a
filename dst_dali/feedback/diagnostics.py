"""What a run's feedback responded to, from its record (dst_dali.feedback.history): how often and
when it collaged, how many of its collage decisions were taken on r = 0 (batches whose positives
held no small object), and whether a decision on this batch's r anticipates the next batch's r
beyond r's slow trend.

The last is measured where the decision did not look at r (a baseline or a control run, the tau
warm-up, or FeedbackController(explore=...)'s random decisions), on a regular batch followed by a
regular batch, so the next batch's kind owes nothing to r:

    r~ = r - its centred moving mean (over the rank's regular iterations): r without its trend
    delta = E[r~(t+1) | r(t) > tau] - E[r~(t+1) | r(t) <= tau]

written so that r's persistence gives delta > 0: a collage decision (r <= tau) is then followed
by a batch whose small objects also train less than the trend says. delta = 0: the decision
tells nothing about the next batch that its time profile does not, and a control replaying the
profile gets what the feedback gets. Beside it: the same on mid-ranks (r has a point mass at
0), the same on what the batch's box counts by size leave unexplained (the model's state apart
from the batch's composition), and the detrended lag-1 autocorrelation. Intervals are 95%
moving-block bootstraps over iterations.

Each rank's series is detrended and paired on its own; the combined figures pool the ranks'
pairs (a boundary between two ranks is never a pair) and resample blocks within each rank.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..stream.kinds import COLLAGE, REGULAR
from .record import COUNT_COLUMNS, R_BLIND

TREND_WINDOW = 201  # regular iterations in the centred moving mean (r's trend is slow)
BLOCK = 50          # iterations a bootstrap block
REPLICATES = 2000
LAG = 1             # the next batch


class Series:
    """One rank's record as arrays: r (NaN: not measured), kinds, decisions, whether each
    decision ignored r, and the batch's box counts by size (None when not recorded)."""

    def __init__(self, history: Sequence[dict], tau: float, name: str = ""):
        self.name, self.tau = name, tau
        self.r = np.array([np.nan if h.get("share") is None else h["share"] for h in history],
                          np.float64)
        self.kind = np.array([h["kind"] for h in history])
        self.next = np.array([h.get("next") or "" for h in history])
        reasons = [h.get("decided_by") for h in history]
        if all(reason is None for reason in reasons):
            reasons = [inferred_reason(self.r, self.next, tau)] * len(history)
        self.blind = np.array([reason in R_BLIND for reason in reasons])
        self.reasons = reasons
        self.counts = (np.array([[h[c] for c in COUNT_COLUMNS] for h in history], np.float64)
                       if history and all(h.get(c) is not None for h in history
                                          for c in COUNT_COLUMNS) else None)

    def __len__(self) -> int:
        return len(self.r)

    @property
    def regular(self) -> np.ndarray:
        """Regular iterations with r measured."""
        return (self.kind == REGULAR) & ~np.isnan(self.r)


def inferred_reason(r: np.ndarray, nxt: np.ndarray, tau: float) -> str:
    """What decided a record written before decisions were labelled: "r" when every decision
    is r <= tau's (a feedback run), else "control" (a baseline, random or replayed run)."""
    rule = np.where(~np.isnan(r) & (np.nan_to_num(r, nan=2.0) <= tau), COLLAGE, REGULAR)
    return "r" if len(nxt) and np.all(rule == nxt) else "control"


def detrended(series: Series, window: int = TREND_WINDOW) -> np.ndarray:
    """r minus its centred moving mean over the series' regular iterations (NaN elsewhere)."""
    out = np.full(len(series), np.nan)
    idx = np.flatnonzero(series.regular)
    out[idx] = _minus_moving_mean(series.r[idx], window)
    return out


def _minus_moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    if not len(values):
        return values
    window = max(1, min(window, len(values)))
    kernel = np.ones(window)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return values - total / count


def composition_residual(series: Series, window: int = TREND_WINDOW) -> Optional[np.ndarray]:
    """What the batch's box counts by size (and whether it holds a small box) leave of r, by
    least squares over the regular iterations, then detrended like r; None without counts."""
    if series.counts is None:
        return None
    idx = np.flatnonzero(series.regular)
    c = series.counts[idx]
    x = np.column_stack([np.ones(len(idx)), c, c[:, 0] == 0])
    beta, *_ = np.linalg.lstsq(x, series.r[idx], rcond=None)
    out = np.full(len(series), np.nan)
    out[idx] = _minus_moving_mean(series.r[idx] - x @ beta, window)
    return out


def pairs(series: Series) -> np.ndarray:
    """Iterations t whose decision ignored r, regular with r measured, followed by such a
    regular iteration t + 1 of the same rank."""
    ok = series.regular
    t = np.flatnonzero(ok[:-1] & ok[1:] & series.blind[:-1])
    return t


def midranks(values: np.ndarray) -> np.ndarray:
    """Mid-ranks scaled to (0, 1): ties share their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    mean_rank = first + (counts - 1) / 2.0 + 0.5
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks / len(values)


class PairSet:
    """One series' pairs: the split at t and the outcomes at t + 1 of every statistic."""

    def __init__(self, series: Series, window: int = TREND_WINDOW):
        t = pairs(series)
        nxt = t + LAG
        rt = detrended(series, window)
        self.n = len(t)
        self.low = series.r[t] <= series.tau
        self.outcome = {"delta": rt[nxt], "rank_delta": midranks(rt[nxt])}
        self.now = rt[t]
        resid = composition_residual(series, window)
        if resid is not None:
            # the state's part: split on what the counts leave of r(t), at r <= tau's share
            state_now = resid[t]
            cut = np.quantile(state_now, self.low.mean()) if self.n else 0.0
            self.state_low = state_now <= cut
            self.outcome["state_delta"] = resid[nxt]
        else:
            self.state_low = None


def _difference(low: np.ndarray, outcome: np.ndarray) -> float:
    if low.all() or not low.any():
        return np.nan
    return float(outcome[~low].mean() - outcome[low].mean())


def _lag1(now: np.ndarray, nxt: np.ndarray) -> float:
    if len(now) < 3 or now.std() == 0 or nxt.std() == 0:
        return np.nan
    return float(np.corrcoef(now, nxt)[0, 1])


def _statistics(sets: List[PairSet], picks: List[np.ndarray]) -> Dict[str, float]:
    """Every statistic on the pooled pairs `picks` (indices into each set's pairs)."""
    low = np.concatenate([s.low[p] for s, p in zip(sets, picks)])
    out = {}
    for key in ("delta", "rank_delta"):
        out[key] = _difference(low, np.concatenate([s.outcome[key][p]
                                                    for s, p in zip(sets, picks)]))
    if all(s.state_low is not None for s in sets):
        out["state_delta"] = _difference(
            np.concatenate([s.state_low[p] for s, p in zip(sets, picks)]),
            np.concatenate([s.outcome["state_delta"][p] for s, p in zip(sets, picks)]))
    out["lag1"] = _lag1(np.concatenate([s.now[p] for s, p in zip(sets, picks)]),
                        np.concatenate([s.outcome["delta"][p] for s, p in zip(sets, picks)]))
    return out


def _block_sample(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """A moving-block bootstrap sample of n indices in 0..n-1."""
    block = max(1, min(block, n))
    starts = rng.integers(0, n - block + 1, size=-(-n // block))
    return (starts[:, None] + np.arange(block)).ravel()[:n]


def anticipation(series_list: Sequence[Series], window: int = TREND_WINDOW,
                 block: int = BLOCK, replicates: int = REPLICATES,
                 seed: int = 0) -> Dict[str, object]:
    """delta and its companions with 95% intervals, pooling the series' pairs; "pairs" says
    how many there were."""
    sets = [PairSet(s, window) for s in series_list]
    n = sum(s.n for s in sets)
    out: Dict[str, object] = {"pairs": n}
    if n < 2 * block or not any(s.n for s in sets):
        return out
    point = _statistics(sets, [np.arange(s.n) for s in sets])
    rng = np.random.default_rng(seed)
    draws = {key: [] for key in point}
    for _ in range(replicates):
        picks = [_block_sample(s.n, block, rng) if s.n else np.arange(0) for s in sets]
        for key, value in _statistics(sets, picks).items():
            draws[key].append(value)
    for key, value in point.items():
        d = np.array(draws[key])
        d = d[np.isfinite(d)]
        low, high = (np.quantile(d, [0.025, 0.975]) if len(d) else (np.nan, np.nan))
        out[key] = {"value": value, "ci": [float(low), float(high)]}
    return out


def profile(series_list: Sequence[Series], parts: int = 10) -> Dict[str, object]:
    """The collage rate (of the iterations trained) over the run and in each tenth of it, the
    regular iterations' mean r in the first and last tenth, and the collage decisions taken on
    r = 0 (with how many of their batches had no small box, where counts are recorded)."""
    rates = np.zeros(parts)
    sizes = np.zeros(parts)
    first, last = [], []
    decisions = zeros = zeros_without_small = 0
    counted = all(s.counts is not None for s in series_list)
    for s in series_list:
        tenth = np.minimum((np.arange(len(s)) * parts) // max(len(s), 1), parts - 1)
        collage = s.kind == COLLAGE
        np.add.at(rates, tenth, collage)
        np.add.at(sizes, tenth, 1)
        regular = s.regular
        first.extend(s.r[regular & (tenth == 0)])
        last.extend(s.r[regular & (tenth == parts - 1)])
        chose = s.next == COLLAGE
        on_zero = chose & (s.r == 0)
        decisions += int(chose.sum())
        zeros += int(on_zero.sum())
        if counted:
            zeros_without_small += int((on_zero & (s.counts[:, 0] == 0)).sum())
    total = sum(len(s) for s in series_list)
    return {"iterations": total,
            "collage_rate": float(rates.sum() / total) if total else np.nan,
            "collage_rate_by_tenth": (rates / np.maximum(sizes, 1)).tolist(),
            "mean_r_first_tenth": float(np.mean(first)) if first else np.nan,
            "mean_r_last_tenth": float(np.mean(last)) if last else np.nan,
            "collage_decisions": decisions,
            "collage_decisions_on_r0": zeros,
            "of_those_without_small_box": zeros_without_small if counted else None}


def verdict(result: Dict[str, object]) -> str:
    """One sentence on delta."""
    if "delta" not in result:
        return (f"Not measurable: {result['pairs']} pairs of iterations whose decision ignored "
                "r (a DST run has none: use a baseline, the tau warm-up or "
                "FeedbackController(explore=...) / DST.EXPLORE).")
    d = result["delta"]
    low, high = d["ci"]
    figures = f"delta = {d['value']:+.4f} [{low:+.4f}, {high:+.4f}]"
    if low > 0:
        return (f"Decisions carry information about the next batch beyond their time profile: "
                f"{figures}, its interval above 0.")
    if high < 0:
        return (f"Decisions anticipate the next batch the wrong way round ({figures}): a "
                "low r is followed by a high one, beyond the trend.")
    return (f"No evidence that decisions carry information about the next batch beyond their "
            f"time profile: {figures} holds 0, so a control replaying the profile would get "
            "what the feedback gets.")
