"""The README's main command (the demo) and the speed benches run, on tiny counts (the
evidence experiments: test_evidence.py)."""
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


@pytest.mark.slow
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
    """bench/loaders.py's peer from DALI's own operators (decode, fn.resize, fn.flip,
    fn.multi_paste) makes the batches DSTLoader makes: each collage is the method's collage of
    its images (bench/oracle.py on OpenCV's decode) within a grey level on average,
    the pad at 0; each regular image its file resized and flipped; boxes in their cells."""
    import cv2

    from bench import oracle as reference
    from bench.loaders import BuiltinsVariant
    from bench.throughput import parse_args
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
