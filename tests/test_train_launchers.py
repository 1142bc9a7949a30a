"""Other ways into training, each a run of a few iterations on the CPU: two processes
(detectron2's launch over gloo); the tau warm-up, the FCOS config and detectron2's builtin VOC
sets (three runs in one process, as a launcher calls train_dali.main); a list of dicts
registered by the user's launcher; and the LazyConfig example."""
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from .train_runs import (
    CONFIGS,
    DEMO,
    LIGHT,
    NO_EVAL,
    QUICK,
    ROOT,
    TINY,
    demo_args,
    history,
    metrics,
    train_in_one_process,
)


@pytest.mark.slow
@pytest.mark.parametrize("decision", ["per_rank", "global"])
def test_two_processes_on_the_cpu(tmp_path, decision):
    """--num-gpus 2 without a GPU: detectron2's launch() over gloo, DDP on the CPU, ranks read
    different images. per_rank: each rank's next kind follows its own r (DDP trains ranks on
    different kinds in one step); global: both follow the share of the summed losses."""
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_dali.py"), "--config", DEMO,
           "--num-gpus", "2"] + QUICK + ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "4",
                                         "DST.TAU", "0.3", "DST.DECISION", decision] + NO_EVAL
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    h0, h1 = (history(tmp_path / "dst_state" / f"rank{k}_iter0000004.pth") for k in (0, 1))
    for h in (h0, h1):
        for before, after in zip(h, h[1:]):
            assert (after["kind"] == "collage") == (before["share"] is not None
                                                    and before["share"] <= 0.3)
    if decision == "global":
        assert [h["kind"] for h in h0] == [h["kind"] for h in h1]
        assert [h["share"] for h in h0] == pytest.approx([h["share"] for h in h1])
    else:  # each rank's own r (2 images): they differ
        assert [h["share"] for h in h0] != pytest.approx([h["share"] for h in h1])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    last = [row for row in rows if "dst/collage_rate" in row][-1]
    kinds = [h["kind"] == "collage" for h in h0 + h1]
    assert last["dst/collage_rate"] == pytest.approx(sum(kinds) / len(kinds))
    assert last["dst/tau"] == 0.3
    ids0 = {i for h in h0 for ids in h["image_ids"] for i in ids}
    ids1 = {i for h in h1 for ids in h["image_ids"] for i in ids}
    assert ids0 and ids1 and not ids0 & ids1


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """The tau warm-up, the FCOS config and the VOC config: three runs of train_dali.main in one
    process (train_runs.train_in_one_process). The VOC sample, made from coco128, is under
    $DETECTRON2_DATASETS, where detectron2's builtin voc_2007_trainval looks for it."""
    from .voc_sample import make_voc_sample
    root = tmp_path_factory.mktemp("three_runs")
    stems = make_voc_sample(str(root / "datasets"))
    runs = {
        "tau_warmup": demo_args(root / "tau_warmup", "SOLVER.MAX_ITER", "8",
                                "DST.TAU_WARMUP", "4"),
        "fcos": ["--config", os.path.join(CONFIGS, "fcos_R_50_FPN_2x_dst.yaml"),
                 "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
                 "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "GN",
                 "MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "64",
                 "MODEL.FCOS.NUM_CONVS", "1", "DATASETS.TRAIN", "('coco128',)",
                 "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()",
                 "SOLVER.WARMUP_ITERS", "1", "DST.TAU", "0.3", "OUTPUT_DIR",
                 str(root / "fcos")] + LIGHT + NO_EVAL,
        "voc": ["--config", os.path.join(CONFIGS, "faster_rcnn_R_50_FPN_voc_dst.yaml"),
                "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
                "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "DATASETS.TRAIN",
                "('voc_2007_trainval',)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()",
                "SOLVER.WARMUP_ITERS", "1", "OUTPUT_DIR", str(root / "voc")] + TINY}
    train_in_one_process(runs.values(), env={"DETECTRON2_DATASETS": str(root / "datasets")})
    return SimpleNamespace(out={name: root / name for name in runs}, voc_stems=stems)


@pytest.mark.slow
def test_tau_warm_up_calibrates_from_the_logged_r(three_runs):
    """DST.TAU_WARMUP: regular-only warm-up, then tau is the median of its r as logged in the
    run's history (recomputed here with numpy), and the decisions follow r <= tau."""
    import numpy as np
    out = three_runs.out["tau_warmup"]
    with open(out / "dst_history" / "rank0.json") as f:
        saved = json.load(f)
    hist = saved["history"]
    warm = [h["share"] for h in hist[:4] if h["share"] is not None]
    # the loader's row of each step: what decided, and the batch's boxes by size
    assert [h["decided_by"] for h in hist] == ["warmup"] * 3 + ["r"] * 5
    assert all(h["n_small"] + h["n_medium"] + h["n_large"] > 0 for h in hist)
    assert saved["tau"] == pytest.approx(np.quantile(warm, 0.5))
    assert [h["kind"] for h in hist[:4]] == ["regular"] * 4
    for before, after in zip(hist[3:], hist[4:]):
        assert (after["kind"] == "collage") == (before["share"] is not None
                                                and before["share"] <= saved["tau"])
    last = [row for row in metrics(out) if "dst/tau" in row][-1]
    assert last["dst/tau"] == pytest.approx(saved["tau"])


@pytest.mark.slow
def test_fcos_trains_with_feedback(three_runs):
    """The FCOS config's model (registered by dst_dali.integrations.detectron2.fcos) through
    train_dali: its GIoU box loss is split, r is measured, and the decisions follow it."""
    hist = history(three_runs.out["fcos"] / "dst_state" / "rank0_iter0000004.pth")
    assert any(h["share"] is not None for h in hist)
    for before, after in zip(hist, hist[1:]):
        assert (after["kind"] == "collage") == (before["share"] is not None
                                                and before["share"] <= 0.3)


@pytest.mark.slow
def test_pascal_voc_through_detectron2s_builtin_datasets(three_runs):
    """The VOC config on detectron2's builtin voc_2007_trainval (string image ids, XML), here a
    VOC-format sample made from coco128 under $DETECTRON2_DATASETS."""
    hist = history(three_runs.out["voc"] / "dst_state" / "rank0_iter0000004.pth")
    ids = {i for h in hist for ids in h["image_ids"] for i in ids}
    assert ids and ids <= set(three_runs.voc_stems)  # VOC's string ids
    assert any(h["share"] is not None for h in hist)


@pytest.mark.slow
def test_a_registered_list_of_dicts_trains(tmp_path):
    """A dataset registered as DatasetCatalog.register(name, fn) in the user's launcher; a
    eighth of its files are not images, which DST.BAD_IMAGES "skip" logs and sets aside."""
    script = tmp_path / "launcher.py"
    script.write_text(f"""
import sys
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from train import train_dali
root = {os.path.join(ROOT, "data", "coco128")!r}
dicts = load_coco_json(root + "/instances.json", root + "/images", "mine_meta")[:40]
for d in dicts:  # the user's own ids and boxes in xyxy
    d["image_id"] = "img-%d" % d["image_id"]
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"], a["bbox_mode"] = [x, y, x + w, y + h], 0
for d in dicts[::8]:
    d["file_name"] = {str(tmp_path)!r} + "/not_an_image_%s.jpg" % d["image_id"]
    open(d["file_name"], "w").write("<html>404</html>")
DatasetCatalog.register("mine", lambda: dicts)
MetadataCatalog.get("mine").thing_classes = MetadataCatalog.get("mine_meta").thing_classes
train_dali.main(train_dali.parse_args(sys.argv[1:]))
""")
    cmd = [sys.executable, str(script), "--config", DEMO, "DATASETS.TRAIN", "('mine',)",
           "OUTPUT_DIR", str(tmp_path / "out"), "DST.BAD_IMAGES", "skip"] + TINY
    # the launcher lives beside the user's checkout, whose train/ it imports
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hist = history(tmp_path / "out" / "dst_state" / "rank0_iter0000004.pth")
    ids = [i for h in hist for ids in h["image_ids"] for i in ids]
    assert all(str(i).startswith("img-") for i in ids)
    bad = {p.stem[len("not_an_image_"):] for p in tmp_path.glob("not_an_image_*.jpg")}
    assert len(bad) == 5 and not bad & set(ids)
    log = (tmp_path / "out" / "log.txt").read_text().splitlines()
    named = {name for line in log if "DSTLoader: skipping" in line  # a line names each file
             for name in re.findall(r"not_an_image_[^ ]+\.jpg", line)}
    assert named and len(named) == metrics(tmp_path / "out")[-1]["dst/images_set_aside"]


@pytest.mark.slow
def test_lazyconfig_trains_with_dst(tmp_path):
    """The LazyConfig example through train/lazy_train_net.py (detectron2's
    lazyconfig_train_net.py loop with DSTHook in its hooks): DSTLoader as dataloader.train,
    watched, decisions following r <= tau."""
    config = os.path.join(CONFIGS, "lazy", "faster_rcnn_R_50_FPN_1x_dst.py")
    cmd = [sys.executable, os.path.join(ROOT, "train", "lazy_train_net.py"),
           "--config-file", config, "train.device=cpu", "train.init_checkpoint=",
           f"train.output_dir={tmp_path}", "train.max_iter=4", "train.eval_period=0",
           "train.checkpointer.period=4",
           "model.backbone.bottom_up.stages.norm=GN", "model.backbone.bottom_up.stem.norm=GN",
           "model.backbone.norm=GN", "dataloader.train.datasets=coco128",
           "dataloader.train.min_size=[160]", "dataloader.train.max_size=256",
           "dataloader.train.device=cpu", "dataloader.train.controller.tau=0.5",
           "dataloader.test.dataset.names=coco128_first4", "optimizer.lr=0.001",
           # the ResNet frozen, the final evaluation at the training size, fewer proposals and
           # RoIs than the paper's: time that nothing here checks
           "model.backbone.bottom_up.freeze_at=5",
           "dataloader.test.mapper.augmentations.0.short_edge_length=160",
           "dataloader.test.mapper.augmentations.0.max_size=256",
           "model.roi_heads.batch_size_per_image=128",
           "model.proposal_generator.post_nms_topk=[500,100]"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hist = history(tmp_path / "dst_state" / "rank0_iter0000004.pth")
    assert [h["iteration"] for h in hist] == [0, 1, 2, 3]
    assert any(h["share"] is not None for h in hist)
    for before, after in zip(hist, hist[1:]):
        assert (after["kind"] == "collage") == (before["share"] is not None
                                                and before["share"] <= 0.5)
