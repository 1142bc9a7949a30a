"""The README's main command (the demo) and the benches run, on tiny counts."""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.callgrind import available as callgrind_available  # noqa: E402


def test_demo_makes_collages_with_more_small_boxes(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    from demo_collage import main
    stats = main(["--iters", "6", "--batch-size", "2", "--out", str(tmp_path),
                  "--device", "cpu"])
    regular, collage = stats["regular"], stats["collage"]
    assert regular["samples"] == collage["samples"] == 12
    assert regular["boxes"] > 0 and collage["boxes"] > regular["boxes"]  # 4 images a sample
    # the point of the method: collages hold a larger share of small objects
    assert collage["small"] / collage["boxes"] > regular["small"] / regular["boxes"]
    for s in (regular, collage):
        assert os.path.getsize(s["png"]) > 1000


def test_collage_op_bench_quick(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from collage_op import main
    main(["--quick", "--threads", "1", "--results-dir", str(tmp_path), "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    methods = {r["method"] for r in data["rows"]}
    assert methods == {"ours", "dali_builtins", "stitcher_uint8", "stitcher_float32", "opencv",
                       "memcpy"}
    for row in data["rows"]:
        assert row["ms_per_collage"] > 0 and row["output_GB_per_s"] > 0
    assert data["meta"]["machine"]["cores"] >= 1 and "command" in data["meta"]
    assert (tmp_path / "smoke.md").read_text().count("\n| ") == 7  # header + 6 rows


CALLGRIND_OUT = """\
events: Ir
ob=(1) /lib/libplugin.so
fl=(1) a.cc
fn=(1) stitch
10 100
+2 50
calls=3 12
12 400
cob=(2) /lib/libc.so
cfn=(2) memcpy
calls=1 0
13 30
ob=(2)
fn=(2)
0 30
ob=(1)
fn=(3) plan
* 7
"""


def test_callgrind_self_costs_by_object():
    """A callgrind file with name compression and call lines: each object's own cost, callees'
    inclusive costs not counted twice (stitch 150 + plan 7 in the plugin, memcpy's 30 once)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from callgrind import self_cost_by_object
    assert self_cost_by_object(CALLGRIND_OUT.splitlines(True)) == {"libplugin.so": 157,
                                                                     "libc.so": 30}


def test_instructions_beyond_decode_by_library():
    """A collage sample's count per library less k decoded images' (libraries either side
    only), largest change first."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from throughput import beyond_decode
    sample = {"by_object": {"libjpeg.so": 410.0, "plugin.so": 30.0}}
    image = {"by_object": {"libjpeg.so": 100.0, "libpython.so": 3.0}}
    assert beyond_decode(sample, image, 4) == [("plugin.so", 30.0), ("libpython.so", -12.0),
                                               ("libjpeg.so", 10.0)]


@pytest.mark.skipif(not callgrind_available(),
                    reason="valgrind, its callgrind.h or a C compiler is not installed")
def test_collage_op_bench_counts_instructions(tmp_path):
    """--callgrind: instructions a collage, bounded by the bytes each method writes (at most
    32 a store: valgrind's AVX2; at least 1 byte an instruction)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from collage_op import main
    main(["--quick", "--threads", "1", "--callgrind", "--results-dir", str(tmp_path),
          "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        meta = json.load(f)["meta"]
    out, counts = meta["output_bytes_per_collage"], meta["instructions_per_collage"]
    assert out / 32 <= counts["memcpy"]["total"] <= out
    assert out / 32 <= counts["ours"]["plugin"] <= counts["ours"]["total"]
    assert counts["opencv"]["total"] >= out / 32


def test_throughput_bench_quick(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from throughput import collage_pattern, main
    assert collage_pattern(0.5, 6) == ["regular", "collage"] * 3
    assert collage_pattern(0.0, 3) == ["regular"] * 3 and collage_pattern(1.0, 2) == ["collage"] * 2
    main(["--quick", "--results-dir", str(tmp_path), "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    rows = {r["variant"]: r for r in data["rows"]}
    assert {"detectron2", "stitcher", "dst_cpu", "decode_only", "dst_gpu"} <= set(rows)
    for name in ("detectron2", "stitcher", "dst_cpu", "decode_only"):
        r = rows[name]
        for key in ("samples_per_s", "images_per_s", "cpu_s_per_sample", "data_ms_p50",
                    "data_ms_p95", "data_ms_max", "peak_rss_mb", "main_thread_cpu_share"):
            assert r[key] >= 0, (name, key)
    # collage iterations consume k images a sample, regular ones 1
    assert rows["dst_cpu"]["images_per_s"] > rows["dst_cpu"]["samples_per_s"]
    assert rows["stitcher"]["collage_step_cpu_ms_per_batch"] > 0
    # DSTLoader's steps, from CollageStitch's own accounting, and a share of the loop's CPU
    for key in ("collage_step_cpu_ms_per_batch", "regular_step_cpu_ms_per_batch"):
        assert rows["dst_cpu"][key] > 0, key
    assert 0 < rows["dst_cpu"]["op_cpu_share"] < 1
    profile = data["meta"]["detectron2_mapper_profile"]
    assert profile["images"] == 8 and 0 < profile["decode"] < profile["total_s"]
    assert sum(profile[k] for k in ("decode", "resize_flip", "annotations",
                                    "rest_of_mapper")) == pytest.approx(profile["total_s"])
    assert any(n.startswith("Where the CPU goes, DSTLoader") for n in data["notes"])
    # --quick: one extra round of (DSTLoader, decode_only) all-regular and all-collage for
    # the CPU ratios of a regular and a collage sample
    ratios = data["meta"]["cpu_ratios"]
    assert sorted(ratios) == ["0.0", "1.0"]
    assert all(len(v) == 1 and v[0] > 0 for v in ratios.values())
    assert any(n.startswith("goal a regular sample <= 1.6x") for n in data["notes"])
    # that round's all-regular DSTLoader run against detectron2's run
    speedups = data["meta"]["regular_vs_detectron2"]
    assert len(speedups) == 1 and speedups[0] > 0
    assert any(n.startswith("goal DSTLoader regular >= 4x") for n in data["notes"])
    assert "not run" in rows["dst_gpu"].get("note", "") or "samples_per_s" in rows["dst_gpu"]
    assert (tmp_path / "smoke.png").stat().st_size > 5000
    assert data["meta"]["command"].startswith("python bench/throughput.py")


def test_collage_geometry_bench_quick(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from collage_geometry import main
    row, met = main(["--collages", "8", "--results-dir", str(tmp_path), "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    assert data["rows"] == [row] and row["collages"] >= 8
    assert set(met) == {"area_ratio_mean", "padding_mean", "scale", "mixed_orientation"}
    assert 0 <= row["padding_mean"] <= row["padding_max"] < 1
    assert 0 < row["scale_min"] <= row["scale_max"] and row["area_ratio_mean"] > 0
    assert data["meta"]["command"].startswith("python bench/collage_geometry.py")


def test_accuracy_arms_do_not_depend_on_their_turns(tmp_path):
    """The arms of a seed train in one process taking turns: an arm's run is the same whether it
    trains alone or between two others, a turn an iteration (its losses and AP bit for bit)."""
    import argparse
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from accuracy import make_dataset, run_seed
    data = str(tmp_path / "data")
    make_dataset(data, 0, 16, 8)
    logs = []
    for arms, block in ((["baseline"], 6), (["feedback_tau", "random", "baseline"], 1)):
        work = tmp_path / str(len(arms))
        run_seed(argparse.Namespace(iters=6, warmup=2, block=block, settle=0, arms=arms,
                                    work_dir=str(work)), data, 0)
        with open(work / "baseline_s0" / "metrics.json") as f:
            logs.append([{k: v for k, v in json.loads(line).items() if "loss" in k or "AP" in k}
                         for line in f])
    assert logs[0] == logs[1] and any("loss_box_reg" in row for row in logs[0])


def test_accuracy_time_vs_baseline_round_by_round():
    """An arm's time over the baseline's is taken within each round of the same seed's process,
    so a machine slowing down between rounds does not move it: here the arm is 2% slower than
    the baseline in every round while the machine's speed halves."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from accuracy import METRICS, summarize

    def run(arm, seed, round_s):
        return {"arm": arm, "seed": seed, "round_s": round_s, "collage_rate": 0.5, "tau": None,
                "iter_s": float(np.mean(list(round_s.values()))), "data_s": 0.001,
                **{m: 1.0 for m in METRICS}}
    base = {0: 1.0, 1: 1.5, 2: 2.0}
    runs = [run("baseline", seed, {r: s * (1 + seed) for r, s in base.items()})
            for seed in (0, 1)]
    runs += [run("feedback", seed, {r: 1.02 * s * (1 + seed) for r, s in base.items()
                                    if r != 2})  # a round the baseline has and the arm not
             for seed in (0, 1)]
    rows = {r["arm"]: r for r in summarize(runs)}
    assert rows["feedback"]["rounds"] == 4
    for key in ("time_vs_baseline", "time_vs_baseline_low", "time_vs_baseline_high"):
        assert rows["feedback"][key] == pytest.approx(0.02)
        assert rows["baseline"][key] == 0


def test_iteration_cost_bench_quick(tmp_path):
    """bench/iteration_cost.py --quick: per phase the regular and collage times and their
    difference, a ratio and a switching figure a round, DALI's CPU beside the iterations."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from iteration_cost import main
    main(["--quick", "--results-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")])
    with open(tmp_path / "iteration_cost.json") as f:
        cost = json.load(f)
    assert {r["phase"] for r in cost["rows"]} == {"data", "backbone", "proposals", "roi_heads",
                                                   "backward", "step", "feedback", "total"}
    assert len(cost["meta"]["ratios"]) == cost["meta"]["rounds"]
    assert len(cost["meta"]["switching"]) == cost["meta"]["rounds"]  # a mixed block a round
    assert all(r > 0 for r in cost["meta"]["switching"])
    # DALI prefetches the next batches while the model trains: its threads' CPU is counted
    assert all(cost["meta"]["counts"][kind]["dali_cpu_ms"] > 0 for kind in ("regular", "collage"))
    assert cost["meta"]["command"].startswith("python bench/iteration_cost.py")


def test_accuracy_bench_quick(tmp_path):
    """bench/accuracy.py --quick: the data's shares, and per arm the AP fields with their
    spread, the collage rate, the time per iteration and its ratio to the baseline's, round by
    round (not their values)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from accuracy import main
    main(["--quick", "--results-dir", str(tmp_path), "--name", "smoke",
          "--work-dir", str(tmp_path / "work")])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    shares = data["meta"]["data"]
    assert shares["train"]["small"] < shares["val"]["small"]  # the skew DST addresses
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"baseline", "feedback_tau"}
    for row in rows.values():
        for key in ("AP", "AP50", "APs", "APm", "APl", "AP_std", "APs_std", "collage_rate",
                    "iter_s", "data_s", "time_vs_baseline", "time_vs_baseline_low",
                    "time_vs_baseline_high"):
            assert key in row, key
        assert row["iter_s"] > 0 and 0 <= row["collage_rate"] <= 1
        # 6 iterations in turns of 2, the first of a turn not timed: one ratio a round
        assert row["rounds"] == 3
    assert rows["baseline"]["collage_rate"] == 0 and rows["feedback_tau"]["tau"] is not None
    assert rows["baseline"]["time_vs_baseline"] == 0  # its own blocks
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    assert data["meta"]["command"].startswith("python bench/accuracy.py")


def test_soak_bench_quick(tmp_path):
    """bench/soak.py over 300 iterations (its faults and kills scaled): every planted file set
    aside by both runs, the killed-and-resumed stream equal to the straight one, and every
    delivered slot as its sampler dealt it, but those of set-aside images."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from soak import main
    summary = main(["--iters", "300", "--work", str(tmp_path / "work"),
                    "--results-dir", str(tmp_path), "--name", "smoke"])
    assert summary["compared"] == 600 and summary["equal"] == 600
    for kind, v in summary["epochs"].items():
        assert v["epochs"] >= 2 and v["wrong"] == v["left_out_of_a_deal"] == 0, kind
    assert summary["epochs"]["regular"]["replaced"] > 0  # bad images were met, and replaced
    with open(tmp_path / "smoke.json") as f:
        rows = json.load(f)["rows"]
    assert len(rows) == 8 and all("NOT" not in r["straight"] + r["killed"] for r in rows)
    reasons = {r["fault"]: r["straight"] for r in rows}
    assert "cannot be read" in reasons["missing"] and "is empty" in reasons["empty"]
    assert "by its file's header, over max_pixels" in reasons["header_over_limit"]
    assert "in its entry, over max_pixels" in reasons["entry_over_limit"]
    assert "does not decode" in reasons["corrupt"] and "decodes to" in reasons["larger"]
