"""Microbench of the collage step alone: CollageStitch vs the ways it is done elsewhere.

On the coco128 images (decoded once, in memory), k = 4 images a collage, regular short side 800
and long side cap 1333 (detectron2's defaults), so each component lands at half that size:
  ours        CollageStitch, CPU backend, in a DALI pipeline (its per-iteration overhead included)
  stitcher    the original Stitcher code's way: torch F.interpolate(scale 0.5, "nearest") of the
              4 regular-size images in the padded batch, pasted into the quadrants (uint8 and
              float32, the latter being what Stitcher runs on)
  dali        DALI built-ins: fn.resize (nearest, no antialias) + fn.multi_paste
  opencv      cv2.resize(INTER_NEAREST) of each decoded image to its cell size + numpy paste
  memcpy      copying the collage's bytes: the floor for anything that writes them
Each at 1 thread, then 2; methods interleaved in every repeat to share the machine's noise.

    python -m bench.collage_op            # ~1 min on 2 cores
    python -m bench.collage_op --k 1 --name resize_op   # the regular path: bilinear + flip
    python -m bench.collage_op --quick    # smoke run (tests)
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

# Idle OpenMP workers (torch's) spin for a while after each call and would steal a core from
# whichever method runs next in the interleaved rounds; let them sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from .common import (  # noqa: E402
    COCO128,
    PIXEL_MEAN,
    PIXEL_STD,
    RESULTS,
    load_images,
    median,
    stitcher_collage,
    time_call,
    write_results,
)


def build_ours(groups, batch, threads, short_side, max_size):
    """A pipeline whose iteration stitches `batch` collages; returns (run, placements, shapes)."""
    from nvidia.dali import fn, pipeline_def

    import dst_dali
    k = len(groups[0])
    batches = [groups[i:i + batch] for i in range(0, len(groups), batch)]

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, prefetch_queue_depth=1,
                  exec_dynamic=True)
    def pipe():
        images = [fn.external_source(name=f"c{j}", layout="HWC", no_copy=True) for j in range(k)]
        # k = 1 is the regular path: detectron2's bilinear resize, here with a flip
        out = dst_dali.collage_stitch(images, short_side=short_side, max_size=max_size,
                                      **(dict(interp="linear", flip=1) if k == 1 else {}))
        # Only small outputs leave the pipeline: returning the collages would add a copy of
        # every byte to the measurement (the same holds for the built-ins below).
        return out.image.shape(), out.placement

    p = pipe()
    p.build()

    def run_batch(b):
        for j in range(k):
            p.feed_input(f"c{j}", [g[j] for g in batches[b]])
        return p.run()

    placements, shapes = [], []
    for b in range(len(batches)):
        img, place = run_batch(b)
        placements += [np.array(place[i]) for i in range(len(batches[b]))]
        shapes += [tuple(int(v) for v in np.array(img[i])) for i in range(len(batches[b]))]

    def run_all():
        for b in range(len(batches)):
            run_batch(b)
    return run_all, placements, shapes


def build_dali_builtins(groups, placements, shapes, batch, threads):
    """fn.resize (NN) of the k*batch components + fn.multi_paste into `batch` canvases.
    DALI keeps one batch size through a pipeline, so the k*batch - batch spare outputs are
    1x1 canvases (a negligible cost)."""
    from nvidia.dali import fn, pipeline_def, types
    k = len(groups[0])
    kb = k * batch

    @pipeline_def(batch_size=kb, num_threads=threads, device_id=None, prefetch_queue_depth=1,
                  exec_dynamic=True)
    def pipe():
        images = fn.external_source(name="img", layout="HWC", no_copy=True)
        size = fn.external_source(name="size")
        ids = fn.external_source(name="ids")
        anchors = fn.external_source(name="anchors")
        out_size = fn.external_source(name="out_size")
        small = fn.resize(images, size=size, interp_type=types.INTERP_NN, antialias=False)
        return fn.multi_paste(small, in_ids=ids, out_anchors=anchors,
                              output_size=out_size).shape()

    p = pipe()
    p.build()
    feeds = []
    for start in range(0, len(groups), batch):
        idx = range(start, min(start + batch, len(groups)))
        imgs, sizes, ids, anchors, out_sizes = [], [], [], [], []
        for slot, g in enumerate(idx):
            imgs += groups[g]
            sizes += [np.array(placements[g][j][2:], np.float32) for j in range(k)]
            ids.append(np.arange(slot * k, slot * k + k, dtype=np.int32))
            anchors.append(placements[g][:, :2].astype(np.int32))
            out_sizes.append(np.array(shapes[g][:2], np.int32))
        while len(imgs) < kb:  # a partial last batch
            imgs.append(imgs[-1]), sizes.append(sizes[-1])
        while len(ids) < kb:
            ids.append(np.zeros(0, np.int32)), anchors.append(np.zeros((0, 2), np.int32))
            out_sizes.append(np.ones(2, np.int32))
        feeds.append(dict(img=imgs, size=sizes, ids=ids, anchors=anchors, out_size=out_sizes))

    def run_all():
        for f in feeds:
            for name, data in f.items():
                p.feed_input(name, data)
            p.run()
    return run_all


def regular_images(group, placements, n):
    """Each component at its regular size (what Stitcher's DataLoader already made)."""
    import cv2
    return [cv2.resize(img, (int(p[3]) * n, int(p[2]) * n), interpolation=cv2.INTER_LINEAR)
            for img, p in zip(group, placements)]


def build_stitcher(groups, placements, threads, dtype):
    """The original Stitcher collage (common.stitcher_collage) of each group's regular-size
    images, padded into one batch, as uint8 or normalized float32."""
    import torch
    k = len(groups[0])
    n = int(round(k ** 0.5))
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    batches = []
    for g, group in enumerate(groups):
        regs = regular_images(group, placements[g], n)
        H = max(r.shape[0] for r in regs)
        W = max(r.shape[1] for r in regs)
        t = torch.zeros((k, 3, H, W), dtype=torch.uint8)
        for j, r in enumerate(regs):
            t[j, :, :r.shape[0], :r.shape[1]] = torch.from_numpy(r).permute(2, 0, 1)
        batches.append((t.float() - mean) / std if dtype == "float32" else t)

    def run_all():
        torch.set_num_threads(threads)
        for t in batches:
            stitcher_collage(t, k)
    return run_all


def build_opencv(groups, placements, shapes, threads):
    import cv2
    k = len(groups[0])

    def collage(g):
        if k == 1:  # the regular path: bilinear resize + flip
            h, w = shapes[g][:2]
            return cv2.flip(cv2.resize(groups[g][0], (w, h), interpolation=cv2.INTER_LINEAR), 1)
        canvas = np.zeros(shapes[g], np.uint8)
        for j in range(k):
            y0, x0, h, w = (int(v) for v in placements[g][j])
            canvas[y0:y0 + h, x0:x0 + w] = cv2.resize(groups[g][j], (w, h),
                                                      interpolation=cv2.INTER_NEAREST)
        return canvas
    pool = ThreadPoolExecutor(threads)

    def run_all():
        cv2.setNumThreads(1)
        list(pool.map(collage, range(len(groups))))
    return run_all


def build_memcpy(shapes, threads):
    srcs = [np.random.default_rng(0).integers(0, 255, s, dtype=np.uint8) for s in shapes]
    dsts = [np.empty_like(s) for s in srcs]
    pool = ThreadPoolExecutor(threads)

    def run_all():
        list(pool.map(lambda i: np.copyto(dsts[i], srcs[i]), range(len(srcs))))
    return run_all


def build_methods(args, groups, threads, only=None):
    """{(method, threads): run_all} at `threads` (`only`: those methods alone, and ours, whose
    placements the others need); also the placements and output shapes."""
    ours, placements, shapes = build_ours(groups, args.batch, threads, args.short_side,
                                          args.max_size)
    builders = {"ours": lambda: ours, "opencv": lambda: build_opencv(groups, placements, shapes,
                                                                     threads),
                "memcpy": lambda: build_memcpy(shapes, threads)}
    if args.k > 1:
        builders["dali_builtins"] = lambda: build_dali_builtins(groups, placements, shapes,
                                                                args.batch, threads)
        builders["stitcher_uint8"] = lambda: build_stitcher(groups, placements, threads, "uint8")
        builders["stitcher_float32"] = lambda: build_stitcher(groups, placements, threads,
                                                              "float32")
    order = ["ours", "dali_builtins", "stitcher_uint8", "stitcher_float32", "opencv", "memcpy"]
    methods = {(m, threads): builders[m]() for m in order
               if m in builders and (only is None or m in only)}
    return methods, placements, shapes


def count_child(args, groups):
    """Under callgrind: each of args.count_methods at 1 thread, in turn warmed up and then
    counted once, in a region of its own."""
    from . import callgrind
    names = args.count_methods.split(",")
    methods, _, _ = build_methods(args, groups, 1, only=names)
    for name in names:
        run = methods[(name, 1)]
        run()
        with callgrind.counted():
            run()


def instruction_counts(argv, groups, methods=("ours", "opencv", "memcpy")):
    """{method: {"total": Ir a collage, "plugin": Ir a collage in CollageStitch's own code}}
    at 1 thread, from one child of this bench under callgrind (DALI's start-up there takes
    seconds: once, not once a method)."""
    from dst_dali.op.plugin import plugin_path

    from . import callgrind
    plugin = os.path.basename(plugin_path())
    print(f"callgrind: {', '.join(methods)} ...", flush=True)
    regions = callgrind.run_regions(["-m", __spec__.name] + argv +
                                    ["--count-methods", ",".join(methods)], methods)
    return {m: {"total": c["total"] / len(groups),
                "plugin": c["by_object"].get(plugin, 0) / len(groups)}
            for m, c in regions.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=COCO128, help="COCO-style folder with images/")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--short-side", type=float, default=800)
    ap.add_argument("--max-size", type=float, default=1333)
    ap.add_argument("--batch", type=int, default=8, help="collages per DALI iteration")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="a few images, 1 repeat (smoke test)")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions at 1 thread (valgrind): ours, OpenCV, memcpy")
    ap.add_argument("--count-methods", help=argparse.SUPPRESS)  # the callgrind child
    ap.add_argument("--name", default="collage_op", help="results file name")
    ap.add_argument("--results-dir", default=RESULTS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, limit = 1, 4 * args.k
    else:
        limit = None
    from dst_dali.op.collage import check_k
    n = check_k(args.k)

    images = load_images(args.data, limit)
    groups = [images[i:i + args.k] for i in range(0, len(images) - args.k + 1, args.k)]
    if args.count_methods:
        return count_child(args, groups)
    print(f"{len(groups)} collages of k={args.k} from {len(images)} images of {args.data}")

    methods = {}
    for threads in args.threads:
        built, placements, shapes = build_methods(args, groups, threads)
        methods.update(built)
    out_bytes = sum(int(np.prod(s)) for s in shapes)
    counts = instruction_counts([a for a in argv if a != "--callgrind"], groups) \
        if args.callgrind else {}

    times = {m: [] for m in methods}
    for r in range(args.repeats):  # interleaved: every method once per round
        for m, run in methods.items():
            times[m] += time_call(run, repeats=1, warmup=1 if r == 0 else 0)
        print(f"round {r + 1}/{args.repeats} done", flush=True)

    rows = []
    for (name, threads), ts in times.items():
        t = median(ts)
        rows.append({"method": name, "threads": threads,
                     "ms_per_collage": 1000 * t / len(groups),
                     "output_GB_per_s": out_bytes / t / 1e9,
                     "min_ms_per_collage": 1000 * min(ts) / len(groups)})
    by = {(r["method"], r["threads"]): r for r in rows}
    for m, c in counts.items():
        by[(m, 1)]["M_instructions_per_collage"] = c["total"] / 1e6

    def ratios(threads):  # ours over OpenCV, round by round (the rounds are interleaved)
        return [a / b for a, b in zip(times[("ours", threads)], times[("opencv", threads)])]
    for r in rows:
        ours = by[("ours", r["threads"])]["ms_per_collage"]
        r["ours_speedup"] = r["ms_per_collage"] / ours
    notes = [f"{len(groups)} collages, k={args.k}, short side {args.short_side:g} (each "
             f"component at 1/{n} of it), max size {args.max_size:g}; mean output "
             f"{out_bytes / len(groups) / 1e6:.2f} MB a collage.",
             "ours_speedup = this method's time / CollageStitch's time at the same threads.",
             "Stitcher works on regular-size images its loader already resized; the others "
             "start from the decoded images. No GPU was used (not run on a GPU)."]
    for threads in args.threads:
        o = by[("ours", threads)]
        if args.k == 1:
            ocv = by[("opencv", threads)]
            notes.append(
                f"{threads} thread(s): CollageStitch k=1 (bilinear resize + flip) "
                f"{o['ms_per_collage']:.2f} ms an image, cv2.resize(INTER_LINEAR) + cv2.flip "
                f"{ocv['ms_per_collage']:.2f} ms: ours takes {1 / ocv['ours_speedup']:.2f}x "
                f"OpenCV's time (goal <= 1; rounds {', '.join(f'{x:.2f}' for x in ratios(threads))})")
            continue
        notes.append(
            f"{threads} thread(s): ours {o['ms_per_collage']:.2f} ms/collage = "
            f"{by[('stitcher_uint8', threads)]['ours_speedup']:.1f}x faster than Stitcher uint8, "
            f"{by[('stitcher_float32', threads)]['ours_speedup']:.1f}x than Stitcher "
            f"float32, {by[('opencv', threads)]['ours_speedup']:.1f}x than OpenCV, "
            f"{o['output_GB_per_s'] / by[('memcpy', threads)]['output_GB_per_s']:.0%} of memcpy "
            f"GB/s")
    if counts:
        o, ocv, cp = counts["ours"], counts["opencv"], counts["memcpy"]
        notes.append(
            f"instructions {'a collage' if args.k > 1 else 'an image'} at 1 thread (callgrind; "
            f"repeatable, unlike the times): ours {o['total'] / 1e6:.1f} M, of which "
            f"{o['plugin'] / 1e6:.1f} M in CollageStitch's own code (the rest: DALI's executor "
            f"and the feed); OpenCV {ocv['total'] / 1e6:.1f} M "
            f"(ours/OpenCV {o['total'] / ocv['total']:.2f}); memcpy of the output "
            f"{cp['total'] / 1e6:.1f} M")
    columns = [("method", "method"), ("threads", "threads"), ("ms_per_collage", "ms / collage"),
               ("min_ms_per_collage", "best ms / collage"), ("output_GB_per_s", "output GB/s"),
               ("ours_speedup", "time vs ours")]
    if counts:
        columns.append(("M_instructions_per_collage", "M instructions / collage"))
    path = write_results(args.name, rows, columns,
                         {"k": args.k, "collages": len(groups), "repeats": args.repeats,
                          "short_side": args.short_side, "max_size": args.max_size,
                          "output_bytes_per_collage": out_bytes / len(groups),
                          "instructions_per_collage": counts}, notes,
                         results_dir=args.results_dir,
                         script=__file__, argv=argv)
    print(open(path).read())
    return path


if __name__ == "__main__":
    main()
