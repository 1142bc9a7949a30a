"""The CUDA toolchain as the kernel kit drives it, every call within the run's time budget: the
harness library built by nvcc, the kernel's build-quality check (ptxas stack frames, 64-bit
division in the PTX) for every architecture setup.py builds, and compute-sanitizer found beside
nvcc. python3 alone: nothing here imports numpy, DALI or torch."""
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "bench", "gpu", "kernel_check.cu")  # the harness: the kernel, ctypes
CSRC = os.path.join(ROOT, "csrc")
PASS, FAIL, SKIP, TIMEOUT = "PASS", "FAIL", "SKIP", "TIMEOUT"  # a check's status in the report
NVCC_FLAGS = ["-std=c++20", "-O3", "--fmad=false", "-Xcompiler", "-fPIC", "-Xcompiler",
              "-ffp-contract=off", f"-I{CSRC}"]


def nvcc():
    return os.environ.get("NVCC") or shutil.which("nvcc")


class StepTimeout(Exception):
    """A step's subprocess ran past its time: its own status, naming the step."""

    def __init__(self, step, seconds):
        super().__init__(f"{step} ran past its {seconds:.0f} s" if seconds > 0 else
                         f"{step}: no time was left of the run's --budget")


class Budget:
    """The run's time: each subprocess gets its own limit, and never more than is left, so the
    whole run ends within `seconds` wherever a step hangs."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def run(self, cmd, step, limit, **kwargs):
        seconds = min(limit, self.left())
        if seconds <= 0:
            raise StepTimeout(step, 0)
        # a session of its own, so that a timeout ends the step's children too (a sanitizer's
        # target, a wrapper's sleep), which would otherwise hold its output open
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, **kwargs)
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise StepTimeout(step, seconds) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# a run with no budget of its own (the tests' direct calls): each step's own limit
UNBOUNDED = Budget(float("inf"))


def setup_archs():
    """The SASS architectures setup.py builds the plugin for (DST_DALI_CUDA_ARCHS overrides)."""
    text = open(os.path.join(ROOT, "setup.py")).read()
    default = re.search(r'DEFAULT_CUDA_ARCHS = "([\d;]+)"', text).group(1)
    archs = os.environ.get("DST_DALI_CUDA_ARCHS", default).replace(",", ";")
    return [a.strip() for a in archs.split(";") if a.strip()]


def build(build_dir, emulate, budget=UNBOUNDED):
    """The harness library, for this GPU (-arch=native) or, emulated, for sm_75; kept while it
    is newer than its sources (the sanitizer runs reuse it)."""
    os.makedirs(build_dir, exist_ok=True)
    lib = os.path.join(build_dir, f"libdst_kernel_check_{'emulated' if emulate else 'gpu'}.so")
    sources = [SOURCE, *glob.glob(os.path.join(CSRC, "*.h"))]
    if os.path.exists(lib) and os.path.getmtime(lib) > max(map(os.path.getmtime, sources)):
        return lib, 0.0
    arch = "-arch=sm_75" if emulate else "-arch=native"
    # built beside and renamed into place: a process loading the library never sees it half
    # written by another that builds it too
    partial = f"{lib}.{os.getpid()}.tmp"
    cmd = [nvcc(), *NVCC_FLAGS, arch, "-shared", SOURCE, "-o", partial]
    t0 = time.time()
    r = budget.run(cmd, "the harness build (nvcc)", 300)
    if r.returncode != 0:
        raise RuntimeError("nvcc failed: " + (r.stderr or r.stdout)[-1500:])
    os.replace(partial, lib)
    return lib, time.time() - t0


def kernel_quality(source=SOURCE, archs=None, build_dir="build/gpu_kernel_check",
                   budget=UNBOUNDED):
    """(status, detail): every StitchKernel instance compiled for every architecture has a
    0-byte stack frame (ptxas -v) and its PTX no div/rem .s64/.u64. The result is kept in
    build_dir under a digest of what decides it (the sources, nvcc's version, the flags and
    the architectures): a rerun with none of them changed reads it back instead of compiling
    for every architecture again."""
    archs = archs or setup_archs()
    os.makedirs(build_dir, exist_ok=True)
    digest = hashlib.sha256()
    for path in [source, *sorted(glob.glob(os.path.join(CSRC, "*.h")))]:
        with open(path, "rb") as f:
            digest.update(path.encode() + b"\0" + f.read())
    version = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout
    digest.update("\0".join([version, *NVCC_FLAGS, *archs]).encode())
    kept = os.path.join(build_dir, "kernel_quality.json")
    if os.path.exists(kept):
        with open(kept) as f:
            saved = json.load(f)
        if saved.get("digest") == digest.hexdigest():
            return saved["status"], saved["detail"] + f" (read back from {kept}: the same " \
                "sources, nvcc, flags and architectures)"
    status, detail = _kernel_quality(source, archs, build_dir, budget)
    with open(kept + ".tmp", "w") as f:
        json.dump({"digest": digest.hexdigest(), "status": status, "detail": detail}, f)
    os.replace(kept + ".tmp", kept)
    return status, detail


def _kernel_quality(source, archs, build_dir, budget):
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    # -keep leaves each architecture's PTX (the one ptxas compiled) in build_dir: the PTX needs
    # no second front-end pass of its own
    r = budget.run([nvcc(), *NVCC_FLAGS, *gencode, "-Xptxas", "-v", "-keep", "-keep-dir",
                    build_dir, "-c", source, "-o", os.path.join(build_dir, "quality.o")],
                   f"the kernel build for sm_{', sm_'.join(archs)}", 300)
    if r.returncode != 0:
        return FAIL, "nvcc failed: " + r.stderr[-600:]
    # ptxas prints, per entry and architecture: "Compiling entry function 'NAME' for 'sm_XX'",
    # then "Function properties for NAME", then "N bytes stack frame, ...".
    frames, entry = [], None
    for line in r.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line)
        if m:
            entry = m.groups()
        m = re.search(r"(\d+) bytes stack frame", line)
        if m and entry and "StitchKernel" in entry[0]:
            frames.append((entry, int(m.group(1))))
            entry = None
    if not frames:
        return FAIL, "ptxas reported no StitchKernel entry"
    bad_frames = sorted({f"{e[1]}: {n} bytes" for e, n in frames if n > 0})
    divisions = []
    stem = os.path.splitext(os.path.basename(source))[0]
    for a in archs:
        # nvcc names a kept file by its architecture only when there are several
        ptx = os.path.join(build_dir, f"{stem}.compute_{a}.ptx" if len(archs) > 1 else
                           f"{stem}.ptx")
        if not os.path.exists(ptx):
            return FAIL, f"nvcc -keep left no PTX for compute_{a} ({ptx})"
        for name, body in ptx_functions(open(ptx).read()):
            if "StitchKernel" in name:
                divisions += [f"compute_{a}: {op}" for op in
                              re.findall(r"\b((?:div|rem)\.[su]64)\b", body)]
    kernels = len({e[0] for e, _ in frames})
    if bad_frames or divisions:
        return FAIL, ("; ".join(filter(None, [
            bad_frames and "stack frames: " + ", ".join(bad_frames),
            divisions and "64-bit divisions: " + ", ".join(sorted(set(divisions)))])))
    return PASS, (f"{kernels} kernel instances x sm_{', sm_'.join(archs)}: 0-byte stack "
                  "frames, no 64-bit division or remainder in the PTX")


def ptx_functions(ptx):
    """(name, body) of each .entry / .func in a PTX file."""
    heads = list(re.finditer(r"\.(?:entry|func)\s+(?:\([^)]*\)\s*)?(\w+)", ptx))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(ptx)
        yield m.group(1), ptx[m.start():end]


def find_sanitizer():
    """compute-sanitizer on PATH, or where the CUDA toolkit of nvcc keeps it (bin/ beside nvcc's
    real path, or the toolkit's compute-sanitizer/ folder): a node's PATH often has only nvcc."""
    found = shutil.which("compute-sanitizer")
    if found or nvcc() is None:
        return found
    bin_dir = os.path.dirname(os.path.realpath(nvcc()))
    for path in (os.path.join(bin_dir, "compute-sanitizer"),
                 os.path.join(os.path.dirname(bin_dir), "compute-sanitizer",
                              "compute-sanitizer")):
        if os.access(path, os.X_OK):
            return path
    return None
