"""What the feedback responded to: the controllers label what decided each decision, the
diagnostics' delta on records of known structure (AR(1) r with and without memory, a trend
alone, ranks of different levels) with planted faults caught, the figures of the committed
accuracy histories, Fig. 6 over regular iterations, and the command on a loader's record."""
import csv
import glob
import gzip
import os

import numpy as np
import pytest

from dst_dali import FeedbackController
from dst_dali.feedback import diagnostics
from dst_dali.feedback.controller import ReplayController, StaticController
from dst_dali.feedback.diagnostics import Series, anticipation, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORIES = os.path.join(ROOT, "bench", "results", "accuracy_histories")


# -- what decided ----------------------------------------------------------------------------

def test_reasons_warmup_exploration_and_controls():
    c = FeedbackController(0.3, warmup=5, explore=0.2, seed=1)
    rng = np.random.default_rng(0)
    for r in rng.uniform(0, 1, 2000):
        c.observe(r, 1.0)
    # the warm-up's last r decides the iteration after it (FeedbackController's docstring)
    assert c.reasons[:4] == ["warmup"] * 4 and "warmup" not in c.reasons[4:]
    explored = [i for i, why in enumerate(c.reasons) if why == "exploration"]
    assert 0.17 < len(explored) / 1996 < 0.23
    for i, why in enumerate(c.reasons):
        if why == "r":
            assert (c.decisions[i] == "collage") == (c.shares[i] <= 0.3)
    # an explored decision is a coin: about half collages, whatever r was
    rate = np.mean([c.decisions[i] == "collage" for i in explored])
    assert 0.4 < rate < 0.6
    # exact resume of the exploration stream
    d = FeedbackController(0.3, warmup=5, explore=0.2, seed=1)
    for r in rng.uniform(0, 1, 10):
        d.observe(r, 1.0)
    state = d.state_dict()
    e = FeedbackController(0.3, warmup=5, explore=0.2, seed=99)
    e.load_state_dict(state)
    for r in rng.uniform(0, 1, 50):
        d.observe(r, 1.0)
        e.observe(r, 1.0)
    assert e.decisions == d.decisions and e.reasons == d.reasons
    with pytest.raises(ValueError, match="explore"):
        FeedbackController(0.3, explore=0.0).load_state_dict(state)
    with pytest.raises(ValueError, match="explore=1.5"):
        FeedbackController(0.1, explore=1.5)
    # the default is the paper's rule: every decision r's
    f = FeedbackController(0.1)
    for r in (0.05, 0.5, 0.0):
        f.observe(r, 1.0)
    assert f.reasons == ["r"] * 3
    s = StaticController("random", seed=0)
    s.observe(0.1, 1.0)
    p = ReplayController(["collage"])
    p.observe(0.1, 1.0)
    assert s.reasons == p.reasons == ["control"]


# -- delta on records of known structure -------------------------------------------------------

def ar1_record(phi, n=4000, seed=0, trend=0.0, level=0.3, reason="control"):
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    e = rng.normal(0, 0.1, n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    r = np.clip(level + x + trend * np.linspace(0, 1, n), 0, 1)
    return [{"iteration": i, "kind": "regular", "next": "regular", "share": float(v),
             "decided_by": reason} for i, v in enumerate(r)]


def no_memory(result):
    lo, hi = result["delta"]["ci"]
    return abs(result["delta"]["value"]) < 0.01 and lo <= 0 <= hi


def test_delta_is_zero_without_memory_and_positive_with_it():
    without = anticipation([Series(ar1_record(0.0), 0.25)], replicates=400)
    assert no_memory(without)
    assert abs(without["lag1"]["value"]) < 0.03
    with_memory = anticipation([Series(ar1_record(0.6), 0.25)], replicates=400)
    assert with_memory["delta"]["ci"][0] > 0.05
    assert with_memory["rank_delta"]["ci"][0] > 0.1
    assert 0.5 < with_memory["lag1"]["value"] < 0.7
    assert "carry information" in diagnostics.verdict(with_memory)
    assert "No evidence" in diagnostics.verdict(without)


def test_planted_lag_zero_is_caught(monkeypatch):
    """r(t) against r~(t) instead of r~(t + 1): a memoryless r looks persistent."""
    monkeypatch.setattr(diagnostics, "LAG", 0)
    assert not no_memory(anticipation([Series(ar1_record(0.0), 0.25)], replicates=100))


def test_a_trend_alone_gives_no_delta_once_detrended(monkeypatch):
    record = ar1_record(0.0, trend=0.3, level=0.15)
    assert no_memory(anticipation([Series(record, 0.25)], replicates=400))
    # planted: r itself, not detrended -> the trend alone looks like memory
    monkeypatch.setattr(diagnostics, "detrended", lambda series, window=0: series.r.copy())
    assert not no_memory(anticipation([Series(record, 0.25)], replicates=100))


def test_ranks_are_paired_and_detrended_each_on_its_own():
    """Two ranks at other levels, each memoryless: combined, delta is 0 and the pairs are the
    ranks' own; one concatenated series (planted) would see the levels as memory."""
    low = ar1_record(0.0, n=400, seed=1, level=0.15)
    high = ar1_record(0.0, n=400, seed=2, level=0.45)
    a, b = Series(low, 0.3), Series(high, 0.3)
    combined = anticipation([a, b], window=1001, replicates=400)
    assert combined["pairs"] == anticipation([a], window=1001)["pairs"] + \
        anticipation([b], window=1001)["pairs"] == 2 * 399
    assert no_memory(combined) or abs(combined["delta"]["value"]) < 0.02
    assert combined["delta"]["ci"][0] <= 0 <= combined["delta"]["ci"][1]
    concatenated = anticipation([Series(low + high, 0.3)], window=1001, replicates=100)
    assert concatenated["delta"]["ci"][0] > 0.05


def test_decisions_that_looked_at_r_are_never_pairs():
    """A DST run (every decision r's) has no pair; its warm-up and explored ones have."""
    record = ar1_record(0.6, n=600, reason="r")
    assert anticipation([Series(record, 0.25)])["pairs"] == 0
    assert "Not measurable" in diagnostics.verdict(anticipation([Series(record, 0.25)]))
    for h in record[:300]:
        h["decided_by"] = "warmup"
    assert anticipation([Series(record, 0.25)])["pairs"] == 300
    # a collage at t or t + 1 is no pair either
    record[10]["kind"] = "collage"
    assert anticipation([Series(record, 0.25)])["pairs"] == 298


def test_composition_part_removes_what_counts_explain():
    """r driven by the batch's small-box count alone (no model state): delta beyond the
    counts is 0 even where the counts themselves persist."""
    rng = np.random.default_rng(3)
    n = 3000
    small = np.zeros(n, int)
    for i in range(1, n):  # the counts persist (as if the sampler grouped images)
        small[i] = small[i - 1] if rng.random() < 0.7 else rng.integers(0, 6)
    r = np.where(small == 0, 0.0, 0.1 * small + rng.normal(0, 0.02, n)).clip(0, 1)
    record = [{"iteration": i, "kind": "regular", "next": "regular", "share": float(r[i]),
               "decided_by": "control", "n_small": int(small[i]), "n_medium": 3,
               "n_large": 1} for i in range(n)]
    result = anticipation([Series(record, 0.15)], replicates=300)
    assert result["delta"]["ci"][0] > 0.05  # r persists, through the counts
    lo, hi = result["state_delta"]["ci"]
    assert lo <= 0 <= hi and abs(result["state_delta"]["value"]) < 0.01


# -- the committed histories ------------------------------------------------------------------

def committed(arm):
    from dst_dali.feedback.history import read_history_csv
    paths = sorted(glob.glob(os.path.join(HISTORIES, f"{arm}_s*.csv.gz")))
    assert len(paths) == 6, paths
    return [Series(read_history_csv(p)["history"], 0.1, p) for p in paths]


def test_committed_histories_give_the_quoted_figures():
    """bench/results/README.md's: r's mean rises from about 0.28 to 0.39 over the baseline's
    training; around that trend its lag-1 autocorrelation is -0.02 to +0.05 a seed; 25-34% of
    the feedback arm's collage decisions were taken on r = 0; the yoked control collages at
    the same times."""
    baseline, feedback, random = committed("baseline"), committed("feedback"), committed("random")
    prof = profile(baseline)
    assert 0.26 < prof["mean_r_first_tenth"] < 0.30 and 0.37 < prof["mean_r_last_tenth"] < 0.41
    lags = [anticipation([s], replicates=0)["lag1"]["value"] for s in baseline]
    assert -0.025 < min(lags) and max(lags) < 0.055, lags
    for s in feedback:
        p = profile([s])
        assert 0.245 < p["collage_decisions_on_r0"] / p["collage_decisions"] < 0.345
        assert set(s.reasons) == {"r"}  # inferred: every decision is r <= tau's
    assert {r for s in baseline + random for r in s.reasons} == {"control"}
    fb, rnd = profile(feedback), profile(random)
    assert fb["collage_rate"] == pytest.approx(rnd["collage_rate"], abs=0.002)
    assert fb["collage_rate_by_tenth"][0] > 2 * fb["collage_rate_by_tenth"][5]


def regular_r(path):
    with gzip.open(path, "rt") as f:
        return [float(row["r"]) for row in csv.DictReader(f)
                if row["kind"] == "regular" and row["r"] != ""]


def test_fig6_compares_regular_iterations(monkeypatch, tmp_path):
    """The histogram of each run is its regular iterations' r, read here with csv alone; the
    collage iterations are drawn apart and do not change it; the medians the evidence quotes
    (0.359 baseline, 0.355 DST) are these."""
    import matplotlib.axes

    from dst_dali.feedback.history import read_runs
    from dst_dali.feedback.plots import plot_share_distribution
    drawn = []
    original = matplotlib.axes.Axes.hist

    def hist(self, x, *args, **kwargs):
        drawn.append((kwargs.get("label", ""), np.asarray(x)))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "hist", hist)
    paths = {arm: sorted(glob.glob(os.path.join(HISTORIES, f"{arm}_s*.csv.gz")))
             for arm in ("baseline", "feedback")}
    runs = {"baseline": read_runs(paths["baseline"]), "DST": read_runs(paths["feedback"])}
    plot_share_distribution(runs, 0.1, str(tmp_path / "fig6.png"))
    expected = {arm: np.array([r for p in paths[arm] for r in regular_r(p)]) for arm in paths}
    regular = {label.split(",")[0]: x for label, x in drawn if "regular" in label}
    np.testing.assert_array_equal(np.sort(regular["baseline"]), np.sort(expected["baseline"]))
    np.testing.assert_array_equal(np.sort(regular["DST"]), np.sort(expected["feedback"]))
    assert round(float(np.median(expected["baseline"])), 3) == 0.359
    assert round(float(np.median(expected["feedback"])), 3) == 0.355
    collage = [x for label, x in drawn if "collage iterations" in label]
    assert len(collage) == 1 and np.median(collage[0]) > 0.5
    # more collage iterations in the DST run leave its regular histogram as it was
    for run in runs["DST"].values():
        run["history"] += [dict(h, share=0.99) for h in run["history"] if h["kind"] == "collage"]
    drawn.clear()
    plot_share_distribution(runs, 0.1, str(tmp_path / "fig6b.png"))
    again = {label.split(",")[0]: x for label, x in drawn if "regular" in label}
    np.testing.assert_array_equal(again["DST"], regular["DST"])


def test_a_resumed_loader_writes_the_uninterrupted_record(coco128, tmp_path):
    """record_dir: the CSV is on disk as the run goes; a loader resumed from a state (into
    another folder) writes the same file as the run that never stopped."""
    from dst_dali import DSTLoader

    def start(folder):
        return DSTLoader(coco128.images, coco128.annotations, batch_size=1, min_size=(128,),
                         max_size=160, device="cpu", seed=4, controller=FeedbackController(
                             0.3, explore=0.3, seed=2), record_dir=str(tmp_path / folder)
                         ).watch(signal="input")
    whole = start("whole")
    for _ in range(12):
        whole.next_batch()
    first = start("first")
    for _ in range(5):
        first.next_batch()
    state = first.state_dict()
    first.close()
    resumed = start("resumed")
    resumed.load_state_dict(state)
    for _ in range(7):
        resumed.next_batch()
    for lo in (whole, resumed):
        lo.observe_last()
        lo.close()
    text = {name: open(tmp_path / name / "dst_history" / "rank0.csv").read()
            for name in ("whole", "resumed")}
    assert text["whole"] == text["resumed"] and len(text["whole"].splitlines()) == 13
    assert {h["kind"] for h in whole.record.rows} == {"regular", "collage"}


# -- the command ------------------------------------------------------------------------------

def test_the_command_on_a_loaders_record_and_on_committed_csvs(coco128, tmp_path, capsys):
    """A loop with signal "input" and exploration leaves a record in record_dir; the command
    reads it (and the committed CSVs), per rank and combined, with the figures it prints in
    its JSON."""
    import json

    from dst_dali import DSTLoader, diagnose_feedback
    loader = DSTLoader(coco128.images, coco128.annotations, batch_size=1, min_size=(160,),
                       max_size=224, device="cpu", output="torchvision", seed=3,
                       controller=FeedbackController(0.2, warmup=4, explore=0.5, seed=0),
                       record_dir=str(tmp_path / "run"))
    loader.watch(signal="input")
    for _ in range(40):
        loader.next_batch()
    loader.close()
    reasons = [h["decided_by"] for h in loader.record.rows]
    assert reasons[:3] == ["warmup"] * 3 and "exploration" in reasons and "r" in reasons
    out = diagnose_feedback.main([str(tmp_path / "run"), "--replicates", "50", "--block", "5",
                                  "--json", str(tmp_path / "d.json")])
    printed = capsys.readouterr().out
    rank = out["ranks"][f"{tmp_path / 'run'} rank 0"]
    assert rank["profile"]["iterations"] == 39  # the 40th batch's r was never fed
    assert rank["pairs"] > 0 and rank["verdict"] in printed
    assert json.load(open(tmp_path / "d.json"))["ranks"][f"{tmp_path / 'run'} rank 0"][
        "pairs"] == rank["pairs"]
    out = diagnose_feedback.main(sorted(glob.glob(os.path.join(HISTORIES, "random_s*.csv.gz")))
                                 + ["--replicates", "20"])
    assert len(out["ranks"]) == 6
    assert out["combined"]["pairs"] == sum(r["pairs"] for r in out["ranks"].values())
