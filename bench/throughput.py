"""DALI vs CPU collage, side by side: the figures that matter to a trainer's data loading.

Variants, on the same data and cores, in one run: each (variant, collage fraction) in a fresh
process of its own, the variants taking turns at every fraction:
  detectron2   build_detection_train_loader + DatasetMapper (ResizeShortestEdge + RandomFlip),
               N workers: regular batches only, whatever the fraction (the baseline everyone has)
  stitcher     the same loader plus the original Stitcher collage on the CPU (normalize, pad,
               F.interpolate nearest 1/2 of k*B images into the quadrants, boxes scaled and
               offset) on the collage iterations, which consume k batches of the loader
  dst_cpu      DSTLoader on DALI's CPU backend (CollageStitch), same collage iterations
  dst_gpu      DSTLoader with mixed decode + the CUDA kernel: only where a GPU exists,
               otherwise reported as "not run" (never estimated)
  builtins_cpu the same batches from DALI's own operators (decode, fn.resize, fn.flip,
  builtins_gpu fn.multi_paste; sizes, anchors and boxes on the host): the peer a DALI user
               would pick; the _gpu one only where a GPU exists (make gpu-check runs it)
  decode_only  DALI reading + decoding alone (the reference for a collage sample's CPU cost)
  ultralytics  Ultralytics YOLO's own train loader (its default mosaic; _no_mosaic: without it)
               over the same images in YOLO form, --workers workers, imgsz square batches
  dst_ultralytics  DSTLoader(output="ultralytics") there, as DSTDetectionTrainer builds it
Collage iterations: a fixed fraction (--fractions, spread evenly) or the decisions a
FeedbackController makes over a recorded r sequence (--controller FILE). The CPU cost of a
regular and of a collage sample is read from the all-regular (0) and all-collage (1) runs; each
over the CPU of decoding its images is the median, with its range, of --ratio-rounds
back-to-back pairs of runs (DSTLoader, decode_only).
Where each variant's CPU goes: DSTLoader's steps from CollageStitch's own CPU accounting,
Stitcher's collage step timed around it, detectron2's mapper steps from a profile of the
mapper in a process of its own (profile_detectron2_mapper), decode from decode_only.

    python -m bench.throughput                 # ~2.5 min on 2 cores
    python -m bench.throughput --quick         # smoke run (tests)
    python -m bench.throughput --variants ultralytics ultralytics_no_mosaic dst_ultralytics \
        --batch 16 --iterations 40 --name throughput_yolo [--yolo-images 2048]  # the YOLO row
"""
import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see collage_op.py
from .common import COCO128, RESULTS, ROOT, threads_cpu, write_results
from .loaders import detectron2_mapper, variant_builders, yolo_data


class ProcessTree:
    """CPU seconds (threads_cpu) and RSS of this process and all its children (loader
    workers)."""

    def __init__(self):
        import psutil
        self.root = psutil.Process()

    def _procs(self):
        import psutil
        try:
            return [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return [self.root]

    def cpu(self) -> float:
        return sum(threads_cpu(p.pid) for p in self._procs())

    def rss(self) -> int:
        import psutil
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total


def collage_pattern(fraction: float, n: int):
    """n kinds with exactly round(fraction * n) collages, spread evenly."""
    return ["collage" if int((i + 1) * fraction) > int(i * fraction) else "regular"
            for i in range(n)]


def replayed_pattern(path: str, n: int, tau: float):
    """The kinds a FeedbackController chooses over a recorded r sequence: a JSON list of r
    values (null for no evidence), or a dst_state .pth written by train_dali.py."""
    from dst_dali import FeedbackController
    if path.endswith(".pth"):
        import torch
        shares = [h["share"] for h in torch.load(path, weights_only=False)["history"]]
    else:
        with open(path) as f:
            shares = json.load(f)
    ctrl = FeedbackController(tau)
    kinds = []
    for i in range(n):
        kinds.append("collage" if ctrl.wants_collage() else "regular")
        r = shares[i % len(shares)]
        ctrl.observe(0.0, 0.0) if r is None else ctrl.observe(r, 1.0)
    return kinds


# -- the loaders under test: bench/loaders.py

def profile_detectron2_mapper(args, n: int) -> dict:
    """CPU seconds of the steps of detectron2's DatasetMapper over n images, in this process
    (no workers): reading + JPEG decode (read_image), the augmentations (resize + flip), the
    annotations (to Instances), and the rest of the mapper (tensor conversion, copies)."""
    from detectron2.data import dataset_mapper
    dicts, mapper = detectron2_mapper(args)
    steps = {"decode": 0.0, "resize_flip": 0.0, "annotations": 0.0}

    def timed(step, f):
        def run(*a, **kw):
            t = time.process_time()
            try:
                return f(*a, **kw)
            finally:
                steps[step] += time.process_time() - t
        return run

    utils = dataset_mapper.utils  # the mapper calls utils.read_image at call time
    read_image = utils.read_image
    utils.read_image = timed("decode", read_image)
    mapper.augmentations = timed("resize_flip", mapper.augmentations)
    mapper._transform_annotations = timed("annotations", mapper._transform_annotations)
    try:
        t = time.process_time()
        for i in range(n):
            mapper(dicts[i % len(dicts)])  # it deep-copies the dict itself, as in training
        total = time.process_time() - t
    finally:
        utils.read_image = read_image
    return {"images": n, "total_s": total, **steps,
            "rest_of_mapper": total - sum(steps.values())}


# -- measuring --------------------------------------------------------------------------------

def run_one(args, variant: str, kinds, warmup: int, counted=contextlib.nullcontext) -> dict:
    """Runs one variant over `kinds` in this process: per iteration the wall time of
    next_batch (what detectron2 logs as data_time), its kind, samples and images; over the
    whole loop the process tree's CPU, and the peak RSS. The loop runs inside `counted()`."""
    v = variant_builders(args)[variant]()  # only this one: no other loader's workers around
    tree = ProcessTree()
    for kind in ("regular", "collage") * warmup:
        v.next_batch(kind)
    rows, peak = [], tree.rss()
    op_stats = getattr(v, "op_stats", None)
    ops0 = op_stats() if op_stats else None
    c0, t0, m0 = tree.cpu(), time.perf_counter(), time.thread_time()
    with counted():
        for i, kind in enumerate(kinds):
            t = time.perf_counter()
            samples, images, collage_s = v.next_batch(kind)
            rows.append(dict(kind=kind, wall=time.perf_counter() - t, samples=samples,
                             images=images, collage_s=collage_s))
            if i % 10 == 9:  # walking /proc costs the loop; every 10th iteration finds the peak
                peak = max(peak, tree.rss())
    return {"rows": rows, "wall": time.perf_counter() - t0, "cpu": tree.cpu() - c0,
            "main_thread_cpu": time.thread_time() - m0, "peak_rss": peak,
            "op_stats": op_stats(ops0) if op_stats else None}


def run_in_child(argv, variant, fraction, kinds) -> dict:
    """One (variant, fraction) in a fresh process: nothing else's threads or workers run."""
    import subprocess
    cmd = [sys.executable, "-m", __spec__.name, *argv, "--child", variant,
           "--child-kinds", ",".join(k[0] for k in kinds)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{variant} at fraction {fraction} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


COUNTED_RUNS = (("dst_cpu", 0.0), ("dst_cpu", 1.0), ("decode_only", 0.0))


def instruction_counts(argv, args) -> dict:
    """Instructions a regular sample, a collage sample and a decoded image (the loops of
    COUNTED_RUNS, each in a child under callgrind, summed over all its threads), and the two
    ratios the CPU goals are about; repeatable where CPU times drift."""
    from dst_dali.op.plugin import plugin_path

    from . import callgrind
    plugin = os.path.basename(plugin_path())
    with open(args.annotations) as f:
        n_images = len(json.load(f)["images"])
    # a regular loop and decode_only read every image once, a collage loop k times: the
    # counts are of the same images (a shorter loop under --quick)
    iterations = args.iterations if args.quick else n_images // args.batch
    counts = {"iterations": iterations}
    for variant, fraction in COUNTED_RUNS:
        kinds = collage_pattern(fraction, iterations)
        print(f"callgrind: {variant} at fraction {fraction:g} ...", flush=True)
        c = callgrind.run(["-m", __spec__.name, *argv, "--child", variant,
                           "--child-kinds", ",".join(k[0] for k in kinds), "--child-counted"])
        samples = len(kinds) * args.batch
        counts["decoded_image" if variant == "decode_only" else f"{kinds[0]}_sample"] = {
            "instructions": c["total"] / samples,
            "in_collage_stitch": c["by_object"].get(plugin, 0) / samples,
            "by_object": {name: n / samples for name, n in c["by_object"].items()}}
    image = counts["decoded_image"]["instructions"]
    counts["regular_vs_decode"] = counts["regular_sample"]["instructions"] / image
    counts["collage_vs_decode"] = counts["collage_sample"]["instructions"] / (args.k * image)
    return counts


# loaders that make the same batches whatever the kind asked for
KIND_BLIND = ("detectron2", "decode_only", "ultralytics", "ultralytics_no_mosaic")


def summarize(name, run, fraction, k):
    rows, wall, cpu = run["rows"], run["wall"], run["cpu"]
    samples = sum(r["samples"] for r in rows)
    out = {"variant": name, "fraction": fraction, "iterations": len(rows),
           "samples_per_s": samples / wall, "images_per_s": sum(r["images"] for r in rows) / wall,
           "cpu_s_per_sample": cpu / samples, "main_thread_cpu_share": run["main_thread_cpu"] / cpu,
           "peak_rss_mb": run["peak_rss"] / 2**20}
    dt = np.array([r["wall"] for r in rows]) * 1000
    out.update(data_ms_p50=float(np.percentile(dt, 50)), data_ms_p95=float(np.percentile(dt, 95)),
               data_ms_max=float(dt.max()))
    for kind in ("regular", "collage"):
        mine = [r for r in rows if r["kind"] == kind]
        if mine and not (name in KIND_BLIND and kind == "collage"):
            out[f"{kind}_data_ms_p50"] = float(np.median([r["wall"] for r in mine]) * 1000)
    steps = [r["collage_s"] for r in rows if r["collage_s"]]
    if steps:
        out["collage_step_cpu_ms_per_batch"] = 1000 * float(np.mean(steps))
        out["collage_step_cpu_share"] = sum(steps) / cpu
    if run.get("op_stats"):  # JSON made the k keys strings
        ops = {int(kk): v for kk, v in run["op_stats"].items()}
        kinds = {r["kind"] for r in rows}
        for kk, kind in ((k, "collage"), (1, "regular")):
            # a pipeline also prefetches in a loop that takes none of its batches: not counted
            if kind in kinds and ops.get(kk, {}).get("batches"):
                out[f"{kind}_step_cpu_ms_per_batch"] = 1000 * ops[kk]["cpu_s"] / ops[kk]["batches"]
        out["op_cpu_share"] = sum(v["cpu_s"] for v in ops.values()) / cpu
    return out


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['variant']}\nf={r['fraction']:g}" for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, len(rows) * 0.9), 4))
    a.bar(labels, [r["samples_per_s"] for r in rows], color="tab:blue")
    a.set_ylabel("output samples / s")
    b.bar(labels, [r["cpu_s_per_sample"] * 1000 for r in rows], color="tab:orange")
    b.set_ylabel("CPU ms / output sample (process tree)")
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=7, rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=os.path.join(COCO128, "images"))
    ap.add_argument("--annotations", default=os.path.join(COCO128, "instances.json"))
    ap.add_argument("--batch", type=int, default=2, help="images a regular batch (B)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--min-size", type=int, nargs="+", default=[640, 672, 704, 736, 768, 800])
    ap.add_argument("--max-size", type=int, default=1333)
    ap.add_argument("--workers", type=int, default=2, help="detectron2 loader workers")
    ap.add_argument("--threads", type=int, default=2, help="DALI CPU threads of a kind")
    ap.add_argument("--pipelines", type=int,
                    help="DALI pipelines of a kind (default: DSTLoader's, 2 on the CPU)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--controller", help="replay the decisions over a recorded r sequence")
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--iterations", type=int, default=80, help="measured iterations a fraction")
    ap.add_argument("--variants", nargs="+",
                    default=["detectron2", "stitcher", "dst_cpu", "dst_gpu", "decode_only"])
    ap.add_argument("--ratio-rounds", type=int, default=5,
                    help="rounds of (DSTLoader, decode_only) runs back to back, all-regular and "
                         "all-collage, for the CPU ratios (the table's pairs count as rounds)")
    ap.add_argument("--yolo-data", help="the YOLO variants' data yaml (default: data/coco128 in "
                                        "YOLO form, made by tools/coco_to_yolo.py)")
    ap.add_argument("--yolo-images", type=int,
                    help="the YOLO variants on coco128 repeated to this many image files")
    ap.add_argument("--imgsz", type=int, default=640, help="the YOLO variants' square size")
    ap.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count the instructions of a regular sample, a collage sample and "
                         "a decoded image (valgrind; a few minutes)")
    ap.add_argument("--name", default="throughput")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-kinds", help=argparse.SUPPRESS)
    ap.add_argument("--child-counted", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.iterations, args.fractions, args.ratio_rounds = 6, [0.5], 1
    if any("ultralytics" in v for v in args.variants):
        args.yolo_data = yolo_data(args)
    return args


RATIO_PAIR = ("dst_cpu", "decode_only")
RATIO_FRACTIONS = (0.0, 1.0)  # a regular sample, a collage sample


def planned_runs(args):
    """(fraction, kinds, variant, use) of every child process: the table's runs, then the
    extra rounds of the CPU ratios' pairs. The ratios compare two processes' CPU, which drifts
    by several % between runs on a shared machine: pairs run back to back, and each ratio is
    the median over its rounds, reported with its spread."""
    available = set(variant_builders(args))
    plans = ([("replay", replayed_pattern(args.controller, args.iterations, args.tau))]
             if args.controller else
             [(f, collage_pattern(f, args.iterations)) for f in args.fractions])
    runs = [(f, kinds, v, "table") for f, kinds in plans for v in args.variants
            if v in available]
    if not set(RATIO_PAIR) <= available or not set(RATIO_PAIR) <= set(args.variants):
        return runs
    for f in RATIO_FRACTIONS:
        in_table = f in args.fractions and not args.controller
        for _ in range(max(0, args.ratio_rounds - in_table)):
            runs += [(f, collage_pattern(f, args.iterations), v, "ratio") for v in RATIO_PAIR]
    return runs


COLUMNS = [("variant", "variant"), ("fraction", "collage fraction"),
           ("samples_per_s", "samples/s"), ("images_per_s", "decoded images/s"),
           ("cpu_s_per_sample", "CPU s/sample"), ("data_ms_p50", "data ms p50"),
           ("data_ms_p95", "p95"), ("data_ms_max", "max"),
           ("regular_data_ms_p50", "regular data ms p50"),
           ("collage_data_ms_p50", "collage data ms p50"),
           ("collage_step_cpu_ms_per_batch", "collage step CPU ms/batch"),
           ("regular_step_cpu_ms_per_batch", "resize step CPU ms/batch"),
           ("peak_rss_mb", "peak RSS MB"), ("note", "note")]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    warmup = 1 if args.quick else 4
    if args.child == "mapper_profile":
        print(json.dumps(profile_detectron2_mapper(args, 8 if args.quick else 64)))
        return None
    if args.child:
        kinds = ["collage" if c == "c" else "regular" for c in args.child_kinds.split(",")]
        if args.child_counted:
            from . import callgrind
            run_one(args, args.child, kinds, warmup, counted=callgrind.counted)
        else:
            print(json.dumps(run_one(args, args.child, kinds, warmup)))
        return None

    from tqdm import tqdm
    rows, ratio_rows = [], []
    for fraction, kinds, variant, use in tqdm(planned_runs(args), unit="run",
                                              desc="runs (one process each)"):
        run = run_in_child(argv, variant, fraction, kinds)
        row = summarize(variant, run, kinds.count("collage") / len(kinds), args.k)
        (rows if use == "table" else ratio_rows).append(row)
    mapper = (run_in_child(argv, "mapper_profile", None, ["regular"])
              if "detectron2" in args.variants else None)
    available = set(variant_builders(args))
    rows += [{"variant": v, "fraction": None, "note": "not run: no GPU"}
             for v in args.variants if v not in available]

    measured = [r for r in rows if "samples_per_s" in r]
    ratios = cpu_ratios(measured, ratio_rows, args.k)
    speedups = regular_vs_detectron2(measured, ratio_rows)
    counts = (instruction_counts([a for a in argv if a != "--callgrind"], args)
              if args.callgrind else None)
    notes = (goal_notes(measured, ratios, speedups, args) + count_notes(counts, args.k)
             + cpu_breakdown(measured, mapper, args.k))
    from dst_dali.loader import default_pipelines
    meta = {"batch": args.batch, "k": args.k, "workers": args.workers, "threads": args.threads,
            "pipelines": args.pipelines or default_pipelines("cpu", args.threads),
            "iterations": args.iterations, "warmup": warmup, "data": args.annotations,
            "yolo_data": args.yolo_data and os.path.relpath(args.yolo_data, ROOT),
            "imgsz": args.imgsz,
            "detectron2_mapper_profile": mapper, "cpu_ratios": ratios,
            "regular_vs_detectron2": speedups,
            "instructions": counts}
    path = write_results(args.name, rows, COLUMNS, meta, notes, results_dir=args.results_dir,
                         script=__file__, argv=argv)
    chart(measured, os.path.join(args.results_dir, args.name + ".png"))
    print(open(path).read())
    return path


def decode_cost(rows, fraction):
    """CPU seconds of decoding one image: decode_only's run in the same round as `fraction`
    (the runs next to each other in time share the machine's drift), else the median of its
    runs; None without any."""
    runs = {r["fraction"]: r["cpu_s_per_sample"] for r in rows if r["variant"] == "decode_only"}
    if fraction in runs:
        return runs[fraction]
    return float(np.median(list(runs.values()))) if runs else None


def cpu_breakdown(rows, mapper, k):
    """Which step dominates each variant: shares of its loop's process-tree CPU. Decode is
    decode_only's CPU per image (same round) times the images decoded; CollageStitch and the
    Stitcher step time themselves; detectron2's mapper steps come from
    profile_detectron2_mapper."""
    lines = []

    def line(name, parts, rest):
        parts = parts + [(rest, 1 - sum(v for _, v in parts))]
        lines.append(f"Where the CPU goes, {name}: " +
                     ", ".join(f"{label} {v:.0%}" for label, v in parts))

    d2 = next((r for r in rows if r["variant"] == "detectron2"), None)
    if d2 and mapper:
        per = d2["cpu_s_per_sample"] * mapper["images"]  # the loop's CPU for as many samples
        line("detectron2's loader",
             [(f"JPEG decode ({mapper['decode'] / mapper['images'] * 1000:.1f} ms an image)",
               mapper["decode"] / per),
              ("resize + flip", mapper["resize_flip"] / per),
              ("annotations", mapper["annotations"] / per),
              ("rest of the mapper", mapper["rest_of_mapper"] / per)],
             "workers, IPC, batching")
    for r in rows:
        f = r["fraction"]
        if r["variant"] == "dst_cpu" and "op_cpu_share" in r:
            # all measured in the run itself: the operator's accounting, the main thread's
            # CPU, and the rest of the process (DALI's threads), of which decode_only's
            # CPU per image (a run of its own, so only an estimate) says how much is decode
            step = {0.0: "CollageStitch k=1 (fused resize)",
                    1.0: f"CollageStitch k={k} (collage)"}.get(f, "CollageStitch")
            line(f"DSTLoader (fraction {f:g})",
                 [(step, r["op_cpu_share"]),
                  ("the main thread (Python: detectron2 structures; DALI's outputs)",
                   r["main_thread_cpu_share"])],
                 "DALI's reader, JPEG decode and executor")
            dec = decode_cost(rows, f)
            if dec:
                images_per_sample = r["images_per_s"] / r["samples_per_s"]
                lines[-1] += (f" (decode_only's CPU per image puts decode at "
                              f"{images_per_sample * dec / r['cpu_s_per_sample']:.0%})")
        if r["variant"] == "stitcher" and "collage_step_cpu_share" in r:
            line(f"the Stitcher way (fraction {f:g})",
                 [("its collage step", r["collage_step_cpu_share"])],
                 f"detectron2's loader making {k}x the images")
    return lines


def cpu_ratios(rows, ratio_rows, k):
    """A regular sample's CPU over that of decoding its image, and a collage sample's over
    that of decoding its k images: one value a round, DSTLoader at fraction 0 or 1 over the
    decode_only run next to it (the table's pair first, then the extra rounds)."""
    out = {}
    for f in RATIO_FRACTIONS:
        images = k if f == 1.0 else 1
        by = {r["variant"]: r for r in rows if r["fraction"] == f}
        pairs = [(by["dst_cpu"], by["decode_only"])] if set(RATIO_PAIR) <= set(by) else []
        extra = [r for r in ratio_rows if r["fraction"] == f]
        pairs += list(zip(extra[0::2], extra[1::2]))
        if pairs:
            out[f] = [d["cpu_s_per_sample"] / (images * dec["cpu_s_per_sample"])
                      for d, dec in pairs]
    return out


def regular_vs_detectron2(rows, ratio_rows):
    """Each all-regular DSTLoader run's samples/s (the table's and the CPU ratios' rounds) over
    the median of detectron2's runs (it makes regular batches at every fraction)."""
    d2 = [r["samples_per_s"] for r in rows if r["variant"] == "detectron2"]
    regular = [r["samples_per_s"] for r in rows + ratio_rows
               if r["variant"] == "dst_cpu" and r["fraction"] == 0.0]
    return [s / float(np.median(d2)) for s in regular] if d2 else []


def spread(values):
    return (f"{float(np.median(values)):.2f}x, the median of {len(values)} rounds (range "
            f"{min(values):.2f}-{max(values):.2f})")


def goal_notes(rows, ratios, speedups, args):
    by = {(r["variant"], r["fraction"]): r for r in rows}
    notes = ["Each variant runs in a process of its own after a warm-up. samples/s and CPU "
             "s/sample are over its measured loop; CPU is user+sys of the whole process tree "
             "(loader workers and DALI threads included), from /proc schedstat. Every loader "
             "starts the loop with its prefetch queues full (detectron2: workers x 2 batches, "
             "DALI: 2 batches a pipeline), a head start of a few batches over the loop.",
             "data ms: the wait a trainer sees in next() (detectron2's data_time). The CPU of a "
             "regular or a collage sample: CPU s/sample at fraction 0 or 1.",
             "decode_only decodes without resizing: its CPU s/sample is the CPU of decoding one "
             "image.",
             "DSTLoader's collage step runs on DALI's threads, ahead of next(): its CPU is "
             "CollageStitch's own accounting (dst_dali.host_cpu_stats: thread CPU of its "
             "planning and pixel tasks) over the loop, per batch it made."]
    # detectron2's variant makes regular batches at every fraction: the median of its runs
    d2 = [r["samples_per_s"] for r in rows if r["variant"] == "detectron2"]
    if speedups:
        notes.append(f"goal DSTLoader regular >= 4x detectron2's loader (median of its "
                     f"{len(d2)} runs, {float(np.median(d2)):.0f} samples/s): "
                     f"{spread(speedups)}, each of DSTLoader's all-regular runs (the table's "
                     "and the CPU ratios' rounds) over it")
    if 0.0 in ratios:
        notes.append(f"goal a regular sample <= 1.6x the CPU of decoding its image: "
                     f"{spread(ratios[0.0])}, each DSTLoader at fraction 0 over the decode_only "
                     "run next to it")
    if 1.0 in ratios:
        notes.append(f"goal a collage sample <= 1.05x the CPU of decoding its {args.k} images: "
                     f"{spread(ratios[1.0])}, each DSTLoader at fraction 1 over the decode_only "
                     "run next to it")
    half_st, half_dst = by.get(("stitcher", 0.5)), by.get(("dst_cpu", 0.5))
    if half_st and half_dst:
        notes.append(f"goal at collage fraction 0.5 >= 4x the Stitcher way's samples/s: "
                     f"{half_dst['samples_per_s'] / half_st['samples_per_s']:.2f}x")
    return notes + yolo_notes(rows, args)


def yolo_notes(rows, args) -> list:
    """DSTLoader(output="ultralytics") over Ultralytics' own train loader, samples/s, at each
    fraction; Ultralytics' loaders make the same batches at every fraction: the median of
    their runs."""
    dst = {r["fraction"]: r["samples_per_s"] for r in rows if r["variant"] == "dst_ultralytics"}
    theirs = {v: [r["samples_per_s"] for r in rows if r["variant"] == v]
              for v in ("ultralytics", "ultralytics_no_mosaic")}
    theirs = {v: float(np.median(s)) for v, s in theirs.items() if s}
    if not dst or not theirs:
        return []
    label = {"ultralytics": "its default loader (mosaic)",
             "ultralytics_no_mosaic": "its loader without mosaic"}
    data = os.path.relpath(args.yolo_data, ROOT)
    return [f"YOLO: DSTLoader(output='ultralytics') over Ultralytics' own train loader, samples/s "
            f"at imgsz {args.imgsz}, batch {args.batch}, its {args.workers} workers against "
            f"{args.threads} DALI threads, on {data}: " + "; ".join(
                f"collage fraction {f:g}: " + ", ".join(
                    f"{s / theirs[v]:.2f}x {label[v]} ({theirs[v]:.1f}/s)" for v in theirs)
                for f, s in sorted(dst.items()))]


def count_notes(counts, k):
    if not counts:
        return []
    reg, col, img = counts["regular_sample"], counts["collage_sample"], counts["decoded_image"]
    return [f"instructions (callgrind, every thread of the loop): a regular sample "
            f"{reg['instructions'] / 1e6:.1f} M ({reg['in_collage_stitch'] / 1e6:.1f} M in "
            f"CollageStitch), a collage sample {col['instructions'] / 1e6:.1f} M "
            f"({col['in_collage_stitch'] / 1e6:.1f} M in CollageStitch), a decoded image "
            f"{img['instructions'] / 1e6:.1f} M: a regular sample = "
            f"{counts['regular_vs_decode']:.3f}x the decode of its image, a collage sample = "
            f"{counts['collage_vs_decode']:.3f}x the decode of its {k} images",
            "a collage sample's instructions beyond the decode of its images, by library: " +
            ", ".join(f"{name} {n / 1e6:+.2f} M" for name, n in beyond_decode(col, img, k)[:6])]


def beyond_decode(sample: dict, image: dict, k: int) -> list:
    """(library, instructions a sample runs in it minus k decoded images' do), largest first."""
    names = sample["by_object"].keys() | image["by_object"].keys()
    extra = {n: sample["by_object"].get(n, 0) - k * image["by_object"].get(n, 0) for n in names}
    return sorted(extra.items(), key=lambda item: -abs(item[1]))


if __name__ == "__main__":
    main()
