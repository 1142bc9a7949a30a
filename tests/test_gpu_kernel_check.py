"""make gpu-kernel-check (bench/gpu/kernel_check.py): the CUDA kernel alone, with no DALI, torch
or detectron2. Here, without a GPU, its matrix runs on the CPU replay of the kernel's launch;
faults planted in the harness must each be reported, and the kernel's build checks must fail
on a kernel that has a stack frame or a 64-bit division."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.gpu import kernel_check as gpu_kernel_check, toolchain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "gpu_kernel_check")

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")

# Imported by Python at start-up (PYTHONPATH): torch, DALI and detectron2 cannot be imported.
BLOCKER = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "nvidia", "detectron2", "torchvision"):
            raise ImportError(f"{name} is blocked: the kernel check must not need it")
sys.meta_path.insert(0, _Blocked())
"""


def blocked_env(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.mark.slow
def test_make_gpu_kernel_check_emulated_passes_the_whole_matrix_without_dali(tmp_path):
    env = blocked_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    assert probe.returncode != 0  # the blocker works
    out = tmp_path / "out"
    r = subprocess.run(["make", "-s", "gpu-kernel-check", "EMULATE=1", f"OUT={out}",
                        f"PYTHON={sys.executable}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "gpu_kernel_check.json").read_text())
    assert report["mode"] == "emulated" and report["gpu"] is None
    rows = report["rows"]
    combos = {(r["k"], r["interp"], r["dtype"], r["layout"], r["channels"]) for r in rows}
    assert combos == {(k, i, d, l, c) for k in (1, 4, 9, 16) for i in ("nearest", "bilinear")
                      for d in ("uint8", "float") for l in ("HWC", "CHW")
                      for c in ("RGB", "BGR")}
    assert all(r["status"] == "PASS" and r["batch"] >= 8 for r in rows)
    assert sum(r["flipped"] for r in rows) > 0
    statuses = {c: s for c, (s, _) in report["checks"].items()}
    assert statuses == {"build": "PASS", "driver": "SKIP", "kernel": "PASS", "matrix": "PASS", "boxes": "PASS",
                        "memcheck": "SKIP", "initcheck": "SKIP", "speed": "SKIP"}
    assert r.stdout.splitlines()[-1] == "result: no check failed (4 skipped)"
    assert "coco128 images decoded" in r.stdout  # OpenCV is in the test environment


def test_make_gpu_kernel_check_installs_nothing():
    # as a user runs it: not as a sub-make of `make test`, whose settings it would inherit
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "--no-print-directory", "gpu-kernel-check"], cwd=ROOT,
                         capture_output=True, text=True, env=env).stdout
    assert dry.strip() == "python3 -m bench.gpu.kernel_check  --out output", dry


@pytest.mark.slow
@pytest.mark.parametrize("fault,symptom", [("skip_row", "depend on the sentinel (unwritten)"),
                                           ("write_past_end", "guard bands overwritten"),
                                           ("oracle_pixel", "grey levels from the oracle")])
def test_planted_faults_are_each_reported_as_fail(tmp_path, fault, symptom):
    r = subprocess.run([sys.executable, "-m", "bench.gpu.kernel_check", "--emulate", "--quick",
                        "--only", "matrix", "--plant", fault, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    failures = [ln for ln in r.stdout.splitlines() if ln.startswith("  FAIL ")]
    rows = json.loads((tmp_path / "gpu_kernel_check.json").read_text())["rows"]
    assert len(failures) == len(rows) > 0 and all(row["status"] == "FAIL" for row in rows)
    assert all(symptom in ln for ln in failures), failures[:3]
    assert "[FAIL] matrix" in r.stdout and r.stdout.splitlines()[-1] == "result: FAILED matrix"


PLANTED_KERNEL = r"""
struct Params { float v[14]; };
__device__ __noinline__ float Pick(const Params &p, int i) { return p.v[i % 14]; }
__global__ void StitchKernel(float *out, Params p, long long a, long long b) {
  out[threadIdx.x] = Pick(p, threadIdx.x) + static_cast<float>(a / b);
}
"""


def test_kernel_build_check_fails_on_a_stack_frame_and_a_64_bit_division(tmp_path):
    source = tmp_path / "planted.cu"
    source.write_text(PLANTED_KERNEL)
    status, detail = toolchain.kernel_quality(str(source), ["75"], str(tmp_path))
    assert status == "FAIL"
    assert "stack frames: sm_75" in detail and "div.s64" in detail, detail


CLEAN_KERNEL = r"""
__global__ void StitchKernel(float *out, float v) { out[threadIdx.x] = v; }
"""


def test_kernel_build_check_is_read_back_only_for_the_same_source(tmp_path):
    """The result kept in the build folder stands for what it was computed from: the same
    source reads it back; an edited one, or another architecture, is compiled and checked
    again."""
    source = tmp_path / "kernel.cu"
    source.write_text(PLANTED_KERNEL)
    first = toolchain.kernel_quality(str(source), ["75"], str(tmp_path))
    again = toolchain.kernel_quality(str(source), ["75"], str(tmp_path))
    assert first[0] == again[0] == "FAIL"
    assert "read back" not in first[1] and again[1].startswith(first[1] + " (read back from")
    source.write_text(CLEAN_KERNEL)
    status, detail = toolchain.kernel_quality(str(source), ["75"], str(tmp_path))
    assert status == "PASS" and "read back" not in detail, detail
    other = toolchain.kernel_quality(str(source), ["80"], str(tmp_path))[1]
    assert "sm_80" in other and "read back" not in other  # another architecture: compiled


def test_ptx_functions_split_entries():
    ptx = ".visible .entry A(\n.param .u64 x)\n{ div.s64 %rd1; }\n.func B()\n{ add.s32 %r1; }\n"
    bodies = dict(toolchain.ptx_functions(ptx))
    assert set(bodies) == {"A", "B"} and "div.s64" in bodies["A"] and "div" not in bodies["B"]


def test_oracle_size_rule_equals_detectron2s():
    """The oracle's ResizeShortestEdge rule, written out so that it needs numpy alone, is
    detectron2's."""
    from detectron2.data.transforms import ResizeShortestEdge

    from bench.oracle import resize_shortest_edge_shape
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(1, 3000, 2))
        short, cap = float(rng.integers(1, 1200)), float(rng.integers(1, 2000))
        assert resize_shortest_edge_shape(h, w, short, cap) == \
            ResizeShortestEdge.get_output_shape(h, w, short, cap), (h, w, short, cap)


def test_driver_floor_names_the_driver_found_and_the_one_needed(tmp_path):
    """The rule the plugin's GPU backend enforces when it loads (csrc/collage_kernel.h)."""
    lib, _ = toolchain.build(BUILD, emulate=True)  # the kit's own, built once a run
    h = gpu_kernel_check.Harness(lib)
    old = h.driver_floor(12080, 13000)
    assert "CUDA 12.8" in old and "CUDA 13.0 runtime" in old and "R580" in old, old
    assert "no driver found" in h.driver_floor(0, 13000)
    assert h.driver_floor(13000, 13000) == h.driver_floor(13020, 13010) == ""
    assert h.driver_floor(12000, 12040) == "" and "R525" in h.driver_floor(11080, 12040)


def test_oracle_sizes_are_float64_under_numpy_2s_promotion():
    """numpy 2 keeps a float32 short side in float32 (NEP 50); the oracle's size rule must
    still be detectron2's double arithmetic. Under numpy 1, NEP 50's promotion is switched on
    for the test (np._set_promotion_state), so the check runs whichever numpy is here."""
    from bench.oracle import resize_shortest_edge_shape
    state = getattr(np, "_get_promotion_state", lambda: "weak")()
    if state != "weak":
        np._set_promotion_state("weak")
    try:
        assert type(np.float32(800) / 480) is np.float32  # the promotion that broke it
        moved = [(h, w, s) for h in range(100, 2000, 7) for w in range(100, 2000, 13)
                 for s in (640.0, 672.0, 704.0, 800.0)
                 if resize_shortest_edge_shape(h, w, np.float32(s), np.float32(1333)) !=
                 resize_shortest_edge_shape(h, w, s, 1333.0)]
    finally:
        if state != "weak":
            np._set_promotion_state(state)
    assert moved == []


# -- a report that always comes back -----------------------------------------------------------

def kit(tmp_path, *args, path=None, nvcc=None, timeout=120):
    """The kit as a user runs it, with stand-in tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "NVCC"}
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    if nvcc is not None:
        env["NVCC"] = nvcc
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("gpu_kernel_check.*"):
        old.unlink()  # each call's own report
    r = subprocess.run([sys.executable, "-m", "bench.gpu.kernel_check", "--out", str(out),
                        "--build-dir", BUILD, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return r, json.loads((out / "gpu_kernel_check.json").read_text())


def stand_in(folder, body):
    folder.mkdir(exist_ok=True)
    tool = folder / "compute-sanitizer"
    tool.write_text("#!/bin/sh\n" + body + "\n")
    tool.chmod(0o755)
    return str(folder)


@pytest.mark.slow
def test_a_hung_sanitizer_is_a_timeout_within_the_budget(tmp_path):
    hangs = stand_in(tmp_path / "bin", "sleep 600")
    kit(tmp_path, "--emulate", "--only", "build")  # built first: the budget is the sanitizers'
    started = time.monotonic()
    r, report = kit(tmp_path, "--emulate", "--only", "memcheck", "initcheck", "--budget", "3",
                    path=hangs)
    assert time.monotonic() - started < 60  # the sleeping child went with its step
    assert r.returncode == 1, r.stdout + r.stderr
    statuses = {c: s for c, (s, _) in report["checks"].items()}
    assert statuses == {"build": "PASS", "memcheck": "TIMEOUT", "initcheck": "TIMEOUT"}
    assert "compute-sanitizer --tool memcheck ran past" in report["checks"]["memcheck"][1]
    assert r.stdout.splitlines()[-1] == "result: TIMED OUT memcheck, initcheck"
    assert "Traceback" not in r.stdout + r.stderr


def test_a_sanitizer_that_cannot_attach_is_a_skip_in_its_own_words(tmp_path):
    unsupported = stand_in(tmp_path / "bin", 'echo "========= Device not supported"; exit 1')
    r, report = kit(tmp_path, "--emulate", "--only", "memcheck", "initcheck",
                    path=unsupported)
    assert r.returncode == 0, r.stdout + r.stderr
    for tool in ("memcheck", "initcheck"):
        status, detail = report["checks"][tool]
        assert status == "SKIP" and "Device not supported" in detail, detail
    assert r.stdout.splitlines()[-1] == "result: no check failed (2 skipped)"


def test_a_sanitizer_is_found_beside_nvcc_or_is_a_skip(tmp_path):
    """Not on PATH: the one in nvcc's own bin/ is used (here a stand-in beside a wrapper nvcc);
    none at all: a SKIP saying where it was looked for."""
    toolkit = tmp_path / "cuda" / "bin"
    toolkit.mkdir(parents=True)
    stand_in(toolkit, 'echo "========= ERROR SUMMARY: 0 errors"; exit 0')
    wrapper = toolkit / "nvcc"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('nvcc')} \"$@\"\n")
    wrapper.chmod(0o755)
    r, report = kit(tmp_path, "--emulate", "--only", "memcheck", nvcc=str(wrapper))
    assert report["checks"]["memcheck"] == ["PASS", "the quick matrix under memcheck: "
                                            "ERROR SUMMARY: 0 errors"], r.stdout + r.stderr
    (toolkit / "compute-sanitizer").unlink()
    r, report = kit(tmp_path, "--emulate", "--only", "memcheck", nvcc=str(wrapper))
    assert report["checks"]["memcheck"] == [
        "SKIP", "compute-sanitizer is neither on PATH nor beside nvcc"]


def test_without_a_gpu_or_nvcc_the_report_says_why_and_exits_non_zero(tmp_path):
    r, report = kit(tmp_path)  # this machine: nvcc, no GPU
    assert r.returncode == 1 and report["mode"] == "gpu" and report["gpu"] is None
    assert report["reason"].startswith("no usable CUDA GPU here") and \
        "nothing was run on a GPU" in report["reason"]
    assert report["checks"]["build"][0] == "PASS"
    r, report = kit(tmp_path / "given", nvcc=str(tmp_path / "missing" / "nvcc"))
    assert r.returncode == 1 and report["reason"].startswith(
        f"no nvcc at {tmp_path / 'missing' / 'nvcc'} (set NVCC=)"), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "bench.gpu.kernel_check", "--out",
                        str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True,
                       env={**{k: v for k, v in os.environ.items() if k != "NVCC"},
                            "PATH": os.path.dirname(sys.executable)})
    report = json.loads((tmp_path / "none" / "gpu_kernel_check.json").read_text())
    assert r.returncode == 1 and report["reason"].startswith("no nvcc on PATH")


def test_a_run_cut_off_leaves_every_finished_check_on_disk(tmp_path):
    """Killed while a sanitizer hangs: the checks before it are on disk, as they ended."""
    hangs = stand_in(tmp_path / "bin", "sleep 600")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bench.gpu.kernel_check", "--emulate",
                             "--quick", "--only", "driver", "boxes", "memcheck", "--out",
                             str(out), "--build-dir", BUILD], cwd=ROOT,
                            env={**os.environ, "PATH": f"{hangs}:{os.environ['PATH']}"},
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("[PASS] boxes"):
            break
    time.sleep(1)  # the sanitizer step has started
    os.killpg(proc.pid, 9)
    proc.wait()
    report = json.loads((out / "gpu_kernel_check.json").read_text())
    assert {c: s for c, (s, _) in report["checks"].items()} == {
        "build": "PASS", "driver": "SKIP", "boxes": "PASS"}
    assert "[PASS] boxes" in (out / "gpu_kernel_check.txt").read_text()
