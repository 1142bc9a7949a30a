"""bench/evidence/accuracy.py's report beyond the protocol's statistics: each run's record as
CSV, the paper's Fig. 5 and 6 from them, what the feedback responded to (post hoc), and the
number formats of the notes."""
import glob
import json
import os

from ..common import ROOT


def write_history_files(runs, folder) -> None:
    from dst_dali.feedback.history import write_history_csv
    os.makedirs(folder, exist_ok=True)
    for r in runs:
        write_history_csv(os.path.join(folder, f"{r['arm']}_s{r['seed']}.csv.gz"), r["history"])


def draw_figures(results_dir, histories, tau) -> list:
    """The paper's Fig. 5 and 6, baseline vs feedback over the seeds, by dst_dali.plots."""
    from dst_dali import plots
    argv = ["--baseline", *sorted(glob.glob(os.path.join(histories, "baseline_s*.csv.gz"))),
            "--dst", *sorted(glob.glob(os.path.join(histories, "feedback_s*.csv.gz"))),
            "--tau", str(tau), "--out", results_dir]
    plots.main(argv)
    rel = [os.path.relpath(a, ROOT) if os.path.exists(a) else a for a in argv]
    return ["python -m dst_dali.plots " + " ".join(rel)]


def diagnose(results_dir, histories) -> list:
    """What each arm's feedback responded to, by python -m dst_dali.diagnose_feedback on its
    histories (post hoc: not in the declared protocol); writes feedback_diagnostics.json and
    returns note lines, each with its command."""
    from dst_dali import diagnose_feedback
    out, notes = {}, []
    for arm in ("baseline", "random", "feedback"):
        paths = sorted(glob.glob(os.path.join(histories, f"{arm}_s*.csv.gz")))
        if not paths:
            continue
        argv = paths + ["--tau", "0.1"]
        out[arm] = diagnose_feedback.main(argv)
        both = out[arm].get("combined", next(iter(out[arm]["ranks"].values())))
        prof = both["profile"]
        figures = (f"{both['pairs']} pairs, delta "
                   + (f"{both['delta']['value']:+.4f} {fmt_ci4(both['delta']['ci'])}, on ranks "
                      f"{both['rank_delta']['value']:+.4f} {fmt_ci4(both['rank_delta']['ci'])}, "
                      f"lag-1 {both['lag1']['value']:+.4f} {fmt_ci4(both['lag1']['ci'])}"
                      if "delta" in both else "not measurable (every decision looked at r)"))
        lags = [r["lag1"]["value"] for r in out[arm]["ranks"].values() if "lag1" in r]
        notes.append(
            f"post hoc, {arm} ({len(paths)} seeds, combined): collage rate "
            f"{prof['collage_rate']:.1%}, first tenth {prof['collage_rate_by_tenth'][0]:.0%}; "
            f"mean r of regular iterations {prof['mean_r_first_tenth']:.3f} (first tenth) -> "
            f"{prof['mean_r_last_tenth']:.3f} (last); collage decisions on r = 0: "
            f"{prof['collage_decisions_on_r0']} of {prof['collage_decisions']}; {figures}"
            + (f"; lag-1 a seed {min(lags):+.3f} to {max(lags):+.3f}" if lags else "")
            + " (`python -m dst_dali.diagnose_feedback "
            + " ".join(os.path.relpath(a, ROOT) if os.path.exists(a) else a for a in argv)
            + "`)")
    with open(os.path.join(results_dir, "feedback_diagnostics.json"), "w") as f:
        json.dump(out, f, indent=1)
    return notes


def fmt_ci4(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def fmt_ci(ci) -> str:
    return "n/a" if ci[0] is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def fmt_pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:+.1f}%"

