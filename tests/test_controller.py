"""FeedbackController: decisions over scripted loss shares (across ranks: test_distributed.py)."""
import math
import os
import shutil

import pytest

from dst_dali import FeedbackController
from dst_dali.feedback.controller import ReplayController, StaticController


def decisions(tau, shares):
    c = FeedbackController(tau)
    out = [c.wants_collage()]
    for r in shares:
        if r is None:
            c.observe(0.0, 0.0)
        else:
            c.observe(r * 2.0, 2.0)
        out.append(c.wants_collage())
    return out, c


def test_scripted_sequence():
    got, c = decisions(0.1, [0.3, 0.1, 0.0999, 0.10001, None, 0.0])
    # first regular; r <= tau (equality included) -> collage; no positives -> regular
    assert got == [False, False, True, True, False, False, True]
    assert c.shares[:4] == pytest.approx([0.3, 0.1, 0.0999, 0.10001]) and c.shares[4] is None
    assert c.decisions == ["regular", "collage", "collage", "regular", "regular", "collage"]
    assert c.collage_rate == pytest.approx(3 / 6)


def test_tau_bounds():
    assert decisions(0.0, [0.0, 1e-9, 0.5])[0] == [False, True, False, False]
    assert decisions(1.0, [1.0, 0.0, None])[0] == [False, True, True, False]
    # below 0: never a collage, not even on r = 0 (the baseline through the same controller)
    assert decisions(-1.0, [0.0, 0.0, 1.0])[0] == [False] * 4
    assert decisions(-0.1, [0.0])[0] == [False, False]


@pytest.mark.parametrize("tau", [-1.5, 1.5, math.nan, "0.1", None, True])
def test_tau_out_of_range(tau):
    with pytest.raises(ValueError, match="tau="):
        FeedbackController(tau)


def test_bad_observation():
    c = FeedbackController(0.1)
    for small, total in [(2.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (0.0, math.inf)]:
        with pytest.raises(ValueError, match="observe"):
            c.observe(small, total)


def test_tensors_and_state_round_trip():
    import torch
    c = FeedbackController(0.2)
    c.observe(torch.tensor(0.1), torch.tensor(1.0))
    state = c.state_dict()
    d = FeedbackController(0.2)
    d.load_state_dict(state)
    assert d.wants_collage() and d.shares == c.shares and d.decisions == c.decisions
    with pytest.raises(ValueError, match="tau"):
        FeedbackController(0.3).load_state_dict(state)


def test_static_controls():
    never, always = StaticController("never"), StaticController("always_collage")
    assert not never.wants_collage() and always.wants_collage()  # from the first iteration
    for _ in range(5):
        never.observe(0.0, 1.0)
        always.observe()
    assert never.decisions == ["regular"] * 5 and always.decisions == ["collage"] * 5
    assert never.shares == [0.0] * 5  # measured shares are kept for the plots


def test_random_control_is_seeded_and_resumes():
    a, b = (StaticController("random", prob=0.3, seed=7),
            StaticController("random", prob=0.3, seed=7))
    for _ in range(50):
        a.observe(), b.observe()
    assert a.decisions == b.decisions
    assert 0.1 < a.collage_rate < 0.5
    state = a.state_dict()
    c = StaticController("random", prob=0.3, seed=123)
    c.load_state_dict(state)
    for _ in range(20):
        a.observe(), c.observe()
    assert a.decisions == c.decisions
    with pytest.raises(ValueError, match="mode="):
        StaticController("sometimes")


def test_replay_control_follows_its_source_as_it_grows():
    """The yoked control: decision i is the source's decision i, read when it is taken (the
    source may be another run still training); its own r is only recorded."""
    source = FeedbackController(0.1)
    yoked = ReplayController(source.decisions, "feedback_s1")
    rs = [0.5, 0.05, 0.0, 0.3, 0.08, 0.9]
    for i, r in enumerate(rs):
        source.observe(r, 1.0)
        assert yoked.wants_collage() == (i > 0 and source.decisions[i - 1] == "collage")
        yoked.observe(1.0 - r, 1.0)
    assert yoked.decisions == source.decisions == [
        "collage" if r <= 0.1 else "regular" for r in rs]
    assert yoked.shares == [pytest.approx(1.0 - r) for r in rs]
    state = yoked.state_dict()
    resumed = ReplayController(source.decisions, "feedback_s1")
    resumed.load_state_dict(state)
    assert resumed.decisions == yoked.decisions and resumed.wants_collage() == (rs[-1] <= 0.1)
    with pytest.raises(ValueError, match="feedback_s1 has 6 decisions"):
        yoked.observe(0.1, 1.0)  # ahead of its source
    with pytest.raises(ValueError, match="decision 0 is 'maybe'"):
        ReplayController(["maybe"]).observe()


@pytest.mark.parametrize("quantile", [0.5, 0.25, 0.9])
def test_tau_calibrated_from_the_warm_up(quantile):
    """The warm-up is regular whatever r is; tau is then the quantile of its logged r (numpy's,
    None left out), and r <= tau decides from there on."""
    import numpy as np
    rng = np.random.default_rng(0)
    warm = [None if i % 7 == 3 else float(r) for i, r in enumerate(rng.beta(1, 6, 40))]
    after = [float(r) for r in rng.beta(1, 6, 30)]
    c = FeedbackController(None, warmup=len(warm), quantile=quantile)
    for r in warm + after:
        c.observe(0.0, 0.0) if r is None else c.observe(r, 1.0)
    logged = [r for r in c.shares[:len(warm)] if r is not None]
    assert c.tau == pytest.approx(np.quantile(logged, quantile))
    assert c.decisions[:len(warm)] == ["regular"] * (len(warm) - 1) + [c.decisions[len(warm) - 1]]
    assert c.decisions[len(warm) - 1] == ("collage" if warm[-1] is not None
                                          and warm[-1] <= c.tau else "regular")
    expected = ["collage" if r is not None and r <= c.tau else "regular"
                for r in c.shares[len(warm):]]
    assert c.decisions[len(warm):] == expected
    # saved mid-run and resumed: the calibrated tau comes back
    d = FeedbackController(None, warmup=len(warm), quantile=quantile)
    d.load_state_dict(c.state_dict())
    assert d.tau == c.tau and d.decisions == c.decisions
    with pytest.raises(ValueError, match="quantile"):
        FeedbackController(None, warmup=len(warm), quantile=0.1).load_state_dict(c.state_dict())


def test_calibration_needs_a_warm_up_with_evidence():
    with pytest.raises(ValueError, match="warmup > 0"):
        FeedbackController(None)
    c = FeedbackController(None, warmup=2)
    c.observe(0.0, 0.0)
    with pytest.raises(ValueError, match="no iteration measured r"):
        c.observe(0.0, 0.0)


def test_tau_from_zero_inflated_r_is_said_with_the_split_it_makes(caplog):
    """Most batches without a small object: r = 0 in 60% of them, so the median is 0 and no
    tau splits the iterations in half. tau is still the quantile (the nearest split), and a
    warning says the split; a continuous r gets its quantile without a word."""
    import logging

    import numpy as np

    from dst_dali.feedback.controller import calibrate_tau
    shares = [0.0] * 60 + np.linspace(0.05, 0.9, 40).tolist()
    with caplog.at_level(logging.WARNING, logger="dst_dali.controller"):
        assert calibrate_tau(shares, 0.5) == 0.0
    assert "of which 60% are 0: r <= tau after 60% of them, not 50%" in caplog.text
    caplog.clear()
    spread = np.linspace(0.0, 0.5, 101).tolist()
    with caplog.at_level(logging.WARNING, logger="dst_dali.controller"):
        assert calibrate_tau(spread, 0.5) == pytest.approx(np.quantile(spread, 0.5))
    assert not caplog.text
    # the warm-up calibration says it too, and r = 0 then still decides a collage (r <= tau)
    c = FeedbackController(None, warmup=10)
    with caplog.at_level(logging.WARNING, logger="dst_dali.controller"):
        for r in [0.0] * 7 + [0.3, 0.4, 0.5]:
            c.observe(r, 1.0)
    assert c.tau == 0.0 and "70% are 0" in caplog.text
    c.observe(0.0, 1.0)
    assert c.wants_collage()


def test_the_paper_figures_from_a_ten_iteration_run(tmp_path):
    """python -m dst_dali.plots with its default 50-iteration smoothing on runs of 10: both
    figures, the smoothed curves as long as the runs."""
    import numpy as np

    from dst_dali import plots
    from dst_dali.feedback.history import (
        read_histories,
        read_history_csv,
        write_history,
        write_history_csv,
    )
    rng = np.random.default_rng(0)
    for name in ("baseline", "dst"):
        parts = rng.dirichlet(np.ones(3), 10)
        write_history(str(tmp_path / name), 0, {
            "decision": "per_rank", "signal": "reg", "tau": 0.1,
            "history": [{"iteration": i, "kind": "regular", "share": float(p[0]),
                         "small": float(p[0]),
                         "medium": float(p[1]), "large": float(p[2])}
                        for i, p in enumerate(parts)]})
    paths = plots.main(["--baseline", str(tmp_path / "baseline"), "--dst", str(tmp_path / "dst"),
                        "--out", str(tmp_path / "figs")])
    assert all(os.path.getsize(p) > 10_000 for p in paths)
    # the same from compact CSVs, seeds of a run averaged: its records read back as written
    runs = {name: read_histories(str(tmp_path / name))[0]["history"]
            for name in ("baseline", "dst")}
    for name, rows in runs.items():
        csv_rows = [{**{k: v for k, v in h.items() if k != "share"}, "r": h["share"],
                     "kind": "regular", "next": None} for h in rows]
        write_history_csv(str(tmp_path / f"{name}_s0.csv.gz"), csv_rows)
        back = read_history_csv(str(tmp_path / f"{name}_s0.csv.gz"))["history"]
        assert [h["iteration"] for h in back] == list(range(10))
        for h, b in zip(rows, back):
            assert b["kind"] == "regular" and b["next"] is None
            for key in ("share", "small", "medium", "large"):
                assert b[key] == pytest.approx(h[key], rel=1e-5)
    shutil.copy(tmp_path / "dst_s0.csv.gz", tmp_path / "dst_s1.csv.gz")
    paths = plots.main(["--baseline", str(tmp_path / "baseline_s0.csv.gz"), "--dst",
                        str(tmp_path / "dst_s0.csv.gz"), str(tmp_path / "dst_s1.csv.gz"),
                        "--tau", "0.1", "--out", str(tmp_path / "csv_figs")])
    assert all(os.path.getsize(p) > 10_000 for p in paths)
    constant = np.full(10, 0.3)
    constant[[2, 5]] = np.nan  # unmeasured iterations are left out of the average
    assert plots.smooth(constant, 50) == pytest.approx(np.full(10, 0.3))
