"""Does DST help small objects, and what does it cost? DST against its controls on a
scale-skewed detection set, trained from scratch on the CPU.

The set (made here from a seed, nothing downloaded): objects of 5 coco128 classes cut out by
their polygons and pasted at controlled sizes onto blurred coco128 backgrounds, 192 x 192
images. In training images small objects (box area < 32² px, COCO's threshold; the images are
trained and tested at their own size) are scarce; in validation images they are common. Every
arm trains the same detector (bench/accuracy.yaml) for the same iterations and schedule:

    baseline          regular batches only (DST.ENABLED False)
    always_collage    collages only
    random            a collage with probability 0.5
    feedback          DST: r <= tau = 0.1, per-rank decisions (one process here)
    feedback_tau      DST with tau calibrated from a 100-iteration regular warm-up (median r)

Then bench/iteration_cost.py on the same detector and data gives the time a collage iteration
costs over a regular one, side by side in one process: each arm's paired overhead.

    python bench/accuracy.py [--seeds 3] [--iters 500]      # about 40 minutes on 2 cores
    python bench/accuracy.py --quick                          # a tiny run: the output's form

Writes bench/results/accuracy.{json,md,png} (--results-dir, --name).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import COCO128, RESULTS, write_results  # noqa: E402

CONFIG = os.path.join(ROOT, "bench", "accuracy.yaml")
CLASSES = ("person", "chair", "bowl", "teddy bear", "donut")
SIZE = 192
# longest side of a pasted object (px), as (share of objects, low, high): small objects
# (side < 32) are scarce in training images and common in validation images
SIDES = {"train": [(0.05, 14, 30), (0.95, 56, 160)],
         "val": [(0.5, 14, 30), (0.3, 36, 90), (0.2, 100, 150)]}
ARMS = {
    "baseline": ["DST.ENABLED", "False"],
    "always_collage": ["DST.SIGNAL", "always_collage"],
    "random": ["DST.SIGNAL", "random", "DST.RANDOM_PROB", "0.5"],
    "feedback": ["DST.SIGNAL", "reg", "DST.TAU", "0.1"],
    "feedback_tau": ["DST.SIGNAL", "reg", "DST.TAU_WARMUP", "{warmup}"],
}
METRICS = ("AP", "AP50", "APs", "APm", "APl")


# -- the data ---------------------------------------------------------------------------------

def cutouts(rng):
    """(class index, RGBA patch) of every coco128 instance of CLASSES at least 40 px a side,
    cut out by its polygons."""
    import cv2
    from pycocotools import mask as mask_utils
    with open(os.path.join(COCO128, "instances.json")) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im for im in coco["images"]}
    out = []
    for a in coco["annotations"]:
        name = names[a["category_id"]]
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        if (name not in CLASSES or a.get("iscrowd") or not isinstance(a["segmentation"], list)
                or w < 40 or h < 40):
            continue
        im = files[a["image_id"]]
        image = cv2.cvtColor(cv2.imread(os.path.join(COCO128, "images", im["file_name"])),
                             cv2.COLOR_BGR2RGB)
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
            a["segmentation"], im["height"], im["width"])))
        patch = np.dstack([image, mask * 255])[y:y + h, x:x + w]
        if patch[..., 3].mean() > 40:  # enough of the box is the object
            out.append((CLASSES.index(name), patch))
    return out


def backgrounds(rng, n):
    """n blurred SIZE x SIZE crops of coco128 images: texture without recognisable objects."""
    import cv2
    folder = os.path.join(COCO128, "images")
    names = sorted(os.listdir(folder))
    out = []
    for _ in range(n):
        img = cv2.imread(os.path.join(folder, names[rng.integers(len(names))]))
        scale = SIZE / min(img.shape[:2]) * rng.uniform(1.0, 1.6)
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y, x = rng.integers(img.shape[0] - SIZE + 1), rng.integers(img.shape[1] - SIZE + 1)
        out.append(cv2.GaussianBlur(img[y:y + SIZE, x:x + SIZE], (0, 0), 5))
    return out


def make_split(folder, split, n_images, patches, rng):
    """Writes folder/split/*.jpg and folder/split.json; returns the share of small objects."""
    import cv2
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    images, anns = [], []
    shares, lows, highs = zip(*SIDES[split])
    for i, bg in enumerate(backgrounds(rng, n_images)):
        canvas = bg.astype(np.float32)
        boxes = []
        for _ in range(rng.integers(1, 4)):
            cls, patch = patches[rng.integers(len(patches))]
            band = rng.choice(len(shares), p=shares)
            side = int(rng.integers(lows[band], highs[band] + 1))
            f = side / max(patch.shape[:2])
            h, w = max(1, round(patch.shape[0] * f)), max(1, round(patch.shape[1] * f))
            p = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
            for _ in range(20):  # a place that hides no earlier object much
                y, x = int(rng.integers(SIZE - h + 1)), int(rng.integers(SIZE - w + 1))
                if all(_overlap((x, y, w, h), b) < 0.3 for b in boxes):
                    break
            else:
                continue
            alpha = p[..., 3:4].astype(np.float32) / 255
            rgb = p[..., :3][..., ::-1].astype(np.float32)  # the canvas is BGR (OpenCV)
            canvas[y:y + h, x:x + w] = canvas[y:y + h, x:x + w] * (1 - alpha) + rgb * alpha
            ys, xs = np.nonzero(p[..., 3] > 127)
            if len(xs) == 0:
                continue
            box = [x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1),
                   int(ys.max() - ys.min() + 1)]
            boxes.append(box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        name = f"{split}_{i:05d}.jpg"
        cv2.imwrite(os.path.join(folder, split, name), canvas.clip(0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE})
    with open(os.path.join(folder, f"{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}, f)
    import torch

    from dst_dali.signals import GROUPS, area_groups
    shares = area_groups(torch.tensor([a["area"] for a in anns], dtype=torch.float32))
    return {"images": n_images, "objects": len(anns),
            **{g: round(float(m.float().mean()), 4) for g, m in zip(GROUPS, shares)}}


def _overlap(a, b):
    """Intersection over the smaller of two xywh boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def make_dataset(folder, seed, n_train, n_val) -> dict:
    rng = np.random.default_rng(seed)
    patches = cutouts(rng)
    return {split: make_split(folder, split, n, patches, rng)
            for split, n in (("train", n_train), ("val", n_val))}


# -- one training run, in a process of its own ---------------------------------------------------

def child(spec: dict) -> None:
    sys.path.insert(0, os.path.join(ROOT, "train"))
    from detectron2.data.datasets import register_coco_instances

    import train_dali
    data = spec["data"]
    for split in ("train", "val"):
        register_coco_instances(f"dst_skew_{split}", {}, os.path.join(data, f"{split}.json"),
                                os.path.join(data, split))
    train_dali.main(train_dali.parse_args(["--config", CONFIG] + spec["opts"]))


def run_arm(args, data, arm, seed, out_dir) -> dict:
    opts = [o.format(warmup=args.warmup) for o in ARMS[arm]] + [
        "SEED", str(seed), "SOLVER.MAX_ITER", str(args.iters),
        "SOLVER.STEPS", f"({int(args.iters * 0.75)}, {int(args.iters * 0.9)})",
        "SOLVER.WARMUP_ITERS", str(min(50, args.iters // 4)), "OUTPUT_DIR", out_dir]
    t = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                        json.dumps({"data": data, "opts": opts})],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"{arm} seed {seed} failed:\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    ap = next(row for row in reversed(rows) if "bbox/AP" in row)
    timed = [row for row in rows if "time" in row]
    timed = timed[1:] or timed  # the first window holds the start-up
    with open(os.path.join(out_dir, "dst_history", "rank0.json")) as f:
        history = json.load(f)
    kinds = [h["kind"] for h in history["history"]]
    shares = [h["share"] for h in history["history"]]
    return {"arm": arm, "seed": seed, "wall_s": time.perf_counter() - t,
            **{m: ap[f"bbox/{m}"] for m in METRICS},
            "iter_s": float(np.mean([row["time"] for row in timed])) if timed else None,
            "data_s": float(np.mean([row["data_time"] for row in timed])) if timed else None,
            "collage_rate": kinds.count("collage") / len(kinds), "tau": history["tau"],
            "r": shares}


# -- the report -----------------------------------------------------------------------------------

def paired_iteration_cost(args) -> dict:
    """bench/iteration_cost.py on the same detector and data, in a process of its own: a
    collage iteration's time over a regular one's, round by round."""
    cmd = [sys.executable, os.path.join(ROOT, "bench", "iteration_cost.py"), "--work-dir",
           os.path.join(args.work_dir, "iteration_cost"), "--results-dir", args.results_dir]
    subprocess.run(cmd + (["--quick"] if args.quick else []), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(args.results_dir, "iteration_cost.json")) as f:
        return {"ratios": json.load(f)["meta"]["ratios"]}


def summarize(runs, iteration_ratios):
    """Per arm: metrics as mean and std over seeds, collage rate, times, the overhead over the
    baseline from the arms' times and from the paired collage/regular iteration ratios."""
    low, mid, high = np.percentile(np.array(iteration_ratios) - 1, [25, 50, 75])
    rows = []
    base = [r for r in runs if r["arm"] == "baseline"]
    base_iter = np.mean([r["iter_s"] for r in base]) if base else None
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        row = {"arm": arm, "seeds": len(mine)}
        for m in METRICS:
            v = np.array([r[m] for r in mine], np.float64)
            row[m] = float(v.mean())
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        for key in ("collage_rate", "iter_s", "data_s"):
            row[key] = float(np.mean([r[key] for r in mine]))
        taus = [r["tau"] for r in mine if r["tau"] is not None]
        row["tau"] = float(np.mean(taus)) if taus else None
        row["time_vs_baseline"] = row["iter_s"] / base_iter - 1 if base_iter else None
        for key, excess in (("paired_overhead", mid), ("paired_overhead_low", low),
                            ("paired_overhead_high", high)):
            row[key] = row["collage_rate"] * float(excess)
        rows.append(row)
    return rows


def plot(runs, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dst_dali.plots import smooth
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for arm, color in (("baseline", "tab:blue"), ("feedback", "tab:orange")):
        series = [np.array([np.nan if v is None else v for v in r["r"]])
                  for r in runs if r["arm"] == arm]
        if series:
            n = min(len(s) for s in series)
            mean = np.nanmean(np.stack([s[:n] for s in series]), 0)
            left.plot(smooth(mean, max(1, n // 30)), color=color, label=arm)
    left.axhline(0.1, color="tab:red", ls="--", lw=1, label="τ = 0.1")
    left.set(xlabel="iteration", ylabel="r: small-object share of the box loss",
             title="r over training (mean over seeds, smoothed)", ylim=(0, 1))
    left.legend(fontsize=8)
    x = np.arange(len(rows))
    for i, m in enumerate(("AP", "APs", "APm")):
        right.bar(x + (i - 1) * 0.27, [r[m] for r in rows], 0.27,
                  yerr=[r[f"{m}_std"] for r in rows], label=m, capsize=2)
    right.set_xticks(x, [r["arm"] for r in rows], rotation=20, fontsize=8)
    right.set(title="AP on the validation set (mean ± std over seeds)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny run: checks the output's form")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100, help="feedback_tau's warm-up")
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "output", "accuracy"))
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="accuracy")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if args.quick:
        args.seeds, args.iters, args.warmup = 1, 6, 3
        args.train_images, args.val_images = 24, 12
        args.arms = ["baseline", "feedback_tau"]
    data = os.path.join(args.work_dir, "data")
    t0 = time.perf_counter()
    shares = make_dataset(data, 0, args.train_images, args.val_images)
    print(f"data: {json.dumps(shares)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    runs = []
    for seed in range(args.seeds):
        # the arms' order turns with the seed: a process's place in the sequence moves its
        # speed by a few % here, which must not land on one arm
        turn = seed % len(args.arms)
        for arm in args.arms[turn:] + args.arms[:turn]:
            run = run_arm(args, data, arm, seed, os.path.join(args.work_dir, f"{arm}_s{seed}"))
            runs.append(run)
            print(f"{arm:15s} seed {seed}: AP {run['AP']:.2f} APs {run['APs']:.2f} collage "
                  f"{run['collage_rate']:.0%} {run['iter_s']:.3f} s/iter "
                  f"({run['wall_s']:.0f} s)", flush=True)
    cost = paired_iteration_cost(args)
    rows = summarize(runs, cost["ratios"])
    notes = [f"data: {json.dumps(shares)}",
             f"{args.iters} iterations of 4 images, the same LR schedule in every arm; "
             f"{args.seeds} seed(s); total {time.perf_counter() - t0:.0f} s on this machine",
             "time vs baseline: each arm's s / iteration (its own processes) over the "
             "baseline's; arms in separate processes, whose speed drifts by 1-3% with their "
             "place in the sequence (the order turns with the seed)",
             f"paired overhead: the same, measured side by side in one process "
             f"(bench/iteration_cost.py, {len(cost['ratios'])} rounds): a collage iteration "
             f"takes {np.median(cost['ratios']):.3f}x a regular one, so an arm's overhead is "
             f"its collage rate x {np.median(cost['ratios']) - 1:.3f} (low-high: the ratio's "
             "quartiles)"]
    columns = [("arm", "arm"), ("seeds", "seeds")] + [
        (k, k) for m in METRICS for k in (m, f"{m}_std")] + [
        ("collage_rate", "collage rate"), ("tau", "tau"), ("iter_s", "s / iteration"),
        ("data_s", "data s / iteration"), ("time_vs_baseline", "time vs baseline"),
        ("paired_overhead", "paired overhead"), ("paired_overhead_low", "low"),
        ("paired_overhead_high", "high")]
    path = write_results(args.name, rows, columns,
                         {"data": shares, "iters": args.iters, "seeds": args.seeds,
                          "runs": [{k: v for k, v in r.items() if k != "r"} for r in runs],
                          "collage_vs_regular_iteration": cost["ratios"]},
                         notes, results_dir=args.results_dir, script=__file__, argv=argv)
    plot(runs, rows, os.path.join(args.results_dir, args.name + ".png"))
    print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
