"""bench/gpu/loader_check.py (make gpu-check): its report without a GPU, and its exactness check run
against the CPU's replay of the CUDA launch, the one part that can run here."""
import os
import re
import subprocess
import sys

import pytest

from bench.gpu import loader_check as gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", "bench.gpu.loader_check", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.skipif(gpu_check.gpu_status() is None, reason="a GPU is here: the real check runs")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    r = run("--results-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("dst_dali GPU check, DALI ")
    assert lines[1].startswith("no CUDA GPU here (") and "nothing was run on a GPU" in lines[1]
    checks = [re.fullmatch(r"\[(PASS|FAIL|SKIP)\] (\w+): (.+)", ln) for ln in lines[2:-1]]
    assert all(checks), lines
    assert [m.group(2) for m in checks] == list(gpu_check.CHECKS)
    assert {m.group(1) for m in checks} == {"SKIP"}
    assert lines[-1] == f"result: no check failed ({len(gpu_check.CHECKS)} skipped)"
    assert r.stdout in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_exactness_check_passes_against_the_emulated_launch():
    r = run("--emulate", "--quick", "--no-write")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^\[PASS\] exactness: the emulated CUDA launch equals the CPU backend bit "
                     r"for bit: \d+ batches", r.stdout, re.M)


def test_report_names_the_failed_checks_in_order():
    report = gpu_check.render({"train": ("PASS", "20 iterations"),
                               "exactness": ("FAIL", "k=4: image differs"),
                               "memcheck": ("SKIP", "no tool")}, "header")
    assert report.splitlines() == ["header", "[FAIL] exactness: k=4: image differs",
                                   "[SKIP] memcheck: no tool", "[PASS] train: 20 iterations",
                                   "result: FAILED exactness (1 skipped)"]


def test_make_gpu_check_with_a_given_environment_installs_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    given = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check",
                            f"VENV={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                           env=env).stdout
    assert given.strip() == f"{tmp_path}/bin/python -m bench.gpu.loader_check", given
    default = subprocess.run(["make", "-n", "--no-print-directory", "-W", "setup.py",
                              "gpu-check"], cwd=ROOT, capture_output=True, text=True,
                             env=env).stdout
    assert "pip install" in default  # the default .venv is still made on first use
