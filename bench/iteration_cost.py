"""Where a collage iteration's time goes, against a regular one: bench/evidence/accuracy.py's
detector and data, trained in one process with blocks of regular and of collage iterations
alternating, each iteration timed by phase.

    data       DSTLoader.next_batch (the wait detectron2 logs as data_time)
    backbone, proposals (RPN, its anchor matching and losses), roi_heads (sampling, box head,
               losses and the loss-share probe)    the model's forward, by module
    backward, step                                 loss.backward(), optimizer step
    feedback   DSTLoader.observe_last: r read from the probe, fed to the controller

Rounds of a regular, a collage and a mixed block (the order turning from round to round)
share the machine's drift; each figure is the median over rounds of the blocks' mean
iteration, with its quartiles. The mixed block draws each iteration's kind at random (p = 0.5,
the random arm's): against the regular and collage blocks of its round it shows what
switching between the two pipelines costs beyond the two kinds' own costs. The forward's
work also scales with the ground truth a batch holds, so the boxes, RPN positive anchors and
ROI foreground samples are counted too.

    python -m bench.iteration_cost [--rounds 16]      # ~3 minutes on 2 cores
    python -m bench.iteration_cost --quick            # smoke run (tests)
"""
import argparse
import os
import sys
import time

import numpy as np

from .common import RESULTS, ROOT, threads_cpu, write_results
from .evidence.accuracy import CONFIG, register
from .evidence.accuracy_set import make_dataset

PHASES = ("data", "backbone", "proposals", "roi_heads", "backward", "step", "feedback")
MODULES = ("backbone", "proposal_generator", "roi_heads")


class ModuleTimer:
    """Wall time of each named child module's forward, by pre- and post-forward hooks."""

    def __init__(self, model, names):
        self.times, self._start, self._handles = {}, {}, []
        for name in names:
            module = getattr(model, name)
            self._handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: self._start.__setitem__(name, time.perf_counter())))
            self._handles.append(module.register_forward_hook(
                lambda m, args, out, name=name: self.times.__setitem__(
                    name, time.perf_counter() - self._start[name])))

    def pop(self) -> dict:
        times, self.times = self.times, {}
        return times

    def remove(self):
        for h in self._handles:
            h.remove()


def build(data: str, threads: int):
    """The accuracy bench's model, optimizer and a watched DSTLoader over its train split."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    from dst_dali.config import load_config
    from dst_dali.feedback.controller import StaticController
    from dst_dali.trainer import build_dst_loader
    if "dst_scale_train" not in DatasetCatalog.list():
        register(data)
    cfg = load_config(CONFIG, ["DST.NUM_THREADS", str(threads)])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loader = build_dst_loader(cfg, StaticController("never"))
    loader.watch(model, signal="reg")
    return model, optimizer, loader


def iteration(model, optimizer, loader, timer, kind) -> dict:
    """One training iteration of `kind`: seconds by phase, the batch's counts, and the CPU
    DALI's threads ran meanwhile (prefetching the kinds' next batches, beside the model)."""
    from detectron2.utils.events import get_event_storage
    dali_cpu = threads_cpu(name_prefix="[DALI]")
    t = time.perf_counter()
    batch = loader.next_batch(kind)
    data = time.perf_counter() - t
    losses = model(batch)
    forward = timer.pop()
    t = time.perf_counter()
    sum(losses.values()).backward()
    backward = time.perf_counter() - t
    t = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step = time.perf_counter() - t
    t = time.perf_counter()
    loader.observe_last()
    feedback = time.perf_counter() - t
    latest = get_event_storage().latest()
    dali_cpu = threads_cpu(name_prefix="[DALI]") - dali_cpu
    return {"kind": kind, "data": data, "backbone": forward["backbone"],
            "proposals": forward["proposal_generator"], "roi_heads": forward["roi_heads"],
            "backward": backward, "step": step, "feedback": feedback,
            "boxes": sum(len(d["instances"]) for d in batch),
            "rpn_positive_anchors": latest["rpn/num_pos_anchors"][0],
            "roi_foreground": latest["roi_head/num_fg_samples"][0],
            "dali_cpu_ms": 1000 * dali_cpu}


BLOCKS = ("regular", "collage", "mixed")
COUNTS = ("boxes", "rpn_positive_anchors", "roi_foreground", "dali_cpu_ms")


def run(model, optimizer, loader, rounds: int, warmup: int, block: int, settle: int):
    """`warmup` iterations, then `rounds` rounds of a regular, a collage and a mixed block,
    the order turning each round. The first `settle` iterations of a block are not kept: the
    previous block's pipeline is still refilling its prefetch queue then, on the same CPUs, a
    cost of that block. Returns the kept iterations."""
    from detectron2.utils.events import EventStorage
    timer = ModuleTimer(model, MODULES)
    rng = np.random.default_rng(0)
    rows = []
    with EventStorage(0) as storage:
        for i in range(warmup):
            iteration(model, optimizer, loader, timer, ("regular", "collage")[i % 2])
            storage.step()
        for r in range(rounds):
            for name in BLOCKS[r % 3:] + BLOCKS[:r % 3]:
                for i in range(block):
                    kind = (name if name != "mixed" else
                            ("regular", "collage")[int(rng.random() < 0.5)])
                    row = iteration(model, optimizer, loader, timer, kind)
                    storage.step()
                    if i >= settle:
                        rows.append({"round": r, "block": name, **row})
    timer.remove()
    return rows


def total(row) -> float:
    return sum(row[p] for p in PHASES)


def summarize(rows):
    """Per kind, the median over rounds of each phase's block mean (ms), and the mean counts;
    per phase, the collage - regular difference (ms) as a median over rounds with its
    quartiles; the total's ratio, round by round; and, round by round, the mixed block's mean
    iteration over what its kinds cost in that round's regular and collage blocks."""
    by_round = {}
    for row in rows:
        by_round.setdefault(row["round"], {}).setdefault(row["block"], []).append(row)
    mean = {}
    for r, blocks in by_round.items():  # each block's mean iteration
        for name, mine in blocks.items():
            mean[r, name] = {p: float(np.mean([row[p] for row in mine])) for p in PHASES}
    pairs = [(mean[r, "regular"], mean[r, "collage"]) for r in by_round]
    table = []
    for key in PHASES + ("total",):
        def value(row):
            return 1000 * (total(row) if key == "total" else row[key])
        reg = np.array([value(a) for a, _ in pairs])
        col = np.array([value(b) for _, b in pairs])
        diff = col - reg
        table.append({"phase": key, "regular_ms": float(np.median(reg)),
                      "collage_ms": float(np.median(col)),
                      "difference_ms": float(np.median(diff)),
                      "difference_low": float(np.percentile(diff, 25)),
                      "difference_high": float(np.percentile(diff, 75))})
    ratios = np.array([total(b) / total(a) for a, b in pairs])
    switching = []
    for r, blocks in by_round.items():
        mixed = blocks.get("mixed", [])
        expected = [total(mean[r, row["kind"]]) for row in mixed]
        if mixed:
            switching.append(np.mean([total(row) for row in mixed]) / np.mean(expected))
    counts = {kind: {c: float(np.mean([r[c] for r in rows if r["kind"] == kind]))
                     for c in COUNTS}
              for kind in ("regular", "collage")}
    return table, ratios, np.array(switching), counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--block", type=int, default=10, help="iterations of one kind in a row")
    ap.add_argument("--settle", type=int, default=3,
                    help="iterations at the start of a block not kept (see run)")
    ap.add_argument("--warmup", type=int, default=40,
                    help="iterations first (alternating kinds): past the random initialization")
    ap.add_argument("--threads", type=int, default=1, help="DALI threads (as the accuracy arms)")
    ap.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "output", "iteration_cost"))
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="iteration_cost")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    n_train = 600
    if args.quick:
        args.rounds, args.warmup, args.block, args.settle, n_train = 2, 2, 2, 1, 24
    data = os.path.join(args.work_dir, "data")
    shares = make_dataset(data, 0, n_train, 4, 4)
    import torch
    # the machine's 2 cores, or the share the environment gives (OMP_NUM_THREADS: a test
    # worker's)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    rows = run(*build(data, args.threads), rounds=args.rounds, warmup=args.warmup,
               block=args.block, settle=args.settle)
    table, ratios, switching, counts = summarize(rows)
    whole = next(t for t in table if t["phase"] == "total")
    mixed = [row for row in rows if row["block"] == "mixed"]
    mixed_rate = float(np.mean([row["kind"] == "collage" for row in mixed]))
    switches = float(np.mean([a["kind"] != b["kind"] for a, b in zip(mixed, mixed[1:])]))
    notes = [
        f"{args.rounds} rounds of a block of {args.block} regular, {args.block} collage and "
        f"{args.block} mixed iterations (the first {args.settle} of a block not kept), "
        "4 images a batch, "
        f"192 px, bench/evidence/accuracy.yaml's detector trained from scratch, after "
        f"{args.warmup} "
        f"iterations; train data: {shares['train']}",
        f"a collage iteration takes {np.median(ratios):.3f}x a regular one (median over rounds; "
        f"quartiles {np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}): "
        f"{whole['difference_ms']:+.1f} ms",
        f"switching: a mixed block ({mixed_rate:.0%} collages, the kind changing at "
        f"{switches:.0%} of its iterations) takes {np.median(switching):.3f}x what its "
        f"iterations cost in the same round's regular and collage blocks (median over rounds; "
        f"quartiles {np.percentile(switching, 25):.3f}-{np.percentile(switching, 75):.3f})",
        "a batch holds, on average (regular / collage): " + ", ".join(
            f"{c} {counts['regular'][c]:.1f} / {counts['collage'][c]:.1f}"
            for c in COUNTS[:3]),
        "DALI's threads ran {:.1f} / {:.1f} ms of CPU an iteration (regular / collage), making "
        "the next batches while the model trains on the same 2 cores".format(
            counts["regular"]["dali_cpu_ms"], counts["collage"]["dali_cpu_ms"]),
        "difference = collage - regular in the same round; low/high its quartiles"]
    columns = [("phase", "phase"), ("regular_ms", "regular ms"), ("collage_ms", "collage ms"),
               ("difference_ms", "difference ms"), ("difference_low", "low"),
               ("difference_high", "high")]
    path = write_results(args.name, table, columns,
                         {"rounds": args.rounds, "warmup": args.warmup, "counts": counts,
                          "ratio_median": float(np.median(ratios)),
                          "ratios": [float(r) for r in ratios],
                          "switching": [float(r) for r in switching],
                          "mixed_collage_rate": mixed_rate, "mixed_switch_rate": switches},
                         notes,
                         results_dir=args.results_dir, script=__file__, argv=argv)
    print(open(path).read())
    return path


if __name__ == "__main__":
    main()
