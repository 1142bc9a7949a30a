"""The accuracy protocol's statistics (bench/evidence/accuracy.py): per-seed paired differences
with their 95% t-intervals, the time overhead over the baseline, and the per-arm summary."""
import numpy as np


def t_interval(values) -> tuple:
    """Mean and 95% t-interval of values (None bounds for fewer than 2)."""
    from scipy import stats
    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, [None, None]
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, [mean - half, mean + half]


def paired(runs, a, b, metric) -> dict:
    """a - b in metric, seed by seed over the seeds both arms ran."""
    of = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted(s for arm, s in of if arm == a and (b, s) in of)
    mean, ci = t_interval([of[a, s][metric] - of[b, s][metric] for s in seeds])
    return {"a": a, "b": b, "metric": metric, "mean_diff": mean, "ci95": ci, "seeds": len(seeds)}


def overhead(runs, arm="feedback") -> dict:
    """The arm's time per iteration over the baseline's, as a fraction: per seed, the mean over
    rounds of its block over the baseline's block of the same round and process; then the
    mean over seeds and its t-interval (the declared statistic). Beside it, post hoc: each
    seed's median over its rounds, which a few stalled rounds do not move."""
    of = {(r["arm"], r["seed"]): r for r in runs}
    per_seed, medians = [], []
    for (name, seed), run in sorted(of.items()):
        base = of.get(("baseline", seed))
        if name != arm or base is None:
            continue
        ratios = [s / base["round_s"][k] - 1 for k, s in run["round_s"].items()
                  if k in base["round_s"]]
        per_seed.append(float(np.mean(ratios)))
        medians.append(float(np.median(ratios)))
    mean, ci = t_interval(per_seed) if per_seed else (None, [None, None])
    return {"arm": arm, "mean": mean, "ci95": ci, "seeds": len(per_seed),
            "per_seed_mean": per_seed, "per_seed_median_post_hoc": medians}


def summarize(runs, arms, metrics) -> list:
    """Per arm (in the order of arms): metrics as mean and std over seeds, collage rate,
    images seen, times."""
    rows = []
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        row = {"arm": arm, "seeds": len(mine)}
        for m in metrics:
            v = np.array([r[m] for r in mine], np.float64)
            row[m] = float(v.mean())
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        for key in ("collage_rate", "images_seen", "iter_s", "data_s"):
            row[key] = float(np.mean([r[key] for r in mine]))
        rows.append(row)
    return rows
