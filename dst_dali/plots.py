"""The paper's Fig. 5 (loss shares by object size over training) and Fig. 6 (the distribution of
r) from finished runs, each an output folder or history CSVs (several: e.g. seeds, averaged):

    python -m dst_dali.plots --baseline OUT_A --dst OUT_B [--out DIR] [--tau T]

The figures themselves are dst_dali.feedback.plots, named here too for scripts that draw them.
"""
import argparse
import os

from .feedback.history import read_runs
from .feedback.plots import (  # noqa: F401
    plot_feedback,
    plot_loss_shares,
    plot_share_distribution,
    smooth,
)


def main(argv=None):
    ap = argparse.ArgumentParser(description="The paper's Fig. 5 and 6 from finished runs")
    ap.add_argument("--baseline", required=True, nargs="+",
                    help="OUTPUT_DIR of the baseline run, or its history CSVs")
    ap.add_argument("--dst", required=True, nargs="+",
                    help="OUTPUT_DIR of the DST run, or its history CSVs")
    ap.add_argument("--out", default=".", help="folder for fig5_loss_shares.png, "
                                               "fig6_share_distribution.png")
    ap.add_argument("--tau", type=float, default=None,
                    help="default: the DST run's (calibrated) tau")
    ap.add_argument("--window", type=int, default=50)
    args = ap.parse_args(argv)
    runs = {"baseline": read_runs(args.baseline), "DST": read_runs(args.dst)}
    tau = args.tau if args.tau is not None else next(iter(runs["DST"].values()))["tau"]
    if tau is None:
        raise SystemExit(f"{' '.join(args.dst)}: no tau recorded; give --tau")
    os.makedirs(args.out, exist_ok=True)
    paths = [plot_loss_shares(runs, os.path.join(args.out, "fig5_loss_shares.png"), args.window),
             plot_share_distribution(runs, tau, os.path.join(args.out,
                                                             "fig6_share_distribution.png"))]
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
