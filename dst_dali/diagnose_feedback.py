"""What the feedback responded to, from finished runs' records: the collage rate and its time
profile, the collage decisions taken on r = 0, and whether a decision anticipates the next
batch beyond its time profile (delta, with bootstrap intervals; dst_dali.feedback.diagnostics
says how it is measured). Each rank, then all combined.

    python -m dst_dali.diagnose_feedback OUTPUT_DIR [OUTPUT_DIR ...] [--json FILE]
    python -m dst_dali.diagnose_feedback bench/results/accuracy_histories/baseline_s*.csv.gz

An OUTPUT_DIR is a run's folder (its dst_history/rank*.json from DSTHook, or rank*.csv from a
DSTLoader with record_dir); a CSV is one rank's record (e.g. a bench's committed runs).
delta needs iterations whose decision ignored r: a baseline's, a control's, the tau warm-up's or
those a DST run explored (FeedbackController(explore=0.05), DST.EXPLORE 0.05).
"""
import argparse
import json
import os

from .feedback.diagnostics import (
    BLOCK,
    REPLICATES,
    TREND_WINDOW,
    Series,
    anticipation,
    profile,
    verdict,
)
from .feedback.history import read_histories, read_history_csv


def read_series(paths, tau):
    """(name, Series) for every rank of every path, in order."""
    out = []
    for path in paths:
        runs = (read_histories(path) if os.path.isdir(path) else {0: read_history_csv(path)})
        for rank, run in sorted(runs.items()):
            name = f"{path} rank {rank}" if os.path.isdir(path) else path
            run_tau = tau if tau is not None else run.get("tau")
            out.append(Series(run["history"], 0.1 if run_tau is None else run_tau, name))
    return out


def _figure(result, key):
    if key not in result:
        return "n/a"
    d = result[key]
    return f"{d['value']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


def report(name, series, args) -> dict:
    prof = profile(series)
    result = anticipation(series, args.window, args.block, args.replicates, args.seed)
    result.update(profile=prof, verdict=verdict(result))
    print(f"== {name}")
    print(f"  iterations {prof['iterations']}, collage rate {prof['collage_rate']:.1%}; by "
          "tenth: " + " ".join(f"{v:.0%}" for v in prof["collage_rate_by_tenth"]))
    print(f"  mean r of regular iterations: first tenth {prof['mean_r_first_tenth']:.3f}, "
          f"last tenth {prof['mean_r_last_tenth']:.3f}")
    zeros, chose = prof["collage_decisions_on_r0"], prof["collage_decisions"]
    without = prof["of_those_without_small_box"]
    print(f"  collage decisions on r = 0: {zeros} of {chose}"
          + (f" ({zeros / chose:.0%})" if chose else "")
          + ("; box counts not recorded" if without is None
             else f"; {without} of them on a batch without a small box"))
    print(f"  pairs whose decision ignored r: {result['pairs']}")
    print(f"  delta {_figure(result, 'delta')}; on ranks {_figure(result, 'rank_delta')}; "
          f"beyond box counts {_figure(result, 'state_delta')}; "
          f"lag-1 autocorrelation {_figure(result, 'lag1')}")
    print(f"  {result['verdict']}")
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR) or history CSVs")
    ap.add_argument("--tau", type=float, default=None,
                    help="default: the record's tau, else 0.1")
    ap.add_argument("--window", type=int, default=TREND_WINDOW,
                    help="regular iterations in the trend's centred moving mean")
    ap.add_argument("--block", type=int, default=BLOCK, help="bootstrap block length")
    ap.add_argument("--replicates", type=int, default=REPLICATES)
    ap.add_argument("--seed", type=int, default=0, help="the bootstrap's")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    series = read_series(args.runs, args.tau)
    out = {"settings": {k: getattr(args, k) for k in ("tau", "window", "block", "replicates",
                                                      "seed")},
           "ranks": {}}
    for s in series:
        out["ranks"][s.name] = report(s.name, [s], args)
    if len(series) > 1:
        out["combined"] = report(f"combined: {len(series)} ranks (pairs pooled, never one "
                                 "series)", series, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
