"""The README's main command (the demo) and the benches run, on tiny counts."""
import json
import os

import numpy as np
import pytest

from bench.callgrind import available as callgrind_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_makes_collages_with_more_small_boxes(tmp_path):
    from train.demo_collage import main
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
    from bench.collage_op import main
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
    from bench.callgrind import self_cost_by_object
    assert self_cost_by_object(CALLGRIND_OUT.splitlines(True)) == {"libplugin.so": 157,
                                                                     "libc.so": 30}


def test_instructions_beyond_decode_by_library():
    """A collage sample's count per library less k decoded images' (libraries either side
    only), largest change first."""
    from bench.throughput import beyond_decode
    sample = {"by_object": {"libjpeg.so": 410.0, "plugin.so": 30.0}}
    image = {"by_object": {"libjpeg.so": 100.0, "libpython.so": 3.0}}
    assert beyond_decode(sample, image, 4) == [("plugin.so", 30.0), ("libpython.so", -12.0),
                                               ("libjpeg.so", 10.0)]


@pytest.mark.skipif(not callgrind_available(),
                    reason="valgrind, its callgrind.h or a C compiler is not installed")
def test_collage_op_bench_counts_instructions(tmp_path):
    """--callgrind: instructions a collage, bounded by the bytes each method writes (at most
    32 a store: valgrind's AVX2; at least 1 byte an instruction)."""
    from bench.collage_op import main
    main(["--quick", "--threads", "1", "--callgrind", "--results-dir", str(tmp_path),
          "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        meta = json.load(f)["meta"]
    out, counts = meta["output_bytes_per_collage"], meta["instructions_per_collage"]
    assert out / 32 <= counts["memcpy"]["total"] <= out
    assert out / 32 <= counts["ours"]["plugin"] <= counts["ours"]["total"]
    assert counts["opencv"]["total"] >= out / 32


def test_builtins_peer_makes_the_methods_batches():
    """bench/throughput.py's peer from DALI's own operators (decode, fn.resize, fn.flip,
    fn.multi_paste) makes the batches DSTLoader makes: each collage is the method's collage of
    its images (bench/oracle.py on OpenCV's decode) within a grey level on average,
    the pad at 0; each regular image its file resized and flipped; boxes in their cells."""
    import cv2

    from bench import oracle as reference
    from bench.throughput import BuiltinsVariant, parse_args
    args = parse_args(["--batch", "2", "--threads", "1", "--pipelines", "2"])
    peer = BuiltinsVariant(args, "cpu")
    for kind in ("collage", "regular", "collage", "collage", "regular"):  # both pipelines
        out, plan = peer.batch(kind)
        k = args.k if kind == "collage" else 1
        for b, (image, boxes) in enumerate(out):
            mine = slice(b * k, (b + 1) * k)
            files = [peer.index.file_paths[p] for p in plan["positions"][mine]]
            decoded = [cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB) for f in files]
            got = image.numpy().astype(np.float64)
            if kind == "collage":
                want, places = reference.collage(decoded, plan["short"][mine],
                                                 plan["flips"][mine], args.max_size)
                filled = np.zeros(got.shape[:2], bool)
                for y0, x0, h, w in places:
                    filled[y0:y0 + h, x0:x0 + w] = True
                assert (got[~filled] == 0).all()
            else:
                (y0, x0, h, w), = places = plan["places"][mine]
                want = cv2.resize(decoded[0], (w, h), interpolation=cv2.INTER_LINEAR)
                want = want[:, ::-1] if plan["flips"][b] else want
            assert got.shape == want.shape, (kind, files)
            assert np.abs(got - want).mean() < 1.0, (kind, files, np.abs(got - want).mean())
            cells = np.array([[x0, y0, x0 + w, y0 + h] for y0, x0, h, w in places])
            owner = np.repeat(np.arange(k), [len(peer.index.boxes[p])
                                             for p in plan["positions"][mine]])
            assert len(boxes) == len(owner)
            assert (boxes[:, :2] >= cells[owner, :2] - 1e-6).all()
            assert (boxes[:, 2:] <= cells[owner, 2:] + 1e-6).all()


def test_throughput_bench_quick(tmp_path):
    from bench.throughput import collage_pattern, main
    assert collage_pattern(0.5, 6) == ["regular", "collage"] * 3
    assert collage_pattern(0.0, 3) == ["regular"] * 3 and collage_pattern(1.0, 2) == ["collage"] * 2
    variants = ["detectron2", "stitcher", "dst_cpu", "builtins_cpu", "dst_gpu", "decode_only",
                "ultralytics", "dst_ultralytics"]
    main(["--quick", "--results-dir", str(tmp_path), "--name", "smoke", "--variants", *variants])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(variants) <= set(rows)
    for name in ("detectron2", "stitcher", "dst_cpu", "builtins_cpu", "decode_only"):
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
    # make gpu-check's line: DSTLoader over the built-ins on the same device, in the same run
    from bench.gpu.loader_check import throughput_figures
    ratio = rows["dst_cpu"]["samples_per_s"] / rows["builtins_cpu"]["samples_per_s"]
    assert f"dst_cpu / builtins_cpu at collage fraction 0.5: {ratio:.2f}x" in throughput_figures(
        data["rows"])
    # the YOLO row: DSTLoader's square batches (k images a collage) over Ultralytics' loader's
    yolo, dst = rows["ultralytics"], rows["dst_ultralytics"]
    assert yolo["samples_per_s"] > 0 and yolo["images_per_s"] == yolo["samples_per_s"]
    assert dst["images_per_s"] > dst["samples_per_s"] > 0
    note = next(n for n in data["notes"] if n.startswith("YOLO: "))
    assert f"{dst['samples_per_s'] / yolo['samples_per_s']:.2f}x its default loader" in note
    assert data["meta"]["imgsz"] == 640 and data["meta"]["yolo_data"].endswith("data.yaml")
    assert (tmp_path / "smoke.png").stat().st_size > 5000
    assert data["meta"]["command"].startswith("python -m bench.throughput")


def test_collage_geometry_bench_quick(tmp_path):
    from bench.collage_geometry import main
    row, met = main(["--collages", "8", "--results-dir", str(tmp_path), "--name", "smoke"])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    assert data["rows"] == [row] and row["collages"] >= 8
    assert set(met) == {"area_ratio_mean", "padding_mean", "scale", "mixed_orientation"}
    assert 0 <= row["padding_mean"] <= row["padding_max"] < 1
    assert 0 < row["scale_min"] <= row["scale_max"] and row["area_ratio_mean"] > 0
    assert data["meta"]["command"].startswith("python -m bench.collage_geometry")


def test_accuracy_set_splits_by_source_with_one_scale_mix(tmp_path):
    """bench/evidence/accuracy_set.py: each coco128 source image gives its cut-outs to one split,
    every class has source images in every split, and every split has COCO's scale problem (30-50%
    of objects small, small objects in about half the images), by areas recomputed from the written
    boxes."""
    from bench.evidence.accuracy_set import (
        CLASSES,
        SIZE,
        cutouts,
        make_dataset,
        split_sources,
    )
    sources = cutouts()
    splits = split_sources(sources, np.random.default_rng(0))
    dealt = [i for ids in splits.values() for i in ids]
    assert sorted(dealt) == sorted(sources)  # each source image in exactly one split
    for ids in splits.values():
        assert {c for i in ids for c, _ in sources[i]} == set(range(len(CLASSES)))
    figures = make_dataset(str(tmp_path), 0, 160, 160, 160)
    for split in ("train", "val", "test"):
        with open(tmp_path / f"{split}.json") as f:
            coco = json.load(f)
        assert len(coco["images"]) == 160
        boxes = np.array([a["bbox"] for a in coco["annotations"]], np.float64)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= SIZE).all()
        small = boxes[:, 2] * boxes[:, 3] < 32 ** 2
        assert 0.3 <= small.mean() <= 0.5 and figures[split]["small"] == pytest.approx(
            small.mean(), abs=1e-4)
        with_small = {a["image_id"] for a, s in zip(coco["annotations"], small) if s}
        assert 0.35 <= len(with_small) / 160 <= 0.65
    assert make_dataset(str(tmp_path), 0, 160, 160, 160) == figures  # made once


def test_accuracy_units_yoked_turn_independent_and_resumable(tmp_path):
    """Seeds 0 and 1 in one process: each random arm replays, iteration by iteration, the
    kinds of the other seed's feedback arm; the unit stopped at a checkpoint and continued by a
    new process trains as one that ran straight through with other turns (blocks of 1 against
    2): every arm's kinds, r and losses, bit for bit. Seed 2 alone replays seed 1's feedback
    arm from its history file, which must hold the schedule's iterations."""
    import argparse

    from bench.evidence.accuracy import run_unit, write_history_files
    from bench.evidence.accuracy_set import make_dataset
    from dst_dali.feedback.history import read_history_csv, write_history_csv
    data = str(tmp_path / "data")
    make_dataset(data, 0, 16, 4, 4)
    arms = {0: ["baseline", "feedback", "random"], 1: ["feedback", "random"],
            2: ["feedback", "random"]}
    histories = str(tmp_path / "histories")

    def unit(name, block, seeds=(0, 1), stop_at=None):
        args = argparse.Namespace(iters=5, block=block, settle=0, period=2, stop_at=stop_at,
                                  stop_by=None, work_dir=str(tmp_path / name))
        return run_unit(args, data, seeds, arms, 0.5, histories)
    assert unit("stopped", 1, stop_at=2) is None
    assert not (tmp_path / "stopped" / "baseline_s0" / "model_final.pth").exists()
    states = sorted((tmp_path / "stopped").glob("*/dst_state/rank0_iter0000002.pth"))
    assert len(states) == 5
    saved = [p.stat().st_mtime_ns for p in states]
    runs = {name: {(r["arm"], r["seed"]): r["history"] for r in unit(name, block)}
            for name, block in (("stopped", 1), ("straight", 2))}
    assert [p.stat().st_mtime_ns for p in states] == saved  # continued from there, not redone
    assert runs["stopped"] == runs["straight"]
    history = runs["straight"]
    for seed, mate in ((0, 1), (1, 0)):
        kinds = [h["kind"] for h in history["random", seed]]
        assert kinds == [h["kind"] for h in history["feedback", mate]]
        assert set(kinds) == {"regular", "collage"}  # something to replay
        assert kinds[1:] == [h["next"] for h in history["feedback", mate]][:-1]
        assert all(h["loss_box_reg"] > 0 for h in history["random", seed])
    assert history["random", 0] != history["feedback", 1]  # its own model and r
    assert [h["kind"] for h in history["baseline", 0]] == ["regular"] * 5
    assert ("baseline", 1) not in history

    write_history_files([{"arm": a, "seed": s, "history": h} for (a, s), h in history.items()],
                        histories)
    alone = {(r["arm"], r["seed"]): r["history"] for r in unit("alone", 2, seeds=(2,))}
    kinds = [h["kind"] for h in alone["random", 2]]
    assert kinds == [h["kind"] for h in history["feedback", 1]]
    assert kinds[1:] == [h["next"] for h in history["feedback", 1]][:-1]
    assert alone["random", 2] != history["feedback", 1]
    recorded = os.path.join(histories, "feedback_s1.csv.gz")
    write_history_csv(recorded, read_history_csv(recorded)["history"][:4])  # a run cut short
    with pytest.raises(RuntimeError, match="feedback_s1.csv.gz: 4 iterations recorded"):
        unit("short", 2, seeds=(2,))


def test_accuracy_statistics_are_paired_by_seed():
    """The paired differences and the time overhead: seed by seed, then a 95% t-interval over
    seeds (t(0.975, 2) = 4.3027 from tables); an arm 2% slower than the baseline in every round
    has overhead 2% however the machine's speed moves between rounds and seeds."""
    from bench.evidence.accuracy import METRICS, overhead, paired

    def run(arm, seed, ap, round_s):
        return {"arm": arm, "seed": seed, "round_s": round_s, **{m: ap for m in METRICS}}
    base = {"0": 1.0, "1": 1.5, "2": 2.0}
    runs = [run("baseline", seed, 10.0 + 5 * seed, {r: s * (1 + seed) for r, s in base.items()})
            for seed in (0, 1, 2)]
    runs += [run("feedback", seed, 10.0 + 5 * seed + seed + 1,
                 {r: 1.02 * s * (1 + seed) for r, s in base.items() if r != "2"})
             for seed in (0, 1, 2, 3)]  # seed 3 has no baseline: left out of the pairs
    diff = paired(runs, "feedback", "baseline", "APs")
    assert diff["seeds"] == 3 and diff["mean_diff"] == pytest.approx(2.0)
    half = 4.302653 * 1.0 / np.sqrt(3)  # differences 1, 2, 3: std 1
    assert diff["ci95"] == pytest.approx([2.0 - half, 2.0 + half], rel=1e-5)
    cost = overhead(runs)
    assert cost["seeds"] == 3 and cost["mean"] == pytest.approx(0.02)
    assert cost["ci95"] == pytest.approx([0.02, 0.02])


def test_iteration_cost_bench_quick(tmp_path):
    """bench/iteration_cost.py --quick: per phase the regular and collage times and their
    difference, a ratio and a switching figure a round, DALI's CPU beside the iterations."""
    from bench.iteration_cost import main
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
    assert cost["meta"]["command"].startswith("python -m bench.iteration_cost")


def test_accuracy_bench_quick(tmp_path):
    """bench/evidence/accuracy.py --quick: the data's figures per split, the pilot's curve and N,
    per arm the test metrics with their spread and the images seen, the paired differences with
    their CIs, the primary endpoint, the overhead, the histories and the paper's figures drawn from
    them (not their values); never over the committed results."""
    from bench.evidence.accuracy import PAIRED_METRICS, main
    with pytest.raises(SystemExit):
        main(["--quick"])  # would write over bench/results
    main(["--quick", "--results-dir", str(tmp_path), "--name", "smoke",
          "--work-dir", str(tmp_path / "work")])
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    for split in ("train", "val", "test"):
        shares = data["meta"]["data"][split]
        assert {"images", "objects", "small", "medium", "large"} <= set(shares)
        assert shares["small"] + shares["medium"] + shares["large"] == pytest.approx(1, abs=1e-3)
    pilot = data["meta"]["pilot"]
    assert [c["iter"] for c in pilot["curve"]] == [3, 6][:len(pilot["curve"])]
    assert pilot["N"] == data["meta"]["iters"] and "tau_calibrated" in pilot
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"baseline", "feedback", "random", "always_collage"}
    for arm, row in rows.items():
        assert row["seeds"] == (2 if arm == "always_collage" else 3)
        assert {"AP", "APs", "APm", "APl", "AP_std", "APs_std"} <= set(row)
    n = pilot["N"]
    assert rows["baseline"]["images_seen"] == 4 * n  # a batch of 4 images
    assert rows["always_collage"]["images_seen"] == 16 * n  # 4 collages of 4
    of = {f"{r['arm']}_s{r['seed']}": r for r in data["meta"]["runs"]}
    assert [(k, r["yoked_to"]) for k, r in of.items() if r["yoked_to"]] == [
        ("random_s0", "feedback_s1"), ("random_s1", "feedback_s0"), ("random_s2", "feedback_s1")]
    for run in of.values():
        if run["yoked_to"]:
            assert run["collage_rate"] == of[run["yoked_to"]]["collage_rate"]
    assert {(p["b"], p["metric"]) for p in data["paired"]} == {
        (b, m) for b in ("baseline", "random") for m in PAIRED_METRICS}
    assert all(p["seeds"] == 3 and len(p["ci95"]) == 2 for p in data["paired"])
    assert data["primary"] == {"a": "feedback", "b": "random", "metric": "APs"}
    assert data["overhead"]["seeds"] == 3 and data["overhead"]["ci95"][0] is not None
    histories = tmp_path / data["histories"]
    assert len(list(histories.glob("*.csv.gz"))) == 4 + 4 + 3
    for name in ("fig5_loss_shares.png", "fig6_share_distribution.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert data["meta"]["figures"][0].startswith("python -m dst_dali.plots --baseline")
    assert data["meta"]["command"].startswith("python -m bench.evidence.accuracy")
    # a second call reads the finished units back
    assert main(["--quick", "--results-dir", str(tmp_path), "--name", "smoke",
                 "--work-dir", str(tmp_path / "work")]) == data["rows"]


def test_committed_accuracy_results_hold_together():
    """The committed protocol's results: its paired statistics recomputed from its own runs
    (scipy's t quantile), each yoked arm's kinds those of the feedback run it replays (read from
    the histories), every arm's full schedule recorded, and the README stating the primary
    endpoint as the results do."""
    from scipy import stats
    results = os.path.join(ROOT, "bench", "results")
    with open(os.path.join(results, "accuracy.json")) as f:
        data = json.load(f)
    runs = {(r["arm"], r["seed"]): r for r in data["meta"]["runs"]}
    iters = data["meta"]["iters"]
    for p in data["paired"]:
        diffs = [runs[p["a"], s][p["metric"]] - runs[p["b"], s][p["metric"]]
                 for arm, s in sorted(runs) if arm == p["a"] and (p["b"], s) in runs]
        half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
        assert p["seeds"] == len(diffs) == data["meta"]["seeds"]
        assert p["mean_diff"] == pytest.approx(np.mean(diffs))
        assert p["ci95"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half])
    for row in data["rows"]:
        seeds = [s for arm, s in runs if arm == row["arm"]]
        assert row["AP"] == pytest.approx(np.mean([runs[row["arm"], s]["AP"] for s in seeds]))

    def kinds(name):
        path = os.path.join(results, data["histories"], f"{name}.csv.gz")
        return np.loadtxt(path, dtype=str, delimiter=",", skiprows=1, usecols=1)
    for (arm, seed), run in runs.items():
        assert len(kinds(f"{arm}_s{seed}")) == iters
        if run["yoked_to"]:
            assert np.array_equal(kinds(f"{arm}_s{seed}"), kinds(run["yoked_to"]))
    primary = next(p for p in data["paired"] if (p["a"], p["b"], p["metric"]) == tuple(
        data["primary"].values()))
    lo, hi = primary["ci95"]
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read().replace("−", "-")
    assert f"{primary['mean_diff']:+.2f} APs, 95% CI [{lo:+.2f}, {hi:+.2f}]".lstrip("+") in readme


def test_decoder_batching_bench_quick(tmp_path):
    """bench/decoder_batching.py --quick: one decoder over k·B images gives the k decoders'
    images in feed order (files read one image off would not), and both graphs' CPU and
    instructions a batch."""
    from bench.decoder_batching import build, decoded_images, main
    counted = callgrind_available()
    rows = {r["graph"]: r for r in main(["--quick", "--results-dir", str(tmp_path)]
                                        + ([] if counted else ["--no-callgrind"]))}
    assert rows["k_decoders"]["decoders"] == 4 and rows["one_decoder"]["decoders"] == 1
    assert all(r["cpu_ms"] > 0 and (not counted or r["instructions"] > 1e6)
               for r in rows.values())
    with open(tmp_path / "decoder_batching.json") as f:
        assert json.load(f)["meta"]["same_images"] is True
    folder = os.path.join(ROOT, "data", "coco128", "images")
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    split = decoded_images(build("k_decoders", files, 4, 2, images=True))
    one = decoded_images(build("one_decoder", files, 4, 2, images=True))
    off = decoded_images(build("one_decoder", files[1:], 4, 2, images=True))
    assert all(np.array_equal(a, b) for a, b in zip(split, one)) and len(one) == 8
    assert not any(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(split, off))


def test_soak_bench_quick(tmp_path):
    """bench/evidence/soak.py over 300 iterations (its faults and kills scaled): every planted file
    set aside by both runs, the killed-and-resumed stream equal to the straight one, and every
    delivered slot as its sampler dealt it, but those of set-aside images."""
    from bench.evidence.soak import main
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
