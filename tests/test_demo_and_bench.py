"""The README's main command (the demo) and the benches run, on tiny counts."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def test_demo_makes_collages_with_more_small_boxes(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "train"))
    from demo_collage import main
    stats = main(["--iters", "3", "--batch-size", "2", "--out", str(tmp_path),
                  "--device", "cpu"])
    regular, collage = stats["regular"], stats["collage"]
    assert regular["samples"] == collage["samples"] == 6
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
