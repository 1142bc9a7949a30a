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

The arms of a seed train side by side in one process, taking turns in blocks of iterations,
so whatever the machine's speed does over the run falls on every arm alike: each arm's time
over the baseline's is measured round by round. (Separate processes here move by a few % with
their place in a sequence, more than the difference to measure.) bench/iteration_cost.py
breaks a collage iteration's extra time down by phase.

    python bench/accuracy.py [--seeds 3] [--iters 500]      # about 40 minutes on 2 cores
    python bench/accuracy.py --quick                          # a tiny run: the output's form

Writes bench/results/accuracy.{json,md,png} (--results-dir, --name).
"""
import argparse
import contextlib
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


# -- the arms of one seed, taking turns in one process ---------------------------------------

class Arm:
    """One arm's DSTTrainer (bench/accuracy.yaml with the arm's options), stepped as
    detectron2's TrainerBase.train steps it, with random generators of its own: an arm's
    sampling and coin flips do not depend on the turns the arms take."""

    def __init__(self, name: str, opts: list):
        from detectron2.utils.env import seed_all_rng
        from detectron2.utils.events import EventStorage

        from dst_dali.checkpoint import rng_states
        from dst_dali.config import load_config
        from dst_dali.trainer import DSTTrainer
        self.name = name
        cfg = load_config(CONFIG, opts)
        cfg.freeze()
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        seed_all_rng(cfg.SEED)  # as detectron2's default_setup, whose logging is per process
        self.trainer = DSTTrainer(cfg)
        self.trainer.resume_or_load(resume=False)
        self.trainer.iter = self.trainer.start_iter  # as TrainerBase.train begins
        self.trainer.storage = EventStorage(0)
        self.rng = rng_states()
        with self._turn():
            self.trainer.before_train()

    @contextlib.contextmanager
    def _turn(self):
        from dst_dali.checkpoint import rng_states, set_rng_states
        set_rng_states(self.rng)
        with self.trainer.storage:
            yield
        self.rng = rng_states()

    def steps(self, n: int) -> list:
        """n iterations: (wall s, data s) each, the wall from before_step to after_step."""
        t = self.trainer
        out = []
        with self._turn():
            for _ in range(min(n, t.max_iter - t.iter)):
                start = time.perf_counter()
                t.before_step()
                t.run_step()
                t.after_step()
                out.append((time.perf_counter() - start, t.storage.latest()["data_time"][0]))
                t.iter += 1
        return out

    def finish(self):
        """detectron2's end of training: the final evaluation, model_final, DST's history."""
        with self._turn():
            self.trainer.after_train()


def child(spec: dict) -> None:
    """Trains every arm of one seed in this process, in blocks of spec["block"] iterations, the
    arms' order turning each round; writes each arm's iteration times to its output folder."""
    from detectron2.data.datasets import register_coco_instances
    data = spec["data"]
    for split in ("train", "val"):
        register_coco_instances(f"dst_skew_{split}", {}, os.path.join(data, f"{split}.json"),
                                os.path.join(data, split))
    arms = [Arm(name, opts) for name, opts in spec["arms"].items()]
    times = {arm.name: [] for arm in arms}
    for r in range(-(-spec["iters"] // spec["block"])):
        for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
            times[arm.name] += [{"round": r, "wall": wall, "data": data_s,
                                 "kept": i >= spec["settle"]}
                                for i, (wall, data_s) in enumerate(arm.steps(spec["block"]))]
    for arm in arms:
        arm.finish()
        with open(os.path.join(spec["out_dirs"][arm.name], "iteration_times.json"), "w") as f:
            json.dump(times[arm.name], f)


def arm_opts(args, arm, seed, out_dir) -> list:
    return [o.format(warmup=args.warmup) for o in ARMS[arm]] + [
        "SEED", str(seed), "SOLVER.MAX_ITER", str(args.iters),
        "SOLVER.STEPS", f"({int(args.iters * 0.75)}, {int(args.iters * 0.9)})",
        "SOLVER.WARMUP_ITERS", str(min(50, args.iters // 4)), "OUTPUT_DIR", out_dir]


def run_seed(args, data, seed) -> list:
    """Every arm of one seed, trained side by side in a process of its own: their results."""
    out_dirs = {arm: os.path.join(args.work_dir, f"{arm}_s{seed}") for arm in args.arms}
    spec = {"data": data, "iters": args.iters, "block": args.block, "settle": args.settle,
            "out_dirs": out_dirs,
            "arms": {arm: arm_opts(args, arm, seed, out_dirs[arm]) for arm in args.arms}}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"seed {seed} failed:\n{r.stderr[-3000:]}")
    wall = time.perf_counter() - t
    return [arm_result(arm, seed, out_dirs[arm], wall) for arm in args.arms]


def arm_result(arm, seed, out_dir, wall_s) -> dict:
    """An arm's AP (detectron2's final evaluation), collage rate, r and times, from its output
    folder. Times are of the iterations kept: a block's first ones also carry the refill of the
    previous arm's DALI prefetch queues."""
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    ap = next(row for row in reversed(rows) if "bbox/AP" in row)
    with open(os.path.join(out_dir, "iteration_times.json")) as f:
        times = [t for t in json.load(f) if t["kept"]]
    with open(os.path.join(out_dir, "dst_history", "rank0.json")) as f:
        history = json.load(f)
    kinds = [h["kind"] for h in history["history"]]
    rounds = {}
    for t in times:
        rounds.setdefault(t["round"], []).append(t["wall"])
    return {"arm": arm, "seed": seed, "wall_s": wall_s,
            **{m: ap[f"bbox/{m}"] for m in METRICS},
            "iter_s": float(np.mean([t["wall"] for t in times])),
            "data_s": float(np.mean([t["data"] for t in times])),
            "round_s": {r: float(np.mean(w)) for r, w in rounds.items()},
            "collage_rate": kinds.count("collage") / len(kinds), "tau": history["tau"],
            "r": [h["share"] for h in history["history"]]}


# -- the report -----------------------------------------------------------------------------------

def summarize(runs):
    """Per arm: metrics as mean and std over seeds, collage rate, times, and the time over the
    baseline's: round by round, the arm's block over the baseline's block of the same round in
    the same process, as a median over rounds and seeds with its quartiles."""
    rows = []
    base = {r["seed"]: r["round_s"] for r in runs if r["arm"] == "baseline"}
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
        ratios = [s / base[r["seed"]][k] - 1 for r in mine if r["seed"] in base
                  for k, s in r["round_s"].items() if k in base[r["seed"]]]
        low, mid, high = np.percentile(ratios, [25, 50, 75]) if ratios else (None,) * 3
        row.update(time_vs_baseline=mid, time_vs_baseline_low=low,
                   time_vs_baseline_high=high, rounds=len(ratios))
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
    ap.add_argument("--block", type=int, default=10, help="iterations an arm trains a turn")
    ap.add_argument("--settle", type=int, default=3,
                    help="iterations at the start of a turn not timed (see arm_result)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "output", "accuracy"))
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="accuracy")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if args.quick:
        args.seeds, args.iters, args.warmup, args.block, args.settle = 1, 6, 3, 2, 1
        args.train_images, args.val_images = 24, 12
        args.arms = ["baseline", "feedback_tau"]
    data = os.path.join(args.work_dir, "data")
    t0 = time.perf_counter()
    shares = make_dataset(data, 0, args.train_images, args.val_images)
    print(f"data: {json.dumps(shares)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    runs = []
    for seed in range(args.seeds):
        mine = run_seed(args, data, seed)
        runs += mine
        for run in mine:
            print(f"{run['arm']:15s} seed {seed}: AP {run['AP']:.2f} APs {run['APs']:.2f} "
                  f"collage {run['collage_rate']:.0%} {run['iter_s']:.3f} s/iter", flush=True)
        print(f"seed {seed}: {mine[0]['wall_s']:.0f} s", flush=True)
    rows = summarize(runs)
    notes = [f"data: {json.dumps(shares)}",
             f"{args.iters} iterations of 4 images, the same LR schedule in every arm; "
             f"{args.seeds} seed(s); total {time.perf_counter() - t0:.0f} s on this machine",
             f"the arms of a seed train in one process, taking turns in blocks of {args.block} "
             "iterations, their order turning each round; each arm keeps its own random "
             "generators, so its run does not depend on the turns",
             f"s / iteration: detectron2's step (before_step to after_step: data, forward, "
             f"backward, hooks) over the iterations kept, all but the first {args.settle} of a "
             "block (which also carry the refill of the previous arm's DALI prefetch queues)",
             "time vs baseline: round by round, the arm's block over the baseline's block of "
             "the same round; the median over rounds and seeds, low-high its quartiles"]
    columns = [("arm", "arm"), ("seeds", "seeds")] + [
        (k, k) for m in METRICS for k in (m, f"{m}_std")] + [
        ("collage_rate", "collage rate"), ("tau", "tau"), ("iter_s", "s / iteration"),
        ("data_s", "data s / iteration"), ("time_vs_baseline", "time vs baseline"),
        ("time_vs_baseline_low", "low"), ("time_vs_baseline_high", "high")]
    path = write_results(args.name, rows, columns,
                         {"data": shares, "iters": args.iters, "seeds": args.seeds,
                          "block": args.block, "settle": args.settle,
                          "runs": [{k: v for k, v in r.items() if k != "r"} for r in runs]},
                         notes, results_dir=args.results_dir, script=__file__, argv=argv)
    plot(runs, rows, os.path.join(args.results_dir, args.name + ".png"))
    print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
