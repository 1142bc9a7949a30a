"""The evidence experiments (bench/evidence/) on tiny counts: the accuracy protocol's set,
units, statistics and quick form, the committed protocol's results, and the soak."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def accuracy_quick(tmp_path_factory):
    """bench/evidence/accuracy.py --quick as a run under --hours goes: the first call stops
    itself at the first checkpoint of seeds 0 and 1 (iteration 2), the second continues from
    there and then trains seed 2, whose random arm replays seed 1's feedback arm from its
    history file."""
    from bench.evidence.accuracy import main
    out = tmp_path_factory.mktemp("accuracy_quick")
    argv = ["--quick", "--results-dir", str(out), "--name", "smoke", "--work-dir",
            str(out / "work")]
    stopped = main(argv + ["--stop-at", "2"])
    states = sorted((out / "work").glob("*/dst_state/rank0_iter0000002.pth"))
    at_stop = {"returned": stopped, "states": states,
               "mtimes": [p.stat().st_mtime_ns for p in states],
               "finished": list((out / "work").glob("*_s*/model_final.pth"))}
    main(argv)
    return SimpleNamespace(out=out, argv=argv, at_stop=at_stop)


@pytest.mark.slow
def test_accuracy_units_yoked_turn_independent_and_resumable(accuracy_quick, tmp_path):
    """The quick form's units: each random arm replays, iteration by iteration, the kinds of
    its mate's feedback arm (seeds 0 and 1 each other's, live; seed 2 seed 1's, from its
    history file); the unit stopped at a checkpoint and continued by a new process trains as
    one that runs straight through with other turns (blocks of 1 against 2) and other company
    (5 arms against 8): every arm's kinds, r and losses, bit for bit. A history file shorter
    than the schedule is refused before the unit's process starts."""
    import argparse
    import shutil

    from bench.evidence.accuracy import QUICK_OPTS, run_unit
    from dst_dali.feedback.history import read_history_csv, write_history_csv
    out, stop = accuracy_quick.out, accuracy_quick.at_stop
    assert stop["returned"] is None and not stop["finished"]
    assert len(stop["states"]) == 8  # seeds 0 and 1, four arms each
    assert [p.stat().st_mtime_ns for p in stop["states"]] == stop["mtimes"]  # not redone
    with open(out / "smoke.json") as f:
        meta = json.load(f)["meta"]
    iters, tau = meta["iters"], meta["pilot"]["tau_calibrated"]

    def history(work, arm, seed):
        with open(work / f"{arm}_s{seed}" / "history_rows.json") as f:
            return json.load(f)
    quick = {(arm, seed): history(out / "work", arm, seed)
             for arm in ("baseline", "feedback", "random") for seed in (0, 1, 2)
             if (out / "work" / f"{arm}_s{seed}").is_dir()}
    for seed, mate in ((0, 1), (1, 0), (2, 1)):
        kinds = [h["kind"] for h in quick["random", seed]]
        assert kinds == [h["kind"] for h in quick["feedback", mate]]
        assert kinds[1:] == [h["next"] for h in quick["feedback", mate]][:-1]
        assert set(kinds) == {"regular", "collage"}  # something to replay
        assert all(h["loss_box_reg"] > 0 for h in quick["random", seed])
        assert quick["random", seed] != quick["feedback", mate]  # its own model and r
    assert [h["kind"] for h in quick["baseline", 0]] == ["regular"] * iters

    arms = {0: ["baseline", "feedback", "random"], 1: ["feedback", "random"]}
    data = str(out / "work" / "data")

    def unit(name, seeds, histories):
        args = argparse.Namespace(iters=iters, block=1, settle=0, period=iters, stop_at=None,
                                  stop_by=None, work_dir=str(tmp_path / name), opts=QUICK_OPTS)
        return run_unit(args, data, seeds, {s: arms.get(s, ["feedback", "random"])
                                            for s in seeds}, tau, histories)
    straight = {(r["arm"], r["seed"]): r["history"]
                for r in unit("straight", (0, 1), str(tmp_path / "histories"))}
    assert set(straight) == {(a, s) for s, names in arms.items() for a in names}
    for key, rows in straight.items():
        assert rows == quick[key], key

    histories = tmp_path / "short"
    shutil.copytree(out / "smoke_histories", histories)
    recorded = str(histories / "feedback_s1.csv.gz")
    write_history_csv(recorded, read_history_csv(recorded)["history"][:iters - 1])  # cut short
    with pytest.raises(ValueError, match=f"feedback_s1.csv.gz: {iters - 1} iterations "
                                         "recorded"):
        unit("refused", (2,), str(histories))
    assert not (tmp_path / "refused").exists()  # refused before its process started


def test_accuracy_statistics_are_paired_by_seed():
    """The paired differences and the time overhead: seed by seed, then a 95% t-interval over
    seeds (t(0.975, 2) = 4.3027 from tables); an arm 2% slower than the baseline in every round
    has overhead 2% however the machine's speed moves between rounds and seeds."""
    from bench.evidence.accuracy import METRICS
    from bench.evidence.statistics import overhead, paired

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


@pytest.mark.slow
def test_accuracy_bench_quick(accuracy_quick):
    """bench/evidence/accuracy.py --quick: the data's figures per split, the pilot's curve and N,
    per arm the test metrics with their spread and the images seen, the paired differences with
    their CIs, the primary endpoint, the overhead, the histories and the paper's figures drawn from
    them (not their values); never over the committed results."""
    from bench.evidence.accuracy import PAIRED_METRICS, main
    with pytest.raises(SystemExit):
        main(["--quick"])  # would write over bench/results
    tmp_path = accuracy_quick.out
    with open(tmp_path / "smoke.json") as f:
        data = json.load(f)
    for split in ("train", "val", "test"):
        shares = data["meta"]["data"][split]
        assert {"images", "objects", "small", "medium", "large"} <= set(shares)
        assert shares["small"] + shares["medium"] + shares["large"] == pytest.approx(1, abs=1e-3)
    pilot = data["meta"]["pilot"]
    assert [c["iter"] for c in pilot["curve"]] == [2, 4][:len(pilot["curve"])]
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
    # another call reads the finished units back
    assert main(accuracy_quick.argv) == data["rows"]


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


@pytest.mark.slow
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
