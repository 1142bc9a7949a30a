"""YOLO("yolo11n.yaml").train(..., trainer=DSTDetectionTrainer) as users run it, offline, on
coco128 in YOLO form: every batch is a valid Ultralytics batch, batch i + 1 is a collage
exactly when r_i <= tau, with collages and regular batches both trained; validation feeds no
decision; results.csv carries dst/*; last.pt loads without dst_dali; tau = -1 and the baseline
(enabled=False) never collage; an out-of-memory retry keeps the feedback; a run stopped and
resumed goes on with the same batches; a DDP rank gets the configured trainer and its shard."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
pytest.importorskip("ultralytics")

from bench.common import coco128_yolo as coco128_yolo_form  # noqa: E402
from dst_dali.feedback.history import read_histories  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a quarter of coco128, in batches of 4: a collage batch needs 16 images of one orientation (the
# first 32 have 22 landscape ones)
TRAIN_IMAGES, BATCH, IMGSZ = 32, 4, 256
EPOCH = TRAIN_IMAGES // BATCH  # batches an epoch


@pytest.fixture(scope="module")
def coco128_yolo(tmp_path_factory):
    """coco128's first 32 images in YOLO form, an epoch of 8 batches; its val split is the
    first 16 (Ultralytics validates after each epoch and then best.pt: 128 images each time
    would be most of a test's time)."""
    out = tmp_path_factory.mktemp("coco128_yolo")
    coco128_yolo_form(str(out))
    for name in sorted(os.listdir(out / "images" / "train"))[TRAIN_IMAGES:]:
        os.remove(out / "images" / "train" / name)
        label = out / "labels" / "train" / (os.path.splitext(name)[0] + ".txt")
        if os.path.exists(label):
            os.remove(label)
    for kind in ("images", "labels"):
        os.makedirs(out / kind / "val")
    for name in sorted(os.listdir(out / "images" / "train"))[:16]:
        os.symlink(os.readlink(out / "images" / "train" / name), out / "images" / "val" / name)
        label = os.path.splitext(name)[0] + ".txt"
        if os.path.exists(out / "labels" / "train" / label):
            shutil.copy(out / "labels" / "train" / label, out / "labels" / "val" / label)
    data = out / "data.yaml"
    data.write_text(data.read_text().replace("val: images/train", "val: images/val"))
    return str(data)


def train(data, project, trainer, epochs=2):
    from ultralytics import YOLO
    model = YOLO("yolo11n.yaml")
    model.train(data=data, trainer=trainer, epochs=epochs, imgsz=IMGSZ, batch=BATCH, workers=0,
                device="cpu", amp=False, plots=False, project=str(project), name="run",
                exist_ok=True, verbose=False, seed=0)
    return os.path.join(str(project), "run")


def checked_trainer(seen, stop_after_epoch=None):
    """DSTDetectionTrainer (tau 0.5) keeping each training batch it preprocesses; optionally
    stopped, as by a kill, once the given epoch is saved."""
    from dst_dali.ultralytics import DSTDetectionTrainer

    class Checked(DSTDetectionTrainer.configure(tau=0.5)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if stop_after_epoch is not None:
                self.add_callback("on_fit_epoch_end", self._stop)

        def _stop(self, trainer):
            if trainer.epoch == stop_after_epoch:
                raise KeyboardInterrupt("stopped after the epoch was saved")

        def preprocess_batch(self, batch):
            seen.append({k: batch[k].clone() for k in ("img", "cls", "bboxes", "batch_idx")}
                        | {"kind": batch["dst_kind"], "im_file": batch["im_file"]})
            return super().preprocess_batch(batch)
    return Checked


@pytest.fixture(scope="module")
def reference(coco128_yolo, tmp_path_factory):
    seen = []
    run = train(coco128_yolo, tmp_path_factory.mktemp("reference"), checked_trainer(seen))
    return run, seen


@pytest.mark.slow
def test_yolo_trains_with_dst_batches_and_the_feedback_rule(reference):
    run, seen = reference
    assert len(seen) == 2 * EPOCH  # validation's batches are not here
    for b in seen:
        n = len(b["img"])
        assert b["img"].shape == (n, 3, IMGSZ, IMGSZ) and b["img"].dtype.is_floating_point is False
        assert (b["bboxes"] >= 0).all() and (b["bboxes"] <= 1).all()
        assert (b["batch_idx"] < n).all() and b["cls"].shape == (len(b["bboxes"]), 1)
    rows = read_histories(run)[0]["history"]
    assert [h["kind"] for h in rows] == [b["kind"] for b in seen][:len(rows)]
    assert len(rows) >= 2 * EPOCH - 1  # every step's r fed (the last one's at the next save)
    for before, after in zip(rows, rows[1:]):
        assert (after["kind"] == "collage") == (before["share"] is not None and
                                                before["share"] <= 0.5)
    assert {h["kind"] for h in rows} == {"regular", "collage"}
    with open(os.path.join(run, "results.csv")) as f:
        results = list(csv.DictReader(f))
    assert len(results) == 2 and "dst/collage_rate" in results[0]
    assert float(results[0]["dst/tau"]) == 0.5
    state = os.path.join(run, "weights", "dst_loader_rank0.pt")
    assert os.path.exists(state)
    code = ("import sys, torch; sys.modules['dst_dali'] = None\n"
            f"ckpt = torch.load({os.path.join(run, 'weights', 'last.pt')!r}, "
            "weights_only=False)\nprint(type(ckpt['model']).__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, YOLO_OFFLINE="1"), cwd=os.path.dirname(run))
    assert r.returncode == 0 and r.stdout.strip() == "DetectionModel", r.stderr[-2000:]


@pytest.mark.slow
def test_resume_continues_with_the_same_batches(coco128_yolo, reference, tmp_path):
    """Stopped once epoch 1 is saved and resumed (resume=True): the loader's state comes back
    with last.pt, so the next batch is the uninterrupted run's next one, kind and images."""
    from ultralytics import YOLO
    _, uninterrupted = reference
    first = []
    with pytest.raises(KeyboardInterrupt):
        train(coco128_yolo, tmp_path, checked_trainer(first, stop_after_epoch=0))
    assert [b["im_file"] for b in first] == [b["im_file"] for b in uninterrupted[:EPOCH]]
    resumed = []
    last = os.path.join(str(tmp_path), "run", "weights", "last.pt")
    YOLO(last).train(resume=True, trainer=checked_trainer(resumed))
    assert len(resumed) == EPOCH
    assert resumed[0]["kind"] == uninterrupted[EPOCH]["kind"]
    assert resumed[0]["im_file"] == uninterrupted[EPOCH]["im_file"]


@pytest.mark.slow
def test_tau_minus_one_never_collages_and_an_out_of_memory_retry_keeps_the_feedback(
        coco128_yolo, tmp_path):
    """tau = -1: r is fed every step and never is <= tau. An out-of-memory error at the third
    batch: Ultralytics closes the train loader and asks for one at half the batch size; the
    controller and the record go on across it (every fed r, before and after, in order).
    enabled=False (the baseline) builds a controller that never collages; bad settings are
    refused by name before training."""
    from dst_dali.feedback.controller import StaticController
    from dst_dali.ultralytics import DSTDetectionTrainer
    sizes, loaders, replaced = [], [], []

    class OutOfMemoryOnce(DSTDetectionTrainer.configure(tau=-1)):
        def preprocess_batch(self, batch):
            sizes.append(len(batch["img"]))
            if self.dst_loader not in loaders:
                replaced.extend(old.loader.closed for old in loaders)
                loaders.append(self.dst_loader)
            if len(sizes) == 3:
                raise RuntimeError("CPU out of memory (planted)")
            return super().preprocess_batch(batch)
    run = train(coco128_yolo, tmp_path, OutOfMemoryOnce, epochs=1)
    assert sizes == [BATCH] * 3 + [BATCH // 2] * (2 * EPOCH) and len(loaders) == 2
    assert replaced == [True]  # the first loader was closed before the second served
    controller = loaders[1].loader.controller
    assert loaders[0].loader.controller is controller
    rows = read_histories(run)[0]["history"]
    # the last step's r: at the next save
    assert len(rows) == len(controller.shares) >= 2 + 2 * EPOCH - 1
    assert [h["share"] for h in rows] == pytest.approx(controller.shares, abs=1e-6)
    assert {h["kind"] for h in rows} == {"regular"}
    assert {h["decided_by"] for h in rows} == {"r"} and min(h["share"] for h in rows) >= 0
    baseline = DSTDetectionTrainer.configure(enabled=False)(overrides=dict(
        model="yolo11n.yaml", data=coco128_yolo, device="cpu", project=str(tmp_path),
        name="baseline"))
    assert isinstance(baseline.dst_controller, StaticController)
    assert baseline.dst_controller.decided_by == "control"
    for _ in range(3):
        baseline.dst_controller.observe(0.0, 1.0)  # r = 0: all of the box loss is large objects
        assert not baseline.dst_controller.wants_collage()
    with pytest.raises(TypeError, match=r"unknown settings \['tua'\]"):
        DSTDetectionTrainer.configure(tua=0.1)
    with pytest.raises(ValueError, match=r"tau=1.5: .* in \[-1, 1\]"):
        DSTDetectionTrainer.configure(tau=1.5)


@pytest.mark.slow
def test_a_ddp_rank_rebuilds_the_configured_trainer_with_its_callbacks_once(coco128_yolo,
                                                                            tmp_path):
    """Ultralytics' DDP launch pickles the trainer class, its arguments and callbacks into a
    file every rank runs (its generate_ddp_file): run here up to the trainer's construction, the
    configured class arrives with its settings, and DST's callbacks are each there once (the
    launcher's are handed to the rank's constructor, which adds only those missing)."""
    from ultralytics.utils.dist import generate_ddp_file

    from dst_dali.ultralytics import DSTDetectionTrainer
    trainer = DSTDetectionTrainer.configure(tau=0.2, k=9)(overrides=dict(
        model="yolo11n.yaml", data=coco128_yolo, device="cpu", project=str(tmp_path),
        name="ddp"))
    script = generate_ddp_file(trainer)
    try:
        code = open(script).read()
        assert code.count("    trainer.train()\n") == 1
        check = ("    from dst_dali.integrations.ultralytics.trainer import DST_CALLBACKS\n"
                 "    ours = [c for cs in trainer.callbacks.values() for c in cs\n"
                 "            if c.__module__ == DSTDetectionTrainer.__module__]\n"
                 "    print(trainer.dst['tau'], trainer.dst['k'],\n"
                 "          isinstance(trainer, DSTDetectionTrainer),\n"
                 "          sorted(c.__name__ for c in ours) == sorted(\n"
                 "              c.__name__ for c in DST_CALLBACKS.values()))\n")
        rank = tmp_path / "rank.py"
        rank.write_text(code.replace("    trainer.train()\n", check).replace(
            'if __name__ == "__main__":\n',
            'if __name__ == "__main__":\n'
            '    from dst_dali.ultralytics import DSTDetectionTrainer\n'))
        r = subprocess.run([sys.executable, str(rank)], capture_output=True, text=True,
                           env=dict(os.environ, YOLO_OFFLINE="1"), cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().splitlines()[-1] == "0.2 9 True True"
    finally:
        for path in (script, os.path.splitext(script)[0] + ".pt"):
            if os.path.exists(path):
                os.remove(path)


RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
dist.init_process_group("gloo", init_method="file://" + sys.argv[2],
                        rank=int(os.environ["RANK"]), world_size=2)
from dst_dali.ultralytics import DSTDetectionTrainer
rank = int(os.environ["RANK"])
trainer = DSTDetectionTrainer(overrides=dict(model="yolo11n.yaml", data=sys.argv[1], device="cpu",
                                             project=sys.argv[3], name=f"rank{rank}"))
loader = trainer.get_dataloader(trainer.data["train"], 2, rank, "train")
files = [f for batch in loader for f in batch["im_file"]]
print(json.dumps({"files": files, "batches": len(loader), "images": len(loader.sampler)}))
"""


@pytest.mark.slow
def test_each_ddp_rank_reads_its_own_shard(coco128_yolo, tmp_path):
    """Two ranks of a gloo group, each as Ultralytics builds a DDP rank (RANK, LOCAL_RANK,
    WORLD_SIZE set), each asking its trainer for the train loader: one epoch of each is the
    rank's half of the images, the halves disjoint and together the whole set."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    procs = [subprocess.Popen(
        [sys.executable, str(script), coco128_yolo, str(tmp_path / "init"), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
        env=dict(os.environ, YOLO_OFFLINE="1", RANK=str(rank), LOCAL_RANK=str(rank),
                 WORLD_SIZE="2")) for rank in (0, 1)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    images = len(os.listdir(os.path.join(os.path.dirname(coco128_yolo), "images", "train")))
    for rank in out:
        assert rank["images"] == images // 2 and rank["batches"] == images // 2 // 2
        assert len(rank["files"]) == len(set(rank["files"])) == images // 2
    assert not set(out[0]["files"]) & set(out[1]["files"])
