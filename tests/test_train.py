"""train/train_dali.py end to end on the demo config (a few iterations on the CPU), and the
config checks that must fail before any training starts (other configs, datasets and launchers:
test_train_launchers.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from .train_runs import (
    CONFIGS,
    DEMO,
    QUICK,
    ROOT,
    check_setup,
    demo_args,
    history,
    metrics,
    train,
    train_in_one_process,
)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo config's baseline (DST.ENABLED False) and its DST run (evaluated, checkpointed
    every 3 iterations, the feedback plot drawn), 6 iterations each, in one process. The DST
    run comes second: its log.txt then holds its own lines alone (a run's log handler stays
    with the process)."""
    root = tmp_path_factory.mktemp("demo_runs")
    train_in_one_process([
        demo_args(root / "baseline", "SOLVER.MAX_ITER", "6", "DST.ENABLED", "False"),
        demo_args(root / "dst", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3",
                  "DST.TAU", "0.3", "DST.PLOT", "True", evaluate=True)])
    return root


@pytest.fixture(scope="module")
def dst_run(demo_runs):
    return demo_runs / "dst"


@pytest.fixture(scope="module")
def baseline_run(demo_runs):
    return demo_runs / "baseline"


@pytest.mark.slow
def test_dst_run_writes_metrics_checkpoints_eval_and_plot(dst_run):
    rows = metrics(dst_run)  # detectron2 writes it every 20 iterations and at the end
    last = [r for r in rows if "dst/collage" in r][-1]
    assert last["iteration"] == 5
    assert {"dst/collage", "dst/collage_rate", "dst/small_share", "dst/share_small",
            "dst/share_medium", "dst/share_large"} <= set(last)
    assert any("bbox/AP" in r for r in rows)                       # COCO evaluation ran
    assert (dst_run / "inference" / "coco128_first16").is_dir()
    assert (dst_run / "model_final.pth").is_file() and (dst_run / "model_0000002.pth").is_file()
    assert (dst_run / "dst_feedback.png").stat().st_size > 10_000
    assert check_setup().DST.PLOT is True  # the default; the other runs here turn it off
    # dst_dali's own log lines reach the run's log.txt (coco128: 2 images without annotations)
    log = (dst_run / "log.txt").read_text()
    assert "dst_dali.dataset" in log and "skipping 2 images without annotations" in log
    # the decisions follow r <= tau, one iteration later
    hist = history(dst_run / "dst_state" / "rank0_iter0000006.pth")
    assert [h["iteration"] for h in hist] == list(range(6))
    # the step's losses, whose medians detectron2 writes to metrics.json (window 20)
    for key in ("loss_box_reg", "loss_cls", "total_loss"):
        assert last[key] == pytest.approx(float(np.median([h[key] for h in hist])))
    for before, after in zip(hist, hist[1:]):
        expected = before["share"] is not None and before["share"] <= 0.3
        assert (after["kind"] == "collage") == expected
        assert len(after["image_ids"]) == 2
        assert all(len(ids) == (4 if after["kind"] == "collage" else 1)
                   for ids in after["image_ids"])


@pytest.mark.slow
def test_resume_continues_with_the_same_batches(dst_run, tmp_path):
    import shutil
    out = tmp_path / "resumed"
    shutil.copytree(dst_run, out)
    for f in ("model_final.pth", "model_0000005.pth"):
        os.remove(out / f)
    (out / "last_checkpoint").write_text("model_0000002.pth")
    full = history(dst_run / "dst_state" / "rank0_iter0000006.pth")
    train(out, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DST.TAU", "0.3",
          resume=True)
    resumed = history(out / "dst_state" / "rank0_iter0000006.pth")
    assert [h["iteration"] for h in resumed] == list(range(6))
    for a, b in zip(full, resumed):
        assert a["kind"] == b["kind"] and a["image_ids"] == b["image_ids"]
        assert (a["share"] is None) == (b["share"] is None)
        if a["share"] is not None:
            assert a["share"] == pytest.approx(b["share"], abs=1e-3)


@pytest.mark.slow
def test_resume_without_the_loader_state_and_with_a_bad_one(dst_run, tmp_path):
    """State file missing: the run goes on past the batches it can have read (none of the first
    iterations' images come again), and says so in its log; a truncated one is named."""
    import shutil
    out = tmp_path / "resumed"
    shutil.copytree(dst_run, out)
    for f in ("model_final.pth", "model_0000005.pth"):
        os.remove(out / f)
    (out / "last_checkpoint").write_text("model_0000002.pth")
    os.remove(out / "dst_state" / "rank0_iter0000003.pth")
    train(out, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DST.TAU", "0.3",
          resume=True)
    assert "is missing: the data streams continue past the 3 batches" in \
        (out / "log.txt").read_text()
    first = history(dst_run / "dst_state" / "rank0_iter0000003.pth")
    later = history(out / "dst_state" / "rank0_iter0000006.pth")
    assert [h["iteration"] for h in later] == [3, 4, 5]
    assert [h["image_ids"] for h in later] != [h["image_ids"] for h in first]
    state = out / "dst_state" / "rank0_iter0000003.pth"
    shutil.copy(dst_run / "dst_state" / "rank0_iter0000003.pth", state)
    state.write_bytes(state.read_bytes()[:100])
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_dali.py"), "--config", DEMO,
           "--resume"] + QUICK + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "6"]
    (out / "last_checkpoint").write_text("model_0000002.pth")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode != 0 and f"cannot read the loader state {state}" in r.stderr


@pytest.mark.slow
def test_baseline_never_collages(baseline_run):
    tmp_path = baseline_run
    hist = history(tmp_path / "dst_state" / "rank0_iter0000006.pth")
    assert [h["kind"] for h in hist] == ["regular"] * 6
    assert any(h["share"] is not None for h in hist)  # the baseline still measures r
    last = [r for r in metrics(tmp_path) if "dst/collage" in r][-1]
    assert last["dst/collage_rate"] == 0.0 and "dst/share_small" in last
    assert not (tmp_path / "dst_feedback.png").exists()  # DST.PLOT False (train_runs.LIGHT)


@pytest.mark.slow
def test_tau_from_a_finished_baseline_and_the_paper_figures(baseline_run, dst_run, tmp_path):
    """`python -m dst_dali.calibrate_tau OUT` is the quantile of the r the run saved beside its
    checkpoint (recomputed here with numpy); `python -m dst_dali.plots` draws Fig. 5 and 6."""
    import numpy as np
    hist = history(baseline_run / "dst_state" / "rank0_iter0000006.pth")
    shares = [h["share"] for h in hist if h["share"] is not None]
    cmd = [sys.executable, "-m", "dst_dali.calibrate_tau", str(baseline_run), "--quantile",
           "0.25"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.split()[2].rstrip(":")) == pytest.approx(np.quantile(shares, 0.25),
                                                                  rel=1e-5)
    cmd = [sys.executable, "-m", "dst_dali.plots", "--baseline", str(baseline_run), "--dst",
           str(dst_run), "--out", str(tmp_path)]  # the default window, 50: over 6 iterations
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("fig5_loss_shares.png", "fig6_share_distribution.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_voc_sets_are_scored_with_the_voc07_metric(tmp_path):
    """A PASCAL VOC set (tests/voc_sample.py, registered as detectron2's builtin VOC sets
    are) gets detectron2's VOC evaluator, with the 11-point VOC07 metric for 2007; it scores the
    set's own boxes as perfect detections 100 AP50. A COCO set keeps COCO's evaluator."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.pascal_voc import register_pascal_voc
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    from dst_dali.trainer import DSTTrainer

    from .voc_sample import VOC_CLASSES, make_voc_sample
    make_voc_sample(str(tmp_path), 2007, "test")
    name = f"voc_sample_2007_test_{os.getpid()}"
    register_pascal_voc(name, str(tmp_path / "VOC2007"), "test", 2007, VOC_CLASSES)
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"  # as builtin.py's VOC sets
    cfg = check_setup()
    evaluator = DSTTrainer.build_evaluator(cfg, name)
    assert isinstance(evaluator, PascalVOCDetectionEvaluator) and evaluator._is_2007
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        boxes = [a["bbox"] for a in d["annotations"]]
        found = Instances((d["height"], d["width"]), pred_boxes=Boxes(torch.tensor(boxes)),
                          scores=torch.ones(len(boxes)),
                          pred_classes=torch.tensor([a["category_id"]
                                                     for a in d["annotations"]]))
        evaluator.process([d], [{"instances": found}])
    classes = {a["category_id"] for d in DatasetCatalog.get(name) for a in d["annotations"]}
    ap50 = evaluator.evaluate()["bbox"]["AP50"]
    # the classes without an instance in the sample score 0 in detectron2's mean
    assert ap50 == pytest.approx(100 * len(classes) / len(VOC_CLASSES))
    assert isinstance(DSTTrainer.build_evaluator(cfg, "coco128"), COCOEvaluator)


@pytest.mark.parametrize("opts, error, message", [
    (["DST.TUA", "0.2"], KeyError, r"unknown DST key\(s\) \['TUA'\]; the valid ones are "
                                   r"\['BAD_IMAGES', 'DECISION', 'DEVICE', 'ENABLED', 'EXPLORE', 'K'"),
        (["DST.EXPLORE", "2.0"], ValueError, r"DST.EXPLORE=2.0: must be in \[0, 1\]"),
        (["DST.EXPLORE", "0.1", "DST.SIGNAL", "random"], ValueError,
         r"DST.EXPLORE=0.1: explores the feedback's decisions, which DST.SIGNAL='random'"),
    (["DST.TAU", "1.5"], ValueError,
     r"DST.TAU=1.5: must be a number in \[-1, 1\] \(below 0: never a collage\)"),
    (["DST.K", "3"], ValueError, r"DST.K=3: the number of collage components must be a square"),
    (["DST.PIPELINES", "-1"], ValueError, r"DST.PIPELINES=-1: must be a positive integer"),
    (["DST.DECISION", "vote"], ValueError, r"DST.DECISION='vote': must be one of"),
    (["DST.TAU_QUANTILE", "2.0"], ValueError, r"DST.TAU_QUANTILE=2.0"),
    (["DST.TAU_WARMUP", "10", "DST.SIGNAL", "random"], ValueError, r"DST.TAU_WARMUP=10"),
    (["DST.SIGNAL", "mask"], ValueError, r"DST.SIGNAL='mask': must be one of"),
    (["DST.SIGNAL", "replay"], ValueError,
     r"DST.SIGNAL='replay', DST.REPLAY_FROM='': SIGNAL 'replay' replays the run in REPLAY_FROM"),
    (["DST.REPLAY_FROM", "output/x"], ValueError, r"DST.REPLAY_FROM='output/x': SIGNAL 'replay"),
    (["DST.BAD_IMAGES", "ignore"], ValueError, r"DST.BAD_IMAGES='ignore': must be one of"),
    (["INPUT.RANDOM_FLIP", "vertical"], ValueError,
     r"INPUT.RANDOM_FLIP='vertical': DSTLoader flips horizontally"),
    (["MODEL.META_ARCHITECTURE", "SemanticSegmentor"], ValueError,
     r"DST.SIGNAL='reg': MODEL.META_ARCHITECTURE='SemanticSegmentor' has no box loss"),
])
def test_bad_config_fails_before_training(opts, error, message):
    with pytest.raises(error, match=message):
        check_setup(*opts)


@pytest.mark.parametrize("key,value,message", [
    ("NUM_THREADS", True, r"DST.NUM_THREADS=True: must be a positive integer"),
    ("TAU_WARMUP", False, r"DST.TAU_WARMUP=False: must be a non-negative integer"),
    ("MAX_PIXELS", -5, r"DST.MAX_PIXELS=-5: must be a positive integer"),
    ("DEVICE", "tpu", r"DST.DEVICE='tpu': must be one of \('auto', 'cpu', 'gpu'\)")])
def test_a_config_set_in_code_is_checked_by_the_loaders_rules(key, value, message):
    """A config changed in code (no yaml type check) meets the loader's own rules, which
    DSTLoader applies to the same value as a keyword argument."""
    from dst_dali.integrations.detectron2.config import (
        LOADER_SETTINGS,
        check_dst_config,
    )
    from dst_dali.settings import LoaderSettings
    cfg = check_setup()
    cfg.defrost()
    cfg.DST[key] = value
    with pytest.raises(ValueError, match=message):
        check_dst_config(cfg)
    if key in LOADER_SETTINGS:
        with pytest.raises(ValueError, match=message.replace(f"DST.{key}",
                                                             LOADER_SETTINGS[key])):
            LoaderSettings(**{LOADER_SETTINGS[key]: value})


def test_replay_control_from_a_finished_run(dst_run, tmp_path):
    """DST.SIGNAL replay (a yoked control): the kinds the run in DST.REPLAY_FROM chose, in its
    order, whatever this run's r; a record too short, or none, is refused before training."""
    from dst_dali.trainer import DSTTrainer
    recorded = [h["next"] for h in history(dst_run / "dst_state" / "rank0_iter0000006.pth")]
    cfg = check_setup("DST.SIGNAL", "replay", "DST.REPLAY_FROM", str(dst_run),
                      "SOLVER.MAX_ITER", "6")
    replay = DSTTrainer.build_controller(cfg)
    for r in (0.0, 1.0, 0.5, 0.0, 1.0, 0.2):
        replay.observe(r, 1.0)
    assert replay.decisions == recorded
    cfg = check_setup("DST.SIGNAL", "replay", "DST.REPLAY_FROM", str(dst_run),
                      "SOLVER.MAX_ITER", "7")
    with pytest.raises(ValueError, match=r"rank0.json: 6 iterations recorded; replaying needs 7"):
        DSTTrainer.build_controller(cfg)
    cfg = check_setup("DST.SIGNAL", "replay", "DST.REPLAY_FROM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no dst_history"):
        DSTTrainer.build_controller(cfg)


def test_unknown_dst_key_in_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{DEMO}"\nDST:\n  SIGNAL: "reg"\n  THRESHOLD: 0.1\n')
    with pytest.raises(KeyError, match=r"bad.yaml: unknown DST key\(s\) \['THRESHOLD'\]"):
        check_setup(config=str(bad))


def test_missing_dataset_fails_before_the_model_is_built(tmp_path):
    from detectron2.data.datasets import register_coco_instances

    from dst_dali.trainer import DSTTrainer
    register_coco_instances("dst_missing", {}, str(tmp_path / "none.json"), str(tmp_path))
    cfg = check_setup("DATASETS.TRAIN", "('dst_missing',)", "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dataset 'dst_missing': .*none.json does not "
                                                 r"exist; detectron2 reads .*DETECTRON2_DATASETS"):
        DSTTrainer(cfg)
    cfg = check_setup("DATASETS.TRAIN", "('not_registered',)", "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="'not_registered' is not registered in detectron2"):
        DSTTrainer(cfg)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIGS)
                                        if f.endswith(".yaml") and not f.startswith("Base")))
def test_every_config_loads_and_passes_the_checks(name):
    """The paper configs cannot run here (no GPU, no COCO), but they must load, pass the DST
    checks, build their model, and pair each DST config with a baseline that differs only in
    DST.ENABLED; the paper's setting is single-scale 800/1333 with maskrcnn-benchmark's
    smooth L1 box losses, and the multi-scale comparator differs from its baseline only in
    INPUT.MIN_SIZE_TRAIN."""
    from detectron2.modeling import build_model

    from dst_dali.config import load_config
    cfg = load_config(os.path.join(CONFIGS, name))
    if name.startswith("demo"):
        return
    if name.endswith("_baseline.yaml"):
        twin = load_config(os.path.join(CONFIGS, name.replace("_baseline", "_dst")))
        assert not cfg.DST.ENABLED and twin.DST.ENABLED
        twin.defrost()
        twin.DST.ENABLED, twin.OUTPUT_DIR = False, cfg.OUTPUT_DIR
        assert cfg == twin  # nothing else differs
    elif name.endswith("_mstrain.yaml"):
        base = load_config(os.path.join(CONFIGS, name.replace("_mstrain", "_baseline")))
        assert not cfg.DST.ENABLED  # the paper's MS-train_m
        assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (600, 700, 800, 900, 1000)
        base.defrost()
        base.INPUT.MIN_SIZE_TRAIN, base.OUTPUT_DIR = cfg.INPUT.MIN_SIZE_TRAIN, cfg.OUTPUT_DIR
        assert cfg == base
        return
    else:
        assert name.endswith("_dst.yaml") and cfg.DST.ENABLED
        assert (cfg.DST.TAU, cfg.DST.K, cfg.DST.SIGNAL, cfg.DST.DECISION) == \
            (0.1, 4, "reg", "per_rank")
    schedule = {"1x": (90000, (60000, 80000)), "2x": (180000, (120000, 160000)),
                "voc": (24000, (16000,))}  # VOC: 24k iterations, LR / 10 at 2/3
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedule[name.split("_")[-2]]
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "GeneralizedRCNN":
        assert (cfg.MODEL.RPN.SMOOTH_L1_BETA, cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA) == \
            (0.1111, 1.0)
        assert cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE == "smooth_l1"
        assert (cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
                cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO) == ("ROIAlign", 2)
    elif arch == "RetinaNet":
        assert cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA == 0.11
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    assert build_model(cfg) is not None


@pytest.mark.parametrize("mask_on", [False, True])
def test_trainer_loader_gives_masks_exactly_when_the_model_has_a_mask_head(mask_on):
    """MODEL.MASK_ON decides gt_masks, as detectron2's DatasetMapper(use_instance_mask=...)."""
    from dst_dali.trainer import build_controller, build_dst_loader
    cfg = check_setup("MODEL.MASK_ON", str(mask_on))
    loader = build_dst_loader(cfg, build_controller(cfg))
    for kind in ("regular", "collage"):
        inst = loader.next_batch(kind)[0]["instances"]
        assert inst.has("gt_masks") == mask_on
        if mask_on:
            assert len(inst.gt_masks) == len(inst.gt_boxes)


def test_seed_minus_one_draws_a_seed_the_loader_keeps():
    """SEED -1, detectron2's "draw one": the loader's seed is drawn (not 0) and kept in its
    state, as a given SEED is used as it is."""
    from dst_dali.trainer import build_controller, build_dst_loader
    drawn = build_dst_loader(check_setup("SEED", "-1"), build_controller(check_setup()))
    given = build_dst_loader(check_setup("SEED", "3"), build_controller(check_setup()))
    assert drawn.seed_drawn and not given.seed_drawn
    assert drawn.state_dict()["config"]["seed"] != 0 and given.state_dict()["config"]["seed"] == 3
