"""GPU acceptance in one command: the first thing to run on a node with a CUDA GPU.

    make gpu-check                       # or: python -m bench.gpu.loader_check [--quick]

Prints one report (and writes bench/results/gpu_check.md), a line per check:
  exactness   CollageStitch on the GPU vs the CPU backend on the same coco128 images, decoded
              on the CPU and copied (nvJPEG's rounding stays out of it): pixels, boxes, labels,
              polygons, vertices, origin and placement bit-exact, and the pixels within
              tolerance of the independent oracle (bench/oracle.py, as in
              gpu_kernel_check.py), for k = 1, 4, 9, 16, nearest and bilinear (k = 1, 4),
              uint8 and normalized float, HWC and CHW, RGB and BGR (reverse_channels), random
              flips, batches of 8
  memcheck    the exactness check again under compute-sanitizer's memcheck, where installed,
              with DALI's device memory pool off (plain cudaMalloc, so an overrun into a
              neighbouring block is seen) and DALI's own CUDA API errors not reported
  loader      DSTLoader(device="gpu"): regular and collage batches, images on the GPU, the
              same boxes as the CPU loader for the same seed
  handoff     the host's time a sample spends being handed to torch while a 50 ms kernel runs on
              torch's stream: DSTLoader's DLPack hand-off (no wait, no copy) against a copy on
              torch's stream after each run() (the hand-off before); PASS when it never waits
              for the kernel
  train       train/train_dali.py, the demo config on the GPU with AMP, 20 iterations
  throughput  bench/throughput.py --variants dst_gpu builtins_gpu decode_only: samples/s,
              and DSTLoader's over the same batches from DALI's own GPU operators
  kernel      make gpu-kernel-check: the kernel alone (its matrix, sanitizers and GB/s timed
              with CUDA events against a device-to-device copy in the same run)
Without a CUDA GPU it says so and exits 0; a failed check exits 1. `--emulate` runs the
exactness check with the CPU's replay of the CUDA launch in place of the GPU (its test here).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from ..common import COCO128, RESULTS, ROOT, load_images

CHECKS = ("exactness", "memcheck", "loader", "handoff", "train", "throughput", "kernel")
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
OUTPUTS = ("image", "boxes", "labels", "polygons", "vertices", "origin", "placement")


def gpu_status():
    """None when a CUDA GPU and the plugin's CUDA backend are there, else why not."""
    from nvidia.dali import backend

    import dst_dali
    if not dst_dali.has_gpu_backend():
        return "the plugin was built without its CUDA backend (nvcc missing at install?)"
    if backend.GetCUDADeviceCount() == 0:
        return "no CUDA GPU visible to DALI"
    return None


# -- exactness ---------------------------------------------------------------------------------

QUICK_CASES = [(1, "linear", "float", "CHW", True), (4, "linear", "uint8", "HWC", True),
               (4, "nearest", "float", "CHW", False), (16, "nearest", "uint8", "HWC", True)]


def exactness_cases(quick: bool):
    """(k, interp, dtype, layout, reverse_channels) of every configuration compared."""
    if quick:
        return QUICK_CASES
    return [(k, interp, dtype, layout, reverse) for k in (1, 4, 9, 16)
            for interp in (("linear", "nearest") if k in (1, 4) else ("nearest",))
            for dtype in ("uint8", "float") for layout in ("HWC", "CHW")
            for reverse in (False, True)]


def random_annotations(rng, image):
    """Boxes inside the image with labels, and a triangle per box (polygons + vertices)."""
    h, w = image.shape[:2]
    n = int(rng.integers(0, 6))
    x = np.sort(rng.uniform(0, w, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (n, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)
    labels = rng.integers(0, 80, n).astype(np.int32)
    polygons = np.array([[b, 3 * b, 3 * b + 3] for b in range(n)], np.int32).reshape(-1, 3)
    vertices = np.concatenate([[[bx[0], bx[1]], [bx[2], bx[1]], [bx[0], bx[3]]]
                               for bx in boxes]).astype(np.float32) if n else \
        np.zeros((0, 2), np.float32)
    return boxes, labels, polygons, vertices


def stitch_feed(images, picks, rng, short_sides):
    """The runner's inputs for collages of images[picks[j][b]] (component j of sample b): the
    images, their random annotations, each sample's short sides and random flips."""
    k, batch = picks.shape
    feed = {f"image{j}": [images[i] for i in picks[j]] for j in range(k)}
    for j in range(k):
        ann = [random_annotations(rng, images[i]) for i in picks[j]]
        for a, name in enumerate(("boxes", "labels", "polygons", "vertices")):
            feed[f"{name}{j}"] = [x[a] for x in ann]
    feed["short_side"] = [np.asarray(s, np.float32) for s in short_sides]
    feed["flip"] = [rng.integers(0, 2, k).astype(np.int32) for _ in range(batch)]
    return feed


PAD, MEAN, STD = [1.0, 2.0, 3.0], [123.7, 116.3, 103.5], [58.4, 57.1, 57.4]


def stitch_runner(k, interp, dtype, layout, device, batch, emulate=False, reverse=False):
    """A pipeline running CollageStitch on `device` over fed inputs; returns run(feed) -> the 7
    outputs as lists of numpy arrays."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    import dst_dali
    float_out = dtype == "float"

    @pipeline_def(batch_size=batch, num_threads=2, device_id=0 if device == "gpu" else None,
                  prefetch_queue_depth=1)
    def graph():
        def inputs(name, layout_=None):
            return [fn.external_source(name=f"{name}{j}", layout=layout_) for j in range(k)]
        images = inputs("image", "HWC")
        if device == "gpu":
            images = [im.gpu() for im in images]
        out = dst_dali.collage_stitch(
            images, inputs("boxes"), inputs("labels"), inputs("polygons"), inputs("vertices"),
            short_side=fn.external_source(name="short_side"),
            flip=fn.external_source(name="flip"), max_size=1333, interp=interp,
            pad_value=PAD, dtype=types.FLOAT if float_out else types.UINT8,
            output_layout=layout, mean=MEAN if float_out else 0.0,
            std=STD if float_out else 1.0, device=device, reverse_channels=reverse,
            **({"_emulate_gpu_launch": True} if emulate else {}))
        return tuple(out)

    pipe = graph()
    pipe.build()

    def run(feed):
        for name, samples in feed.items():
            pipe.feed_input(name, samples)
        outs = pipe.run()
        return [[np.array(o.as_cpu()[i] if device == "gpu" else o[i]) for i in range(batch)]
                for o in outs]
    return run


def check_exactness(quick: bool, emulate: bool = False):
    """GPU (or, with emulate, the CPU's replay of the CUDA launch) vs the CPU fast paths, and
    its pixels vs the independent oracle."""
    from .kernel_check import TOLERANCE, oracle_difference
    images = load_images(limit=130)
    rng = np.random.default_rng(0)
    batch, rounds = 8, (1 if quick else 2)
    compared, worst = 0, 0.0
    for k, interp, dtype, layout, reverse in exactness_cases(quick):
        case = f"k={k} {interp} {dtype} {layout}{' BGR' if reverse else ''}"
        cpu = stitch_runner(k, interp, dtype, layout, "cpu", batch, reverse=reverse)
        other = stitch_runner(k, interp, dtype, layout, "cpu" if emulate else "gpu", batch,
                              emulate=emulate, reverse=reverse)
        for _ in range(rounds):
            picks = rng.choice(len(images), size=(k, batch), replace=k * batch > len(images))
            short = [rng.choice([640, 800], k) for _ in range(batch)]
            feed = stitch_feed(images, picks, rng, short)
            want, got = cpu(feed), other(feed)
            for name, w, g in zip(OUTPUTS, want, got):
                for b in range(batch):
                    if w[b].shape != g[b].shape or not np.array_equal(w[b], g[b]):
                        return FAIL, f"{case}: {name} of sample {b} differs from the CPU backend's"
            kind = "nearest" if interp == "nearest" else "bilinear"
            for b in range(batch):
                diff = oracle_difference(got[0][b], [images[i] for i in picks[:, b]], short[b],
                                         feed["flip"][b], kind, dtype, layout,
                                         "BGR" if reverse else "RGB", PAD, MEAN, STD, 1333.0)
                if diff is None or diff > TOLERANCE[(kind, dtype)]:
                    return FAIL, f"{case}: sample {b} is {diff} grey levels from the oracle"
                worst = max(worst, diff)
            compared += 1
    what = "the emulated CUDA launch" if emulate else "the GPU"
    return PASS, (f"{what} equals the CPU backend bit for bit: {compared} batches of {batch} "
                  f"over {len(exactness_cases(quick))} configurations (k = 1, 4, 9, 16; "
                  "nearest/bilinear; uint8/float; HWC/CHW; RGB/BGR; flips), all 7 outputs; "
                  f"pixels within {worst:.2g} grey levels of the oracle")


def check_memcheck(quick: bool):
    from .toolchain import TIMEOUT, Budget, StepTimeout, find_sanitizer
    tool = find_sanitizer()
    if tool is None:
        return SKIP, "compute-sanitizer is neither on PATH nor beside nvcc"
    cmd = [tool, "--tool", "memcheck", "--report-api-errors", "no", "--error-exitcode", "3",
           sys.executable, "-m", __spec__.name, "--only", "exactness", "--quick",
           "--no-write"]
    # DALI's pool hands out blocks of its own allocations: memcheck sees only cudaMalloc's
    try:
        r = Budget(600).run(cmd, "exactness under memcheck", 600, cwd=ROOT,
                            env={**os.environ, "DALI_USE_DEVICE_MEM_POOL": "0"})
    except StepTimeout as e:
        return TIMEOUT, str(e)
    output = r.stdout.splitlines() + r.stderr.splitlines()
    summary = [ln for ln in output if "ERROR SUMMARY" in ln]
    if not summary:  # the sanitizer could not attach here
        said = " ".join(ln.strip() for ln in output if ln.strip())[-300:]
        return SKIP, f"memcheck did not run here (exit code {r.returncode}): {said}"
    detail = summary[-1].strip("= ")
    return (PASS if r.returncode == 0 else FAIL), f"exactness under memcheck: {detail}"


# -- the loader, training, throughput ----------------------------------------------------------

def check_loader(quick: bool):
    import torch

    from dst_dali import DSTLoader
    kw = dict(images=os.path.join(COCO128, "images"),
              annotations=os.path.join(COCO128, "instances.json"), batch_size=2, seed=0,
              output="torchvision")
    cpu, gpu = DSTLoader(device="cpu", **kw), DSTLoader(device="gpu", **kw)
    grey = []
    for kind in ("regular", "collage") * (2 if quick else 5):
        (ci, ct), (gi, gt) = cpu.next_batch(kind), gpu.next_batch(kind)
        for a, b, ta, tb in zip(ci, gi, ct, gt):
            if not (b.is_cuda and all(v.is_cuda for v in tb.values() if torch.is_tensor(v))):
                return FAIL, f"a {kind} batch left an image or a target on the CPU"
            if a.shape != b.shape or not torch.equal(ta["boxes"], tb["boxes"].cpu()):
                return FAIL, f"a {kind} batch's size or boxes differ from the CPU loader's"
            grey.append((a.float() - b.cpu().float()).abs().mean().item())
    return PASS, (f"regular and collage batches on the GPU, boxes equal to the CPU loader's; "
                  f"pixels (nvJPEG vs libjpeg decode) differ by {np.mean(grey):.2f} grey "
                  "levels on average")


def check_handoff(quick: bool):
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray

    from dst_dali import DSTLoader
    from dst_dali.stream import batch_stream

    def copied(sample):  # one copy a sample, ordered on torch's current stream
        out = torch.empty(sample.shape(), dtype=torch.uint8,
                          device=torch.device("cuda", sample.device_id()))
        feed_ndarray(sample, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
    kw = dict(images=os.path.join(COCO128, "images"),
              annotations=os.path.join(COCO128, "instances.json"), batch_size=2, seed=0,
              output="torchvision", device="gpu")
    figures = {}
    for name, hand_off in (("dlpack", batch_stream.gpu_to_torch), ("copy", copied)):
        original, batch_stream.gpu_to_torch = batch_stream.gpu_to_torch, hand_off
        try:
            loader, waits = DSTLoader(**kw), []
            for kind in ("regular", "collage") * (3 if quick else 10):
                loader.next_batch(kind)  # the pipelines' prefetch is full from here on
                torch.cuda._sleep(int(50e-3 * 1.5e9))  # about 50 ms of GPU time at 1.5 GHz
                t0 = time.perf_counter()
                loader.next_batch(kind)
                waits.append(time.perf_counter() - t0)
                torch.cuda.synchronize()
            loader.close()
        finally:
            batch_stream.gpu_to_torch = original
        figures[name] = float(np.median(waits))
    detail = (f"median host time a batch, a 50 ms kernel queued on torch's stream: DLPack "
              f"{figures['dlpack'] * 1e3:.1f} ms, a copy on torch's stream "
              f"{figures['copy'] * 1e3:.1f} ms")
    return (PASS if figures["dlpack"] < 0.025 else FAIL), detail


def check_train(quick: bool):
    out = tempfile.mkdtemp(prefix="dst_gpu_check_")
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_dali.py"), "--config",
           os.path.join(ROOT, "train", "configs", "demo_coco128_cpu.yaml"),
           "MODEL.DEVICE", "cuda", "DST.DEVICE", "gpu", "SOLVER.AMP.ENABLED", "True",
           "SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "()", "DATASETS.TEST", "()",
           "OUTPUT_DIR", out]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        return FAIL, "train_dali.py failed: " + (r.stderr or r.stdout)[-400:].replace("\n", " ")
    rows = [json.loads(ln) for ln in open(os.path.join(out, "metrics.json"))]
    last = [x for x in rows if "dst/collage_rate" in x][-1]
    return PASS, (f"20 iterations with AMP in {time.time() - t0:.0f} s, total_loss "
                  f"{last.get('total_loss', float('nan')):.3f}, collage rate "
                  f"{last['dst/collage_rate']:.2f} ({out})")


def check_throughput(quick: bool):
    out = tempfile.mkdtemp(prefix="dst_gpu_throughput_")
    cmd = [sys.executable, "-m", "bench.throughput", "--variants",
           "dst_gpu", "builtins_gpu", "decode_only", "--results-dir", out,
           "--name", "gpu_throughput"]
    r = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True,
                       timeout=1800, cwd=ROOT)
    if r.returncode != 0:
        return FAIL, "throughput.py failed: " + r.stderr[-400:].replace("\n", " ")
    rows = json.load(open(os.path.join(out, "gpu_throughput.json")))["rows"]
    return PASS, "; ".join(throughput_figures(rows))


def throughput_figures(rows) -> list:
    """Samples/s of each variant at each collage fraction, and DSTLoader's over the DALI
    built-ins' on the same device in the same run (the peer a DALI user would pick)."""
    rate = {(x["variant"], x["fraction"]): x["samples_per_s"] for x in rows
            if "samples_per_s" in x}
    figures = [f"{v} at collage fraction {f:g}: {s:.0f} samples/s" for (v, f), s in rate.items()]
    figures += [f"{v} / {peer} at collage fraction {f:g}: {s / rate[peer, f]:.2f}x"
                for (v, f), s in rate.items() if v.startswith("dst_")
                for peer in [v.replace("dst_", "builtins_")] if (peer, f) in rate]
    return figures


def check_kernel(quick: bool):
    """make gpu-kernel-check: the kernel alone, timed with CUDA events (no DALI around it)."""
    out = tempfile.mkdtemp(prefix="dst_gpu_kernel_check_")
    cmd = [sys.executable, "-m", "bench.gpu.kernel_check", "--out", out]
    r = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True,
                       timeout=1200, cwd=ROOT)
    checks = json.load(open(os.path.join(out, "gpu_kernel_check.json")))["checks"]
    failed = [c for c, (status, _) in checks.items() if status in (FAIL, "TIMEOUT")]
    speed = checks.get("speed", [SKIP, "not run"])[1]
    return (FAIL if r.returncode or failed else PASS), \
        (f"failed: {', '.join(failed)}; " if failed else "") + f"{speed} ({out})"


RUNNERS = {"exactness": check_exactness, "memcheck": check_memcheck, "loader": check_loader,
           "handoff": check_handoff, "train": check_train, "throughput": check_throughput,
           "kernel": check_kernel}


def render(results, header) -> str:
    """The report: a header line, then `[STATUS] check: detail` a check, in CHECKS order."""
    from . import kernel_check
    return kernel_check.render(results, header, CHECKS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and rounds")
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU needed: exactness against the CPU's replay of the launch")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    import nvidia.dali as dali

    import dst_dali
    status = None if args.emulate else gpu_status()
    header = (f"dst_dali GPU check, DALI {dali.__version__}, "
              f"plugin CUDA backend: {dst_dali.has_gpu_backend()}")
    if args.emulate:
        results = {"exactness": check_exactness(args.quick, emulate=True)}
    elif status is not None:
        results = {c: (SKIP, f"not run: {status}") for c in args.only}
        header += f"\nno CUDA GPU here ({status}): nothing was run on a GPU"
    else:
        results = {}
        for check in args.only:
            try:
                results[check] = RUNNERS[check](args.quick)
            except Exception as e:  # a check that crashes is a failed check; the rest go on
                results[check] = (FAIL, f"{type(e).__name__}: {e} "
                                        f"({traceback.format_exc(limit=1).splitlines()[-1]})")
    report = render(results, header)
    print(report, end="")
    if not args.no_write:
        os.makedirs(args.results_dir, exist_ok=True)
        with open(os.path.join(args.results_dir, "gpu_check.md"), "w") as f:
            f.write("# gpu_check\n\n`python -m bench.gpu.loader_check "
                    + " ".join(argv or sys.argv[1:])
                    + "`\n\n```\n" + report + "```\n")
    return 1 if any(r[0] in (FAIL, "TIMEOUT") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
