"""make gpu-kernel-check (bench/gpu/kernel_check.py): the CUDA kernel alone, with no DALI, torch
or detectron2. Here, without a GPU, its matrix runs on the CPU replay of the kernel's launch;
faults planted in the harness must each be reported, and the kernel's build checks must fail
on a kernel that has a stack frame or a 64-bit division."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench.gpu import kernel_check as gpu_kernel_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    assert r.stdout.splitlines()[-1] == "result: no check failed"
    assert "coco128 images decoded" in r.stdout  # OpenCV is in the test environment


def test_make_gpu_kernel_check_installs_nothing():
    # as a user runs it: not as a sub-make of `make test`, whose settings it would inherit
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "--no-print-directory", "gpu-kernel-check"], cwd=ROOT,
                         capture_output=True, text=True, env=env).stdout
    assert dry.strip() == "python3 -m bench.gpu.kernel_check  --out output", dry


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
    status, detail = gpu_kernel_check.kernel_quality(str(source), ["75"], str(tmp_path))
    assert status == "FAIL"
    assert "stack frames: sm_75" in detail and "div.s64" in detail, detail


def test_ptx_functions_split_entries():
    ptx = ".visible .entry A(\n.param .u64 x)\n{ div.s64 %rd1; }\n.func B()\n{ add.s32 %r1; }\n"
    bodies = dict(gpu_kernel_check.ptx_functions(ptx))
    assert set(bodies) == {"A", "B"} and "div.s64" in bodies["A"] and "div" not in bodies["B"]


def test_oracle_size_rule_equals_detectron2s():
    """The oracle's own ResizeShortestEdge rule (used where detectron2 is missing) is
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
    lib, _ = gpu_kernel_check.build(str(tmp_path), emulate=True)
    h = gpu_kernel_check.Harness(lib)
    old = h.driver_floor(12080, 13000)
    assert "CUDA 12.8" in old and "CUDA 13.0 runtime" in old and "R580" in old, old
    assert "no driver found" in h.driver_floor(0, 13000)
    assert h.driver_floor(13000, 13000) == h.driver_floor(13020, 13010) == ""
    assert h.driver_floor(12000, 12040) == "" and "R525" in h.driver_floor(11080, 12040)
