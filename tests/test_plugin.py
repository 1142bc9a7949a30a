"""Building and loading the plugin: once per process, for the DALI it was built for."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=300)


def test_loading_twice_does_not_abort():
    # DALI aborts the process when it loads one plugin library twice.
    r = python("import importlib, dst_dali\n"
               "importlib.reload(dst_dali)\n"
               "dst_dali.load_plugin(); dst_dali.load_plugin()\n"
               "import nvidia.dali.fn as fn; assert hasattr(fn, 'collage_stitch')\n"
               "print('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_plugin_built_for_another_dali_is_refused():
    r = python("import nvidia.dali as dali\n"
               "dali.__version__ = '1.0.0'\n"
               "try:\n"
               "    import dst_dali\n"
               "except Exception as e:\n"
               "    print(type(e).__name__, e)\n")
    assert r.returncode == 0, r.stderr
    assert "PluginError" in r.stdout
    assert "was built for DALI 2." in r.stdout and "DALI 1.0.0 is installed" in r.stdout
    assert "rebuild" in r.stdout


@pytest.mark.slow
def test_cpu_only_build_switch(tmp_path):
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib",
                        str(tmp_path / "lib"), "--build-temp", str(tmp_path / "tmp")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "DST_DALI_CPU_ONLY": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nvcc" not in r.stdout.replace("DST_DALI_CPU_ONLY", "")
    (lib,) = (tmp_path / "lib" / "dst_dali").glob("_collage_stitch*.so")
    # A fresh process that loads only this library (loading two builds of one operator into
    # one process would abort it).
    r = python("import sys\n"
               "from nvidia.dali import backend, plugin_manager\n"
               "import importlib.util as u\n"
               "spec = u.spec_from_file_location('p', 'dst_dali/op/plugin.py')\n"
               "p = u.module_from_spec(spec); spec.loader.exec_module(p)\n"
               f"print(p.build_info({str(lib)!r}))\n"
               f"plugin_manager.load_library({str(lib)!r})\n"
               "print('CollageStitch' in backend.RegisteredCPUOps(),"
               " 'CollageStitch' in backend.RegisteredGPUOps())")
    assert r.returncode == 0, r.stderr
    info, registered = r.stdout.strip().splitlines()
    assert "'cuda': False" in info
    assert registered == "True False"


def test_host_cpu_stats_count_each_k_apart():
    """The totals benchmarks read: a k = 4 run of 3 collages adds 1 batch and 3 samples to
    k = 4 only, a k = 1 run to k = 1 only, each with the CPU its pixel tasks took; a plan_only
    run adds its CPU alone."""
    import numpy as np

    import dst_dali

    from .dali_helpers import run_collage
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(3)]
              for _ in range(4)]

    def delta(run):
        before = dst_dali.host_cpu_stats()
        run()
        return dst_dali.host_cpu_stats(since=before)

    d4 = delta(lambda: run_collage(images, short_side=600, max_size=1000, num_threads=2))
    assert list(d4) == [4] and d4[4]["batches"] == 1 and d4[4]["samples"] == 3
    d1 = delta(lambda: run_collage(images[:1], short_side=600, max_size=1000))
    assert list(d1) == [1] and d1[1]["batches"] == 1 and d1[1]["samples"] == 3
    # a 600x800 output per sample is far more than a microsecond of CPU
    assert d4[4]["cpu_s"] > 3e-6 * 3 and d1[1]["cpu_s"] > 3e-6 * 3
    # a GPU graph's host plan: its CPU is the batch's, the batch is the GPU operator's to count
    shapes = [[np.array(i.shape, np.int64) for i in comp] for comp in images]
    plan = delta(lambda: run_collage(shapes, short_side=600, max_size=1000, plan_only=True,
                                     image_layout=None))
    assert list(plan) == [4] and plan[4]["batches"] == plan[4]["samples"] == 0
    assert 0 < plan[4]["cpu_s"] < d4[4]["cpu_s"]
