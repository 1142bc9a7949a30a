"""What the benches share: the coco128 sample, timing, and writing results."""
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO128 = os.path.join(ROOT, "data", "coco128")
RESULTS = os.path.join(ROOT, "bench", "results")


def coco128_yolo(out: str) -> str:
    """data/coco128 in YOLO form in `out` (tools/coco_to_yolo.py, images as links), made once;
    the path of its data.yaml."""
    path = os.path.join(out, "data.yaml")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "coco_to_yolo.py"),
                        "--images", os.path.join(COCO128, "images"), "--annotations",
                        os.path.join(COCO128, "instances.json"), "--out", out],
                       check=True, capture_output=True)
    return path


def threads_cpu(pid="self", name_prefix: str = "") -> float:
    """CPU seconds of a process's threads whose name starts with name_prefix (DALI names its
    "[DALI]..."), from each thread's /proc schedstat, in nanoseconds: psutil's 10 ms ticks are
    too coarse to see one iteration, or a short refill end."""
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return 0.0
    total = 0
    for tid in tids:
        try:
            if name_prefix:
                with open(f"{task_dir}/{tid}/comm") as f:
                    if not f.read().startswith(name_prefix):
                        continue
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def load_images(root=COCO128, limit=None):
    """The sample's images decoded to RGB HWC uint8 (sorted by file name)."""
    import cv2
    folder = os.path.join(root, "images")
    names = sorted(os.listdir(folder))[:limit]
    images = []
    for name in names:
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{os.path.join(folder, name)}: not a readable image")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


# detectron2's default normalization (BGR), which the Stitcher way applies before its collage
PIXEL_MEAN, PIXEL_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


def stitcher_collage(images, k):
    """The original Stitcher code's collage, on the CPU: `images` is the (k·B, C, H, W) padded
    batch its loader already made (regular size; normalized float or uint8), component j of
    collage i at j·B + i. Each image is F.interpolate'd by 1/n (nearest) and pasted into its
    cell of an n x n grid over the same H x W. Returns (B, C, H, W)."""
    import torch.nn.functional as F
    n = int(round(k ** 0.5))
    B = images.shape[0] // k
    H, W = images.shape[-2:]
    h, w = H // n, W // n
    out = images.new_zeros((B,) + tuple(images.shape[1:]))
    for i in range(B):
        for j in range(k):
            small = F.interpolate(images[j * B + i: j * B + i + 1], scale_factor=1.0 / n,
                                  mode="nearest")[0]
            y0, x0 = (j // n) * h, (j % n) * w
            out[i, :, y0:y0 + h, x0:x0 + w] = small[:, :h, :w]
    return out


def time_call(fn, repeats, warmup=1):
    """Wall-clock seconds of fn() over `repeats` runs after `warmup` runs: a list. The garbage
    collector is off while timing (as in timeit): its passes over the benches' large heaps
    would land on whichever method happens to be running."""
    for _ in range(warmup):
        fn()
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    finally:
        gc.enable()
    return times


def median(xs):
    return statistics.median(xs)


def machine_info():
    import nvidia.dali as dali
    import torch
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        gpu = None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu or "none",
            "python": platform.python_version(), "dali": dali.__version__,
            "torch": torch.__version__}


def write_results(name, rows, columns, meta, notes=(), results_dir=RESULTS, script=None,
                  argv=None, extra=None):
    """results_dir/NAME.json and NAME.md: the rows, the machine and the exact command
    (`script` run with `argv`; by default this process's own command line); `extra`: more
    top-level keys of the JSON."""
    os.makedirs(results_dir, exist_ok=True)
    script = os.path.relpath(script or sys.argv[0], ROOT)
    module = script[:-len(".py")].replace(os.sep, ".")
    argv = sys.argv[1:] if argv is None else argv
    meta = {**meta, "machine": machine_info(),
            "command": " ".join(["python", "-m", module, *argv]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with open(os.path.join(results_dir, name + ".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows, "notes": list(notes), **(extra or {})}, f,
                  indent=2)
    m = meta["machine"]
    lines = [f"# {name}", "",
             f"`{meta['command']}` on {m['cpu']} ({m['cores']} cores), GPU: {m['gpu']}, "
             f"DALI {m['dali']}, torch {m['torch']}, {meta['date']}.", "",
             "| " + " | ".join(title for _, title in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    with open(os.path.join(results_dir, name + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(results_dir, name + ".md")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)
