"""Does DST's feedback help small objects, beyond seeing collages? DST against its controls on
a detection set with COCO's scale problem, trained from scratch on the CPU.

The set is bench/evidence/accuracy_set.py's: train, val and test splits with the same scale mix
(about 40% of objects small, small objects in about half the images), no object in two splits. Every
arm trains the same detector (bench/evidence/accuracy.yaml) for the same N iterations and schedule:

    baseline        regular batches only (DST.ENABLED False)
    feedback        DST: r <= tau = 0.1 on the box-regression loss (the paper's)
    random          the yoked control: replays, iteration by iteration, the collage/regular
                    sequence of the feedback arm of another seed (its mate, below), so its
                    collages come at the same rate and times, decided by another model
    always_collage  collages only
    feedback_tau    DST with tau calibrated from the pilot baseline's r (not run by default)

Protocol, declared before the runs:
- Pilot: the baseline alone (seed 1000), evaluated on val every 500 iterations; N is the first
  evaluation within 0.5 AP of the one before (at most 4000). val serves nothing else.
- (As amended, below.) Seeds 0 and 1 train in one process, each random arm replaying the
  other seed's feedback arm; every later seed trains in a process of its own, its random arm
  replaying the feedback arm of the seed before it as that seed's history recorded it. A
  process (a unit) is what a stopped bench resumes from its last checkpoint and skips once
  done; a unit of one seed is under 2 h on 2 cores. In a process the arms take turns in blocks
  of iterations, a yoked arm after the arm it replays. Every arm at the first --all-arms
  seeds; baseline, feedback and random at all --seeds.
- PRIMARY ENDPOINT: the paired difference feedback - random in test APs, its mean and 95%
  t-interval over seeds. Secondary: feedback - baseline and feedback - random in AP, APs, APm,
  APl; DST's time per iteration over the baseline's (round by round in one process, then a
  t-interval over seeds); the images each arm saw.

Amended after seeds 0 and 1 had finished (their results in hand): the protocol first declared
seeds in pairs, each pair one process whose random arms replay each other's feedback arm. A
pair took 3.5 h, more than a working session holds, so every later seed became a process of
its own and its random arm replays the recorded feedback arm of the seed before it (a chain).
The change is in which decisions a random arm replays and in the process layout; the arms,
the iterations, the endpoints and their statistics are as declared.

Added after the runs, labelled post hoc wherever reported: each seed's median of the round
ratios beside the declared mean (one seed's stalls pull the mean), and the diagnostics of
what the feedback responded to (python -m dst_dali.diagnose_feedback on the histories).

    python -m bench.evidence.accuracy [--seeds 6 --all-arms 3]     # hours on 2 cores; resumable
    python -m bench.evidence.accuracy --quick --results-dir DIR     # a tiny run: the output's form

Writes bench/results/accuracy.{json,md}, the pilot and the finished units to accuracy_runs/
(what a later call skips), each run's per-iteration record to accuracy_histories/, the
paper's Fig. 5 and 6 and feedback_diagnostics.json (--results-dir).
"""
import argparse
import contextlib
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..common import RESULTS, ROOT, write_results
from .accuracy_report import diagnose, draw_figures, fmt_ci, fmt_pct, write_history_files
from .accuracy_set import make_dataset
from .statistics import overhead, paired, summarize

CONFIG = os.path.join(ROOT, "bench", "evidence", "accuracy.yaml")
ARMS = {
    "baseline": ["DST.ENABLED", "False"],
    "feedback": ["DST.SIGNAL", "reg", "DST.TAU", "0.1"],
    "random": ["DST.SIGNAL", "never"],  # its controller replays its mate's feedback arm
    "always_collage": ["DST.SIGNAL", "always_collage"],
    "feedback_tau": ["DST.SIGNAL", "reg", "DST.TAU", "{tau}"],
}
PRIMARY_ARMS = ("baseline", "feedback", "random")
YOKED_TO = {"random": "feedback"}
PRIMARY = {"a": "feedback", "b": "random", "metric": "APs"}
METRICS = ("AP", "AP50", "APs", "APm", "APl")
PAIRED_METRICS = ("AP", "APs", "APm", "APl")
LOSSES = ("loss_box_reg", "loss_cls", "loss_rpn_cls", "loss_rpn_loc", "total_loss")
PILOT_SEED = 1000
# --quick checks the output's form, not the detector: its arms keep the ResNet frozen (the FPN
# and the heads train) and evaluate in their own process (not 4 loader workers for 4 images)
QUICK_OPTS = ["MODEL.BACKBONE.FREEZE_AT", "5", "DATALOADER.NUM_WORKERS", "0"]
STOPPED = 3  # a unit's process stopped at a checkpoint as asked, to be continued


def register(data: str) -> None:
    from detectron2.data.datasets import register_coco_instances
    for split in ("train", "val", "test"):
        register_coco_instances(f"dst_scale_{split}", {}, os.path.join(data, f"{split}.json"),
                                os.path.join(data, split))


# -- the arms, taking turns in one process ----------------------------------------------------

class Arm:
    """One arm's DSTTrainer (bench/evidence/accuracy.yaml with the arm's options), stepped as
    detectron2's TrainerBase.train steps it, with random generators of its own: an arm's
    sampling and coin flips do not depend on the turns the arms take. `controller`, if given,
    replaces the one cfg.DST would build; `resume` continues from the output folder's
    last_checkpoint, with DST's state saved beside it."""

    def __init__(self, name: str, opts: list, controller=None, resume=False):
        from detectron2.utils.env import seed_all_rng
        from detectron2.utils.events import EventStorage

        from dst_dali.checkpoint import rng_states
        from dst_dali.config import load_config
        from dst_dali.trainer import DSTTrainer
        self.name = name
        cfg = load_config(CONFIG, opts)
        cfg.freeze()
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        seed_all_rng(cfg.SEED)  # as detectron2's default_setup, whose logging is per process
        trainer_class = DSTTrainer if controller is None else type(
            "YokedTrainer", (DSTTrainer,),
            {"build_controller": classmethod(lambda cls, cfg: controller)})
        self.trainer = trainer_class(cfg)
        self.trainer.resume_or_load(resume=resume)
        self.trainer.iter = self.trainer.start_iter  # as TrainerBase.train begins
        self.trainer.storage = EventStorage(self.trainer.start_iter)
        self.rng = rng_states()
        with self._turn():
            self.trainer.before_train()

    @property
    def controller(self):
        return self.trainer._dst_loader.controller

    @contextlib.contextmanager
    def _turn(self):
        from dst_dali.checkpoint import rng_states, set_rng_states
        set_rng_states(self.rng)
        with self.trainer.storage:
            yield
        self.rng = rng_states()

    def steps(self, n: int) -> list:
        """n iterations: (wall s, data s) each, the wall from before_step to after_step."""
        t = self.trainer
        out = []
        with self._turn():
            for _ in range(min(n, t.max_iter - t.iter)):
                start = time.perf_counter()
                t.before_step()
                t.run_step()
                t.after_step()
                out.append((time.perf_counter() - start, t.storage.latest()["data_time"][0]))
                t.iter += 1
        return out

    def evaluate(self) -> dict:
        """bbox AP figures on cfg.DATASETS.TEST, the model as it is now."""
        with self._turn():
            results = self.trainer.test(self.trainer.cfg, self.trainer.model)
        return dict(results["bbox"])

    def finish(self):
        """detectron2's end of training: the final evaluation, model_final, DST's history."""
        with self._turn():
            self.trainer.after_train()

    def history_rows(self) -> list:
        """Per iteration: kind, next, r, images, the small/medium/large loss shares, what
        decided, the batch's boxes by size, losses."""
        from dst_dali.feedback.record import COUNT_COLUMNS
        from dst_dali.trainer import DSTHook
        hook = next(h for h in self.trainer._hooks if isinstance(h, DSTHook))
        return [{"iteration": h["iteration"], "kind": h["kind"], "next": h["next"],
                 "r": h["share"], "images": sum(len(ids) for ids in h["image_ids"]),
                 **{k: v for k, v in h.items()
                    if k in ("small", "medium", "large", "decided_by") + COUNT_COLUMNS or
                    "loss" in k}}
                for h in hook.history]


def units(seeds: int) -> list:
    """The seeds each process trains: 0 and 1 together (their random arms replay each other's
    feedback arm), then one seed a process."""
    return [(0, 1)] + [(seed,) for seed in range(2, seeds)]


def mate(seed: int) -> int:
    """The seed whose feedback arm this seed's random arm replays."""
    return 1 if seed == 0 else seed - 1


def recorded_decisions(path: str, iters: int) -> list:
    """The kinds a finished run chose after each of its iterations, from its history CSV."""
    from dst_dali.feedback.history import read_history_csv
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the history a yoked arm replays; its seed's unit "
                                "runs first")
    decisions = [h["next"] for h in read_history_csv(path)["history"]]
    if len(decisions) != iters:
        raise ValueError(f"{path}: {len(decisions)} iterations recorded, the schedule has "
                         f"{iters}")
    return decisions


def replayed_histories(spec: dict) -> dict:
    """{arm: the decisions it replays} of spec's arms yoked to an arm of another unit, each
    from that arm's history file, which must hold the whole schedule."""
    return {key: recorded_decisions(os.path.join(spec["histories"], f"{arm['yoke']}.csv.gz"),
                                    spec["iters"])
            for key, arm in spec["arms"].items()
            if arm.get("yoke") and arm["yoke"] not in spec["arms"]}


class DecisionsOf:
    """An arm's controller's decisions as they are now (a resume replaces the list)."""

    def __init__(self, arm: Arm):
        self.arm = arm

    def __len__(self):
        return len(self.arm.controller.decisions)

    def __getitem__(self, i):
        return self.arm.controller.decisions[i]


def resume_point(spec: dict) -> int:
    """The last iteration every arm of spec has a checkpoint and iteration times for (0: none,
    or the checkpoints are of another spec); each arm's last_checkpoint is pointed there."""
    same = {k: v for k, v in spec.items() if k not in ("stop_at", "stop_by")}
    path = spec["wall_file"] + ".spec.json"
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != same:  # another schedule's: its checkpoints go
                for arm in spec["arms"].values():
                    for pattern in ("model_*.pth", "times_*.json"):
                        for f in glob.glob(os.path.join(arm["out_dir"], pattern)):
                            os.remove(f)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(same, f)

    def saved(out):
        done = {int(f[6:13]) + 1 for f in os.listdir(out) if f.startswith("model_0")}
        if os.path.exists(os.path.join(out, "model_final.pth")):
            done.add(spec["iters"])
        return {i for i in done if os.path.exists(os.path.join(out, f"times_{i:07d}.json"))}
    common = None
    for arm in spec["arms"].values():
        have = saved(arm["out_dir"]) if os.path.isdir(arm["out_dir"]) else set()
        common = have if common is None else common & have
    start = max(common or {0})
    for arm in spec["arms"].values():
        if start:
            name = ("model_final.pth" if start == spec["iters"] else
                    f"model_{start - 1:07d}.pth")
            with open(os.path.join(arm["out_dir"], "last_checkpoint"), "w") as f:
                f.write(name)
    return start


def child(spec: dict) -> None:
    """Trains the arms of spec in this process, in blocks of spec["block"] iterations; writes
    each arm's iteration times and history rows to its output folder. The arms with a "yoke"
    replay that arm's decisions: live, taking their turn after it in every round, if it is one
    of spec's arms, else as its history in spec["histories"] recorded them. A stopped
    process is continued from the last checkpoint all arms have (every spec["period"]); one
    stops itself at a checkpoint from spec["stop_at"] (iterations) or spec["stop_by"] (time)."""
    from dst_dali.feedback.controller import ReplayController
    t0 = time.perf_counter()
    register(spec["data"])
    start = resume_point(spec)
    before = 0.0  # the wall time of the processes before this one
    if start:
        with open(f"{spec['wall_file']}_{start:07d}") as f:
            before = float(f.read())
    recorded = replayed_histories(spec)  # checked before any arm is built
    arms = {}
    for key, arm in spec["arms"].items():
        if not arm.get("yoke"):
            arms[key] = Arm(key, arm["opts"], resume=start > 0)
    for key, arm in spec["arms"].items():
        if arm.get("yoke"):
            source = recorded[key] if key in recorded else DecisionsOf(arms[arm["yoke"]])
            replay = ReplayController(source, arm["yoke"])
            arms[key] = Arm(key, arm["opts"], replay, resume=start > 0)
    free = [a for key, a in arms.items() if not spec["arms"][key].get("yoke")]
    yoked = [a for key, a in arms.items() if spec["arms"][key].get("yoke")]
    times = {key: [] for key in arms}
    if start:
        for key, arm in spec["arms"].items():
            with open(os.path.join(arm["out_dir"], f"times_{start:07d}.json")) as f:
                times[key] = json.load(f)
    for r in range(start // spec["block"], -(-spec["iters"] // spec["block"])):
        order = free[r % len(free):] + free[:r % len(free)]
        if yoked:
            order += yoked[r % len(yoked):] + yoked[:r % len(yoked)]
        for arm in order:
            times[arm.name] += [{"round": r, "wall": wall, "data": data_s,
                                 "kept": i >= spec["settle"]}
                                for i, (wall, data_s) in enumerate(arm.steps(spec["block"]))]
        done = min((r + 1) * spec["block"], spec["iters"])
        if done % spec["period"] == 0 or done == spec["iters"]:  # the arms saved a checkpoint
            for key, arm in spec["arms"].items():
                with open(os.path.join(arm["out_dir"], f"times_{done:07d}.json"), "w") as f:
                    json.dump(times[key], f)
            with open(f"{spec['wall_file']}_{done:07d}", "w") as f:
                f.write(str(before + time.perf_counter() - t0))
            if done < spec["iters"] and (done >= spec.get("stop_at", spec["iters"]) or
                                         time.time() >= spec.get("stop_by", float("inf"))):
                sys.exit(STOPPED)  # continued from here by the next call
    for key, arm in arms.items():
        arm.finish()
        out = spec["arms"][key]["out_dir"]
        with open(os.path.join(out, "iteration_times.json"), "w") as f:
            json.dump(times[key], f)
        with open(os.path.join(out, "history_rows.json"), "w") as f:
            json.dump(arm.history_rows(), f)
    with open(spec["wall_file"], "w") as f:
        f.write(str(before + time.perf_counter() - t0))


def pilot_child(spec: dict) -> None:
    """The baseline alone, evaluated on val every spec["every"] iterations until two evaluations
    in a row are within spec["within"] AP; writes the curve and the run's r to spec["out"]."""
    register(spec["data"])
    arm = Arm("pilot", spec["opts"])
    curve, n = [], None
    while arm.trainer.iter < arm.trainer.max_iter:
        arm.steps(spec["every"])
        ap = arm.evaluate()
        curve.append({"iter": arm.trainer.iter, **{m: ap[m] for m in METRICS}})
        print(f"pilot: {json.dumps(curve[-1])}", flush=True)
        if len(curve) > 1 and abs(curve[-1]["AP"] - curve[-2]["AP"]) <= spec["within"]:
            n = arm.trainer.iter
            break
    with open(spec["out"], "w") as f:
        json.dump({"curve": curve, "N": n or arm.trainer.iter, "plateau": n is not None,
                   "r": [h["r"] for h in arm.history_rows()]}, f)


def _child_process(mode: str, spec: dict) -> bool:
    """Runs spec in a process of its own (--child or --pilot); whether it finished (else it
    stopped as asked)."""
    r = subprocess.run([sys.executable, "-m", __spec__.name, f"--{mode}",
                        json.dumps(spec)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode not in (0, STOPPED):
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return r.returncode == 0


def solver_opts(iters: int) -> list:
    steps = sorted({int(iters * 0.75), int(iters * 0.9)})  # one step where they meet (tiny runs)
    return ["SOLVER.MAX_ITER", str(iters),
            "SOLVER.STEPS", str(tuple(steps)),
            "SOLVER.WARMUP_ITERS", str(min(100, iters // 4))]


def pilot(args, data, runs_dir) -> dict:
    """The pilot's curve, N and the tau its r calibrates (run once; kept in runs_dir)."""
    from dst_dali.feedback.controller import calibrate_tau
    path = os.path.join(runs_dir, "pilot.json")
    if not os.path.exists(path):
        out_dir = os.path.join(args.work_dir, "pilot")
        opts = ARMS["baseline"] + solver_opts(args.pilot_cap) + args.opts + [
            "SEED", str(PILOT_SEED), "OUTPUT_DIR", out_dir,
            "DATASETS.TEST", "('dst_scale_val',)"]
        t = time.perf_counter()
        _child_process("pilot", {"data": data, "opts": opts, "every": args.pilot_every,
                                 "within": 0.5, "out": path + ".tmp"})
        wall = time.perf_counter() - t
        with open(path + ".tmp") as f:
            result = json.load(f)
        result["wall_s"] = wall
        with open(path, "w") as f:
            json.dump(result, f)
        os.remove(path + ".tmp")
    with open(path) as f:
        result = json.load(f)
    r = [v for v in result.pop("r") if v is not None]
    result["tau_calibrated"] = calibrate_tau(r)  # the paper's rule: r's median in a baseline
    result["tau_split"] = float(np.mean(np.array(r) <= result["tau_calibrated"]))
    return result


def run_unit(args, data, seeds, arms, tau, histories) -> list:
    """The arms of a unit's seeds ({seed: [arm]}), side by side in a process of its own; each
    random arm replays the feedback arm of its seed's mate, live if the mate is in the unit,
    else from the mate's history file in histories; every arm takes args.opts after its own.
    Returns the runs' results, or None if the process stopped as asked (args.stop_at,
    args.stop_by) before the end."""
    keys, spec_arms = {}, {}
    for seed in seeds:
        for arm in arms[seed]:
            key = f"{arm}_s{seed}"
            out_dir = os.path.join(args.work_dir, key)
            spec_arms[key] = {
                "out_dir": out_dir,
                "opts": ([o.format(tau=tau) for o in ARMS[arm]] + solver_opts(args.iters)
                         + args.opts + ["SEED", str(seed), "OUTPUT_DIR", out_dir,
                                        "SOLVER.CHECKPOINT_PERIOD", str(args.period)]),
                "yoke": f"{YOKED_TO[arm]}_s{mate(seed)}" if arm in YOKED_TO else None}
            keys[key] = (arm, seed)
    wall_file = os.path.join(args.work_dir, f"wall_{unit_name(seeds)}")
    stops = {"stop_at": args.stop_at, "stop_by": args.stop_by}
    spec = {"data": data, "iters": args.iters, "block": args.block, "settle": args.settle,
            "period": args.period, "arms": spec_arms, "wall_file": wall_file,
            "histories": histories, **{k: v for k, v in stops.items() if v is not None}}
    replayed_histories(spec)  # a history too short fails here, not in a process started for it
    if not _child_process("child", spec):
        return None
    with open(wall_file) as f:
        wall = float(f.read())  # of every process the unit took
    runs = []
    for key, (arm, seed) in keys.items():
        run = arm_result(arm, seed, spec_arms[key]["out_dir"], wall)
        run["yoked_to"] = spec_arms[key]["yoke"]
        runs.append(run)
        for f in glob.glob(os.path.join(spec_arms[key]["out_dir"], "model_*.pth")):
            os.remove(f)  # the unit is done: its checkpoints are not needed to resume it
    return runs


def unit_name(seeds) -> str:
    return "seeds_" + "_".join(map(str, seeds))


def arm_result(arm, seed, out_dir, wall_s) -> dict:
    """An arm's test AP (detectron2's final evaluation), collage rate, images seen, times and
    history, from its output folder. Times are of the iterations kept: a block's first ones also
    carry the refill of the previous arm's DALI prefetch queues."""
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    ap = next(row for row in reversed(rows) if "bbox/AP" in row)
    with open(os.path.join(out_dir, "iteration_times.json")) as f:
        times = [t for t in json.load(f) if t["kept"]]
    with open(os.path.join(out_dir, "history_rows.json")) as f:
        history = json.load(f)
    rounds = {}
    for t in times:
        rounds.setdefault(str(t["round"]), []).append(t["wall"])
    return {"arm": arm, "seed": seed, "wall_s": wall_s,
            **{m: ap[f"bbox/{m}"] for m in METRICS},
            "iter_s": float(np.mean([t["wall"] for t in times])),
            "data_s": float(np.mean([t["data"] for t in times])),
            "round_s": {r: float(np.mean(w)) for r, w in rounds.items()},
            "collage_rate": float(np.mean([h["kind"] == "collage" for h in history])),
            "images_seen": int(sum(h["images"] for h in history)),
            "history": history}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a tiny run (the ResNet frozen): checks the output's form")
    ap.add_argument("--seeds", type=int, default=6, help="seeds of the primary arms (>= 2)")
    ap.add_argument("--all-arms", type=int, default=3, help="seeds every arm runs at")
    ap.add_argument("--arms", nargs="+", default=list(ARMS)[:4], choices=list(ARMS))
    ap.add_argument("--iters", type=int, default=None, help="default: the pilot's N")
    ap.add_argument("--pilot-every", type=int, default=500)
    ap.add_argument("--pilot-cap", type=int, default=4000)
    ap.add_argument("--train-images", type=int, default=2000)
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--block", type=int, default=10, help="iterations an arm trains a turn")
    ap.add_argument("--period", type=int, default=250,
                    help="iterations between checkpoints a stopped unit continues from")
    ap.add_argument("--settle", type=int, default=3,
                    help="iterations at the start of a turn not timed (see arm_result)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "output", "accuracy"))
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="accuracy")
    ap.add_argument("--pilot-only", action="store_true")
    ap.add_argument("--hours", type=float, default=None,
                    help="stop at the first checkpoint after this long; the next call goes on")
    ap.add_argument("--stop-at", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--pilot", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if args.pilot:
        return pilot_child(json.loads(args.pilot))
    if args.quick:
        args.seeds, args.all_arms, args.block, args.settle, args.period = 3, 2, 2, 1, 2
        args.pilot_every, args.pilot_cap = 2, 4
        args.train_images, args.val_images, args.test_images = 24, 4, 4
    args.opts = QUICK_OPTS if args.quick else []
    if args.seeds < 2 or args.all_arms > args.seeds:
        ap.error("--seeds: at least 2 (the first two replay each other); --all-arms: at most "
                 "--seeds")
    if args.period % args.block:
        ap.error("--period: a multiple of --block (the arms checkpoint between turns)")
    if args.quick and os.path.abspath(args.results_dir) == os.path.abspath(RESULTS):
        ap.error("--quick writes only to a --results-dir of its own")
    t0 = time.perf_counter()
    args.stop_by = None if args.hours is None else time.time() + 3600 * args.hours
    data = os.path.join(args.work_dir, "data")
    figures = make_dataset(data, 0, args.train_images, args.val_images, args.test_images)
    print(f"data: {json.dumps({s: figures[s] for s in ('train', 'val', 'test')})}", flush=True)
    runs_dir = os.path.join(args.results_dir, f"{args.name}_runs")
    histories = os.path.join(args.results_dir, f"{args.name}_histories")
    os.makedirs(runs_dir, exist_ok=True)
    pilot_result = pilot(args, data, runs_dir)
    print(f"pilot: N = {pilot_result['N']}, curve {pilot_result['curve']}, tau calibrated "
          f"{pilot_result['tau_calibrated']:.4g}", flush=True)
    if args.pilot_only:
        return pilot_result
    args.iters = args.iters or pilot_result["N"]
    runs, walls = [], {}
    for seeds in units(args.seeds):
        arms = {seed: [a for a in args.arms if seed < args.all_arms or a in PRIMARY_ARMS]
                for seed in seeds}
        path = os.path.join(runs_dir, f"{unit_name(seeds)}.json")
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            if done["iters"] == args.iters and done["arms"] == {
                    str(seed): names for seed, names in arms.items()}:
                runs += done["runs"]
                walls[seeds] = done["runs"][0]["wall_s"]
                print(f"seeds {seeds}: done before ({path})", flush=True)
                continue
        mine = run_unit(args, data, seeds, arms, pilot_result["tau_calibrated"], histories)
        if mine is None:
            print(f"seeds {seeds}: stopped at a checkpoint as asked; run again to go on")
            return None
        write_history_files(mine, histories)
        mine = [{k: v for k, v in r.items() if k != "history"} for r in mine]
        with open(path + ".tmp", "w") as f:
            json.dump({"iters": args.iters, "arms": arms, "runs": mine}, f)
        os.replace(path + ".tmp", path)
        runs += mine
        walls[seeds] = mine[0]["wall_s"]
        for run in mine:
            print(f"{run['arm']:15s} seed {run['seed']}: AP {run['AP']:.2f} APs {run['APs']:.2f} "
                  f"collage {run['collage_rate']:.0%} {run['iter_s']:.3f} s/iter", flush=True)
        print(f"seeds {seeds}: {mine[0]['wall_s']:.0f} s", flush=True)
    rows = summarize(runs, ARMS, METRICS)
    arms_run = {r["arm"] for r in runs}
    pairs = [paired(runs, "feedback", b, m) for b in ("baseline", "random") if b in arms_run
             for m in PAIRED_METRICS if "feedback" in arms_run]
    cost = overhead(runs)
    commands = draw_figures(args.results_dir, histories, 0.1) if {
        "baseline", "feedback"} <= arms_run else []
    diagnostics = diagnose(args.results_dir, histories) if "feedback" in arms_run else []
    primary = next((p for p in pairs if (p["a"], p["b"], p["metric"]) == tuple(
        PRIMARY.values())), None)
    notes = [
        f"data: train {figures['train']}, val {figures['val']}, test {figures['test']}",
        f"pilot (baseline, seed {PILOT_SEED}, val): AP by iteration "
        + ", ".join(f"{c['iter']}: {c['AP']:.2f}" for c in pilot_result["curve"])
        + f"; N = {args.iters}" + ("" if pilot_result["plateau"] else " (the cap: no plateau)"),
        f"tau from the pilot's r (python -m dst_dali.calibrate_tau's rule, the median): "
        f"{pilot_result['tau_calibrated']:.4g}, r <= tau in {pilot_result['tau_split']:.0%}",
        f"{args.iters} iterations of 4 images in every arm, LR steps at 75% and 90%; "
        f"seeds 0 and 1 in one process, each later seed in its own, arms taking turns in "
        f"blocks of {args.block}; random replays the feedback arm of seed 1 (seed 0) or of the "
        "seed before",
        "primary endpoint (declared before the runs): feedback - random in test APs: "
        + (f"{primary['mean_diff']:+.2f}, 95% CI {fmt_ci(primary['ci95'])} over "
           f"{primary['seeds']} seeds" if primary else "not run"),
        f"DST time per iteration over the baseline's: {fmt_pct(cost['mean'])}, 95% CI "
        f"[{fmt_pct(cost['ci95'][0])}, {fmt_pct(cost['ci95'][1])}] over {cost['seeds']} seeds "
        f"(per seed: {', '.join(fmt_pct(v) for v in cost['per_seed_mean'])}); post hoc, each "
        f"seed's median round: {', '.join(fmt_pct(v) for v in cost['per_seed_median_post_hoc'])}",
        f"wall time: {time.perf_counter() - t0:.0f} s this call; the units took "
        + ", ".join(f"{'+'.join(map(str, u))}: {w / 3600:.2f} h" for u, w in walls.items())
        + " (a unit done before is read back)",
    ] + [f"figures: `{c}`" for c in commands] + diagnostics
    columns = [("arm", "arm"), ("seeds", "seeds")] + [
        (k, k) for m in METRICS for k in (m, f"{m}_std")] + [
        ("collage_rate", "collage rate"), ("images_seen", "images seen"),
        ("iter_s", "s / iteration"), ("data_s", "data s / iteration")]
    path = write_results(
        args.name, rows, columns,
        {"data": {s: figures[s] for s in ("train", "val", "test")},
         "sources": figures["sources"], "pilot": pilot_result, "iters": args.iters,
         "seeds": args.seeds, "all_arms": args.all_arms, "block": args.block,
         "settle": args.settle, "runs": runs, "figures": commands},
        notes, results_dir=args.results_dir, script=__file__, argv=argv,
        extra={"paired": pairs, "primary": PRIMARY, "overhead": cost,
               "histories": os.path.relpath(histories, args.results_dir)})
    with open(path, "a") as f:
        f.write("\n| a - b | metric | mean | 95% CI | seeds |\n|---|---|---|---|---|\n")
        for p in pairs:
            f.write(f"| {p['a']} - {p['b']} | {p['metric']} | {p['mean_diff']:+.2f} | "
                    f"{fmt_ci(p['ci95'])} | {p['seeds']} |\n")
    print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
