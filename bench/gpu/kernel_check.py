"""The collage kernel alone, on a bare CUDA node: the first GPU contact, in one command.

    make gpu-kernel-check                  # nvcc on PATH, a driver, this repo; python3 + numpy
    make gpu-kernel-check EMULATE=1        # no GPU: the CPU replay of the kernel's launch
    python3 -m bench.gpu.kernel_check [--emulate] [--out DIR] [--quick]

No DALI, torch or detectron2: nvcc builds bench/gpu/kernel_check.cu (toolchain.py), which
includes the very kernel the plugin launches (csrc/collage_kernel.h) and the CPU backend's row
code (csrc/collage_rows_cpu.h); numpy drives it through ctypes. One report, a line per check:

  build     the harness, compiled for this GPU (emulated: for sm_75, never launched)
  driver    the CUDA driver runs what this toolkit builds (the plugin's GPU backend refuses to
            load otherwise, with the same message)
  kernel    the kernel compiled for every architecture setup.py builds: ptxas reports no stack
            frame, and its PTX holds no 64-bit integer division or remainder (kept in the
            build folder: a rerun with the same sources, nvcc, flags and architectures reads
            it back)
  matrix    k = 1, 4, 9, 16 x nearest/bilinear x uint8/normalized float x HWC/CHW x RGB/BGR
            (reverse_channels), random flips, 8 samples a launch, procedural images (1-pixel
            rows and columns, extreme aspect ratios, odd sizes) and, where OpenCV or PIL can
            decode them, data/coco128's. Each case compares (a) the kernel's output with the
            CPU backend's rows, bit for bit, and (b) with bench/oracle.py, an oracle
            written from the method's definition in numpy that shares no code with csrc/:
            nearest exact (float within 1e-3 grey levels), bilinear within 1 grey level for
            uint8 and 0.25 for float (the fixed point's weights are 1/2048 steps). Every buffer
            has its own allocation with a guard band after it, checked after the launches; the
            outputs are filled with two different sentinels before two launches, so an
            unwritten pixel differs between them. Sizes and placements equal the oracle's.
  boxes     boxes and polygon vertices mapped as the operator's plan maps them, against the
            oracle's float64 mapping (within 1e-3 px)
  memcheck, initcheck
            compute-sanitizer over the matrix (no guard bands: its own --padding sees an
            overrun), where it is on PATH
  speed     the kernel alone: CUDA events around 100 launches after 5 of warm-up, batches of 8
            at short side 800 / max 1333 (coco128 images, or 480x640 noise without a decoder).
            GB/s = (output bytes + bytes of the source rows the kernel samples) / time a launch;
            beside it a device-to-device cudaMemcpy of half that many bytes (it reads and writes
            each) in the same run, and the ratio. Collage k = 4 nearest uint8 HWC and
            normalized float CHW; the regular image k = 1 bilinear.

Writes OUT/gpu_kernel_check.json: {"mode": "gpu"|"emulated", "gpu": name or null, "checks":
{check: [status, detail]}, "rows": [a row per matrix case: k, interp, dtype, layout, channels,
flip, batch, status, max_abs_diff (against the oracle, grey levels), ...]}. Exits 1 on a FAIL.
--plant puts a fault in the harness (never in csrc/): its tests see each reported as FAIL.
"""
import argparse
import ctypes
import glob
import json
import os
import platform
import sys

import numpy as np

from .. import oracle
from .toolchain import (
    FAIL,
    PASS,
    ROOT,
    SKIP,
    TIMEOUT,
    UNBOUNDED,
    Budget,
    StepTimeout,
    build,
    find_sanitizer,
    kernel_quality,
    nvcc,
)

COCO128 = os.path.join(ROOT, "data", "coco128", "images")
CHECKS = ("build", "driver", "kernel", "matrix", "boxes", "memcheck", "initcheck", "speed")
FAULTS = ("skip_row", "write_past_end", "oracle_pixel")
BATCH, MAX_SIZE = 8, 533.0
PAD = {"uint8": [1.0, 2.0, 3.0], "float": [-2.0, 0.0, 1.5]}
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
TOLERANCE = {("nearest", "uint8"): 0.0, ("nearest", "float"): 1e-3,
             ("bilinear", "uint8"): 1.0, ("bilinear", "float"): 0.25}


class Spec(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in
                ("k", "interp", "float_out", "chw", "reverse", "channels", "B")] + \
               [("max_size", ctypes.c_float)]


class RunReport(ctypes.Structure):
    _fields_ = [("guard_overwritten", ctypes.c_int), ("sentinel_diffs", ctypes.c_int64),
                ("cuda_error", ctypes.c_int), ("message", ctypes.c_char * 256)]


# -- images and cases --------------------------------------------------------------------------

PROCEDURAL_SIZES = [(1, 1), (1, 300), (300, 1), (2, 999), (999, 2), (3, 5), (37, 53), (53, 37),
                    (101, 67), (127, 255), (33, 480), (479, 641), (250, 251), (17, 1023)]


def procedural_images(rng):
    """Noise images whose sizes catch indexing faults: 1-pixel rows and columns, extreme
    aspect ratios, sizes the grid does not divide."""
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in PROCEDURAL_SIZES]


def decoder():
    """A function path -> HWC RGB uint8, from OpenCV or PIL, or None."""
    try:
        import cv2
        return lambda p: np.ascontiguousarray(cv2.imread(p, cv2.IMREAD_COLOR)[:, :, ::-1])
    except ImportError:
        pass
    try:
        from PIL import Image
        return lambda p: np.asarray(Image.open(p).convert("RGB"))
    except ImportError:
        return None


def coco_images(limit):
    decode = decoder()
    if decode is None:
        return [], "no OpenCV or PIL: procedural images only"
    paths = sorted(glob.glob(os.path.join(COCO128, "*.jpg")))[:limit]
    return [decode(p) for p in paths], f"{len(paths)} coco128 images decoded"


def matrix(quick):
    """(k, interp, dtype, layout, channels) of every case."""
    cases = []
    for k in (1, 4, 9, 16):
        for interp in ("nearest", "bilinear"):
            for dtype in ("uint8", "float"):
                for layout in ("HWC", "CHW"):
                    for channels in ("RGB", "BGR"):
                        if quick and (layout, channels) not in (("HWC", "RGB"), ("CHW", "BGR")):
                            continue
                        cases.append((k, interp, dtype, layout, channels))
    return cases


class Harness:
    """The library, called with numpy arrays."""

    def __init__(self, lib):
        self.lib = ctypes.CDLL(lib)
        for name in ("dst_plan", "dst_run", "dst_map", "dst_device", "dst_time",
                     "dst_driver_floor"):
            getattr(self.lib, name).restype = ctypes.c_int

    @staticmethod
    def spec(k, interp, dtype, layout, channels, batch):
        return Spec(k, interp == "bilinear", dtype == "float", layout == "CHW",
                    channels == "BGR", 3, batch, MAX_SIZE)

    @staticmethod
    def _arrays(images, short, flips):
        ptrs = (ctypes.c_void_p * len(images))(*[im.ctypes.data for im in images])
        hw = np.array([im.shape[:2] for im in images], np.int32)
        return ptrs, hw, np.ascontiguousarray(short, np.float32), \
            np.ascontiguousarray(flips, np.int32)

    def plan(self, spec, images, short, flips):
        _, hw, short, flips = self._arrays(images, short, flips)
        out_hw = np.zeros((spec.B, 2), np.int32)
        place = np.zeros((spec.B, spec.k, 4), np.int32)
        self.lib.dst_plan(ctypes.byref(spec), _p(hw), _p(short), _p(flips), _p(out_hw),
                          _p(place))
        return out_hw, place

    def run(self, spec, emulate, images, short, flips, pad, fault=0, guard=65536):
        """The kernel's outputs, the CPU rows' outputs and the RunReport."""
        ptrs, hw, short, flips = self._arrays(images, short, flips)
        out_hw, _ = self.plan(spec, images, short, flips)
        dtype = np.float32 if spec.float_out else np.uint8
        shape = (lambda h, w: (3, h, w)) if spec.chw else (lambda h, w: (h, w, 3))
        outs = [np.zeros(shape(h, w), dtype) for h, w in out_hw]
        refs = [np.zeros(shape(h, w), dtype) for h, w in out_hw]
        report = RunReport()
        p, mean, std = (np.asarray(v, np.float32) for v in
                        (pad, MEAN if spec.float_out else [0.0] * 3,
                         STD if spec.float_out else [1.0] * 3))
        self.lib.dst_run(ctypes.byref(spec), int(emulate), ptrs, _p(hw), _p(short), _p(flips),
                         _p(p), _p(mean), _p(std), _ptrs(outs), _ptrs(refs), fault, guard,
                         ctypes.byref(report))
        return outs, refs, report

    def map(self, spec, images, short, flips, j, what, values):
        _, hw, short, flips = self._arrays(images, short, flips)
        values = np.ascontiguousarray(values, np.float32)
        out = np.zeros_like(values)
        n = len(values)
        self.lib.dst_map(ctypes.byref(spec), _p(hw), _p(short), _p(flips), j, what, n,
                         _p(values), _p(out))
        return out

    def device(self):
        name = ctypes.create_string_buffer(256)
        drv, rt = ctypes.c_int(), ctypes.c_int()
        ok = self.lib.dst_device(name, 256, ctypes.byref(drv), ctypes.byref(rt)) == 0
        return (name.value.decode() if ok else None), drv.value, rt.value

    def driver_floor(self, driver, runtime=0):
        """Why a driver for CUDA `driver` cannot run this build ('' when it can)."""
        message = ctypes.create_string_buffer(512)
        self.lib.dst_driver_floor(driver, runtime, message, 512)
        return message.value.decode()

    def time(self, spec, images, short, flips, repeats=100):
        ptrs, hw, short, flips = self._arrays(images, short, flips)
        result = np.zeros(4, np.float64)
        report = RunReport()
        p = np.asarray(PAD["float" if spec.float_out else "uint8"], np.float32)
        mean = np.asarray(MEAN if spec.float_out else [0.0] * 3, np.float32)
        std = np.asarray(STD if spec.float_out else [1.0] * 3, np.float32)
        self.lib.dst_time(ctypes.byref(spec), ptrs, _p(hw), _p(short), _p(flips), _p(p),
                          _p(mean), _p(std), repeats, _p(result), ctypes.byref(report))
        if report.cuda_error:
            raise RuntimeError(report.message.decode())
        return result


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _ptrs(arrays):
    return (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])


# -- the matrix against the CPU rows and the oracle --------------------------------------------

def oracle_difference(out, images, short, flips, interp, dtype, layout, channels, pad,
                      mean=MEAN, std=STD, max_size=MAX_SIZE, plant=False):
    """The largest difference, in grey levels, between a kernel output (one sample) and the
    oracle's collage of its images (float outputs de-normalized; padding compared in output
    units, as it is written); None when its size differs from the oracle's. plant: the oracle
    with one pixel off by 7 (a fault the check must report)."""
    if channels == "BGR":  # output channel c is input channel C-1-c
        images = [im[:, :, ::-1] for im in images]
    want, places = oracle.collage(images, list(short), list(flips), max_size, pad=pad,
                                  interp="nearest" if interp == "nearest" else "linear")
    got = (out.transpose(1, 2, 0) if layout == "CHW" else out).astype(np.float64)
    if got.shape != want.shape:
        return None
    if plant:
        want[want.shape[0] // 2, want.shape[1] // 2, 0] += 7
    if dtype == "float":
        pad_mask = np.ones(want.shape[:2], bool)
        for y0, x0, ph, pw in places:
            pad_mask[y0:y0 + ph, x0:x0 + pw] = False
        denorm = got * np.asarray(std, np.float64) + np.asarray(mean, np.float64)
        got = np.where(pad_mask[:, :, None], got, denorm)
    return float(np.abs(got - want).max())


def run_case(h, case, pool, rng, emulate, fault=None, guard=65536):
    """One case: a batch of 8 collages. Returns (status, details, row)."""
    k, interp, dtype, layout, channels = case
    spec = Harness.spec(k, interp, dtype, layout, channels, BATCH)
    picks = rng.integers(0, len(pool), (BATCH, k))
    images = [pool[i] for i in picks.reshape(-1)]
    short = rng.uniform(24, 320, (BATCH, k)).round().astype(np.float32)
    flips = rng.integers(0, 2, (BATCH, k)).astype(np.int32)
    fault_code = {"skip_row": 1, "write_past_end": 2}.get(fault, 0)
    outs, refs, report = h.run(spec, emulate, images, short, flips, PAD[dtype], fault_code, guard)
    out_hw, place = h.plan(spec, images, short, flips)
    problems, worst = [], 0.0
    if report.cuda_error:
        problems.append(f"CUDA error {report.message.decode()}")
    if report.guard_overwritten:
        problems.append(f"{report.guard_overwritten} guard bands overwritten")
    if report.sentinel_diffs:
        problems.append(f"{report.sentinel_diffs} output bytes depend on the sentinel "
                        "(unwritten)")
    for s in range(BATCH):
        comps = images[s * k:(s + 1) * k]
        if not np.array_equal(outs[s].view(np.uint8), refs[s].view(np.uint8)):
            n = int((outs[s] != refs[s]).sum())
            problems.append(f"sample {s}: {n} values differ from the CPU backend's rows")
        size, places = oracle.layout([im.shape[:2] for im in comps], list(short[s]), MAX_SIZE)
        diff = oracle_difference(outs[s], comps, short[s], flips[s], interp, dtype, layout,
                                 channels, PAD[dtype], plant=fault == "oracle_pixel" and s == 0)
        if tuple(out_hw[s]) != size or [tuple(p) for p in place[s]] != places or diff is None:
            problems.append(f"sample {s}: size or placement differs from the oracle's")
            continue
        worst = max(worst, diff)
        if diff > TOLERANCE[(interp, dtype)]:
            problems.append(f"sample {s}: {diff:.3g} grey levels from the oracle "
                            f"(tolerance {TOLERANCE[(interp, dtype)]:g})")
    status = FAIL if problems else PASS
    row = {"k": k, "interp": interp, "dtype": dtype, "layout": layout, "channels": channels,
           "flip": "random", "flipped": int(flips.sum()), "batch": BATCH, "status": status,
           "max_abs_diff": worst, "guard_overwritten": report.guard_overwritten,
           "unwritten_bytes": int(report.sentinel_diffs)}
    return status, problems, row


def check_boxes(h, pool, rng):
    """Boxes and vertices mapped by the operator's plan against the oracle's float64 mapping."""
    worst, count = 0.0, 0
    for k in (1, 4, 9, 16):
        for _ in range(6):
            spec = Harness.spec(k, "nearest", "uint8", "HWC", "RGB", 1)
            images = [pool[i] for i in rng.integers(0, len(pool), k)]
            short = rng.uniform(24, 800, k).round().astype(np.float32)
            flips = rng.integers(0, 2, k).astype(np.int32)
            _, places = oracle.layout([im.shape[:2] for im in images], list(short), MAX_SIZE)
            for j, im in enumerate(images):
                sh, sw = im.shape[:2]
                x = np.sort(rng.uniform(0, sw, (5, 2)), 1)
                y = np.sort(rng.uniform(0, sh, (5, 2)), 1)
                boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).astype(np.float32)
                points = np.stack([rng.uniform(0, sw, 7), rng.uniform(0, sh, 7)], 1)
                points = points.astype(np.float32)
                got_b = h.map(spec, images, short, flips, j, 0, boxes)
                got_p = h.map(spec, images, short, flips, j, 1, points)
                want_b = oracle.map_boxes(boxes, (sh, sw), places[j], flips[j])
                want_p = oracle.map_points(points, (sh, sw), places[j], flips[j])
                worst = max(worst, float(np.abs(got_b - want_b).max()),
                            float(np.abs(got_p - want_p).max()))
                count += len(boxes) + len(points)
    status = PASS if worst <= 1e-3 else FAIL
    return status, (f"{count} boxes and vertices, k = 1, 4, 9, 16, random flips: at most "
                    f"{worst:.2g} px from the oracle (tolerance 0.001)")


def check_matrix(h, pool, emulate, quick, fault=None, guard=65536):
    rng = np.random.default_rng(2026)
    rows, failures = [], []
    for case in matrix(quick):
        status, problems, row = run_case(h, case, pool, rng, emulate, fault, guard)
        rows.append(row)
        if problems:
            failures.append("k={} {} {} {} {}: ".format(*case) + "; ".join(problems[:3]))
    what = "the CPU replay of the launch" if emulate else "the GPU"
    worst = {key: max([r["max_abs_diff"] for r in rows
                       if (r["interp"], r["dtype"]) == key] or [0.0]) for key in TOLERANCE}
    detail = (f"{len(rows) - len(failures)}/{len(rows)} cases of {BATCH} samples on {what}: "
              "equal to the CPU rows bit for bit, guard bands intact, every pixel written; "
              "max grey levels from the oracle: " +
              ", ".join(f"{i} {d} {worst[(i, d)]:.3g}" for i, d in TOLERANCE))
    return (FAIL if failures else PASS), detail, rows, failures


# -- sanitizer and speed -----------------------------------------------------------------------

def check_sanitizer(tool, out_dir, emulate=False, budget=UNBOUNDED):
    """The quick matrix under compute-sanitizer `tool` (over the CPU replay when emulated). A
    run without its "ERROR SUMMARY" line is a sanitizer that could not attach here: a SKIP in
    the tool's own words."""
    sanitizer = find_sanitizer()
    if sanitizer is None:
        return SKIP, "compute-sanitizer is neither on PATH nor beside nvcc"
    extra = ["--padding", "256"] if tool == "memcheck" else []
    cmd = [sanitizer, "--tool", tool, *extra, "--error-exitcode", "3", sys.executable,
           "-m", __spec__.name, "--only", "matrix", "--quick", "--guard", "0",
           *(["--emulate"] if emulate else []), "--out", os.path.join(out_dir, f"under_{tool}")]
    try:
        r = budget.run(cmd, f"compute-sanitizer --tool {tool}", 240, cwd=ROOT)
    except StepTimeout as e:
        return TIMEOUT, str(e)
    output = (r.stdout + r.stderr).splitlines()
    summary = [ln for ln in output if "ERROR SUMMARY" in ln]
    if not summary:
        said = " ".join(ln.strip() for ln in output if ln.strip())[-300:]
        return SKIP, (f"{tool} did not run here (exit code {r.returncode}): "
                      f"{said or 'no output'}")
    detail = summary[-1].strip("= ")
    return (PASS if r.returncode == 0 else FAIL), f"the quick matrix under {tool}: {detail}"


def speed_images():
    images, _ = coco_images(32)
    if len(images) < 32:
        rng = np.random.default_rng(3)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(32)]
    return images


def check_speed(h):
    images = speed_images()
    lines, figures = [], {}
    for name, k, interp, dtype, layout in (("collage k=4 nearest uint8 HWC", 4, "nearest",
                                            "uint8", "HWC"),
                                           ("collage k=4 nearest float CHW", 4, "nearest",
                                            "float", "CHW"),
                                           ("regular k=1 bilinear uint8 HWC", 1, "bilinear",
                                            "uint8", "HWC")):
        spec = Harness.spec(k, interp, dtype, layout, "RGB", BATCH)
        spec.max_size = 1333.0
        comps = [images[i % len(images)] for i in range(BATCH * k)]
        short = np.full((BATCH, k), 800, np.float32)
        flips = np.zeros((BATCH, k), np.int32)
        kernel_ms, copy_ms, written, read = h.time(spec, comps, short, flips)
        gbs = (written + read) / (kernel_ms / 1e3) / 1e9
        copy = (written + read) / (copy_ms / 1e3) / 1e9
        figures[name] = {"kernel_ms": kernel_ms, "GB_s": gbs, "memcpy_GB_s": copy,
                         "ratio": gbs / copy, "bytes_written": written, "bytes_read": read}
        lines.append(f"{name}: {kernel_ms:.3f} ms a batch of {BATCH}, {gbs:.0f} GB/s vs "
                     f"memcpy {copy:.0f} GB/s ({gbs / copy:.0%})")
    return PASS, "; ".join(lines), figures


# -- report ------------------------------------------------------------------------------------

def result_line(checks, order=CHECKS) -> str:
    """The last line: the failed and timed-out checks, and how many were skipped."""
    failed = [c for c in order if c in checks and checks[c][0] == FAIL]
    late = [c for c in order if c in checks and checks[c][0] == TIMEOUT]
    skipped = sum(1 for c in order if c in checks and checks[c][0] == SKIP)
    said = "; ".join(filter(None, [failed and "FAILED " + ", ".join(failed),
                                   late and "TIMED OUT " + ", ".join(late)]))
    return (f"result: {said or 'no check failed'}"
            + (f" ({skipped} skipped)" if skipped else ""))


def render(checks, header, order=CHECKS) -> str:
    """The report: the header line(s), then `[STATUS] check: detail` a check in `order`, then
    the result (bench/gpu/loader_check.py's too)."""
    lines = ([header] if isinstance(header, str) else list(header)) + \
        [f"[{checks[c][0]}] {c}: {checks[c][1]}" for c in order if c in checks]
    return "\n".join(lines + [result_line(checks, order)]) + "\n"


class Report:
    """OUT/gpu_kernel_check.json and .txt, written again as each check ends (renamed into
    place, flushed to disk) and its line printed at once: a run cut off at any point, in a
    short window on a node nobody prepared, leaves every finished check behind."""

    def __init__(self, out, mode, command):
        self.out, self.checks, self.header = out, {}, ["dst_dali kernel check"]
        self.fields = {"mode": mode, "gpu": None, "command": command, "reason": None}
        self.rows, self.extra = [], {}
        os.makedirs(out, exist_ok=True)

    def add(self, check, status, detail):
        self.checks[check] = (status, detail)
        print(f"[{status}] {check}: {detail}", flush=True)
        self.write()

    def stop(self, reason) -> int:
        """An early end (no nvcc, no GPU, a failed build): the reason, written; exit 1."""
        self.fields["reason"] = reason
        print(reason, flush=True)
        self.write()
        return 1

    def write(self):
        text = render(self.checks, self.header) + (
            f"stopped: {self.fields['reason']}\n" if self.fields["reason"] else "")
        data = {**self.fields, "checks": self.checks, "rows": self.rows, **self.extra}
        for name, body in (("gpu_kernel_check.json", json.dumps(data, indent=1)),
                           ("gpu_kernel_check.txt", text)):
            path = os.path.join(self.out, name)
            with open(path + ".tmp", "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)

    def exit_code(self) -> int:
        print(result_line(self.checks), flush=True)
        return 1 if any(c[0] in (FAIL, TIMEOUT) for c in self.checks.values()) else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU: the CPU replay of the kernel's launch in its place")
    ap.add_argument("--out", default=os.path.join(ROOT, "output"),
                    help="where gpu_kernel_check.json and the report go (default: output/)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "gpu_kernel_check"))
    ap.add_argument("--quick", action="store_true", help="a quarter of the matrix")
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--plant", choices=FAULTS, help="a fault the matrix must report")
    ap.add_argument("--guard", type=int, default=65536, help="guard band bytes (0: none)")
    ap.add_argument("--budget", type=float, default=480,
                    help="seconds the whole run may take, compiles and sanitizers included; "
                         "a step still running then is a TIMEOUT (default 480)")
    args = ap.parse_args(argv)
    budget = Budget(args.budget)
    mode = "emulated" if args.emulate else "gpu"
    report = Report(args.out, mode, "python3 -m bench.gpu.kernel_check " +
                    " ".join(argv if argv is not None else sys.argv[1:]))
    if nvcc() is None or not os.access(nvcc(), os.X_OK):
        return report.stop(f"no nvcc {'at ' + nvcc() if nvcc() else 'on PATH'} (set NVCC=): "
                           "the kernel check needs the CUDA toolkit")
    try:
        lib, seconds = build(args.build_dir, args.emulate, budget)
    except (RuntimeError, StepTimeout) as e:
        report.add("build", TIMEOUT if isinstance(e, StepTimeout) else FAIL, str(e))
        return report.stop("the harness did not build: nothing else can run")
    arch = "-arch=sm_75 (not launched)" if args.emulate else "-arch=native"
    report.add("build", PASS, f"nvcc {arch} in {seconds:.0f} s")
    h = Harness(lib)
    gpu, driver, runtime = h.device()
    floor = h.driver_floor(driver)
    report.fields.update(driver=driver, runtime=runtime,
                         gpu=None if args.emulate else gpu)
    if gpu is None and not args.emulate:
        return report.stop(f"no usable CUDA GPU here (driver {driver}, runtime {runtime}): "
                           "nothing was run on a GPU; `make gpu-kernel-check EMULATE=1` runs "
                           "the matrix on the CPU" + (f"; {floor}" if floor else ""))
    report.header = [f"dst_dali kernel check ({mode}): "
                     f"{'GPU ' + gpu if gpu and not args.emulate else 'no GPU used'}, "
                     f"CUDA driver {driver // 1000}.{driver % 1000 // 10}, runtime "
                     f"{runtime // 1000}.{runtime % 1000 // 10}, {platform.node()}"]
    coco, note = coco_images(48)
    pool = procedural_images(np.random.default_rng(7)) + coco
    report.header.append(f"images: {len(PROCEDURAL_SIZES)} procedural, {note}")
    print("\n".join(report.header), flush=True)

    if "driver" in args.only:
        report.add("driver", *((SKIP, "emulated: no GPU") if args.emulate else (FAIL, floor)
                               if floor else
                               (PASS, "the driver runs the CUDA runtime this build uses")))
    if "kernel" in args.only:
        try:
            report.add("kernel", *kernel_quality(build_dir=args.build_dir, budget=budget))
        except StepTimeout as e:
            report.add("kernel", TIMEOUT, str(e))
    if "matrix" in args.only:
        status, detail, report.rows, failures = check_matrix(h, pool, args.emulate, args.quick,
                                                             args.plant, args.guard)
        report.header += [f"  FAIL {f}" for f in failures]
        for f in failures:
            print(f"  FAIL {f}", flush=True)
        report.add("matrix", status, detail)
    if "boxes" in args.only:
        report.add("boxes", *check_boxes(h, pool, np.random.default_rng(11)))
    for tool in ("memcheck", "initcheck"):
        if tool in args.only:
            report.add(tool, *check_sanitizer(tool, args.out, args.emulate, budget))
    if "speed" in args.only:
        if args.emulate:
            report.add("speed", SKIP, "emulated: no GPU to time")
        else:
            try:  # a CUDA error here fails this line; the report is still written
                status, detail, report.extra["speed"] = check_speed(h)
                report.add("speed", status, detail)
            except RuntimeError as e:
                report.add("speed", FAIL, f"CUDA error while timing: {e}")
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
