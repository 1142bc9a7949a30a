"""Prints tau from a finished run's feedback record: the quantile of the r it measured (the
paper's Sec. 4.3 sets tau = 0.1, about the median of r in a baseline run).

    python -m dst_dali.calibrate_tau output/faster_rcnn_R_50_FPN_1x_baseline [--quantile 0.5]

Use a baseline run (DST.ENABLED False, which still measures r) with the DST run's DST.SIGNAL
and DST.DECISION; pass the result as DST.TAU.
"""
import argparse

from .feedback.controller import calibrate_tau
from .feedback.history import read_histories, shares_of


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir", help="the run's OUTPUT_DIR")
    ap.add_argument("--quantile", type=float, default=0.5)
    ap.add_argument("--first", type=int, default=None,
                    help="only the first N iterations of each rank (a warm-up's worth)")
    args = ap.parse_args(argv)
    runs = read_histories(args.output_dir)
    if args.first is not None:
        runs = {rank: dict(run, history=run["history"][:args.first])
                for rank, run in runs.items()}
    shares = shares_of(runs)
    tau = calibrate_tau(shares, args.quantile)
    kinds = {run.get("decision") for run in runs.values()}
    split = sum(r <= tau for r in shares) / len(shares)
    print(f"tau = {tau:.6g}: the {args.quantile:g} quantile of {len(shares)} r values from "
          f"{len(runs)} rank(s), decision {'/'.join(sorted(map(str, kinds)))}; r <= tau in "
          f"{split:.0%} of them")
    return tau


if __name__ == "__main__":
    main()
