"""Running train/train_dali.py as users run it, for test_train.py and test_train_launchers.py:
the demo config with a few iterations, its outputs read back, and its setup alone."""
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "train", "configs")
DEMO = os.path.join(CONFIGS, "demo_coco128_cpu.yaml")
# the demo config at a third of its pixels, its backbone frozen (the FPN and the heads train):
# what the tests assert depends on neither, and an iteration costs about a quarter; the
# feedback plot only where a test looks at it
LIGHT = ["INPUT.MIN_SIZE_TRAIN", "(192,)", "INPUT.MAX_SIZE_TRAIN", "320",
         "INPUT.MIN_SIZE_TEST", "192", "INPUT.MAX_SIZE_TEST", "320",
         "MODEL.BACKBONE.FREEZE_AT", "5", "DST.PLOT", "False"]
QUICK = ["DATASETS.TEST", "('coco128_first16',)", "SOLVER.STEPS", "()",
         "SOLVER.WARMUP_ITERS", "2"] + LIGHT
NO_EVAL = ["DATASETS.TEST", "()"]  # a third of a run's time, where a test asserts nothing of it
# a paper config cut down to run here: ResNet-18 with the demo's heads, small images,
# 4 iterations, no evaluation
TINY = ["MODEL.RESNETS.DEPTH", "18", "MODEL.FPN.OUT_CHANNELS", "128",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128", "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
        "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", "DST.TAU", "0.5"] + LIGHT


def demo_args(out_dir, *opts, resume=False, evaluate=False):
    """train_dali.py's arguments for the demo config with QUICK (and NO_EVAL, unless evaluate:
    COCO evaluation on coco128's first 16)."""
    return (["--config", DEMO] + (["--resume"] if resume else []) + QUICK
            + ([] if evaluate else NO_EVAL) + ["OUTPUT_DIR", str(out_dir)] + list(opts))


def train(out_dir, *opts, resume=False, evaluate=False):
    """train_dali.py on the demo config, as demo_args() says, in a process of its own."""
    cmd = [sys.executable, os.path.join(ROOT, "train", "train_dali.py")] + demo_args(
        out_dir, *opts, resume=resume, evaluate=evaluate)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def train_in_one_process(runs, env=None):
    """train_dali.main on each argument list of `runs`, one after another in one process, as a
    user's launcher calls it (a process's start-up is about a third of such a run here)."""
    code = ("import json, sys\n"
            "from train import train_dali\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    train_dali.main(train_dali.parse_args(argv))\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(list(runs))], cwd=ROOT,
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def metrics(out_dir):
    with open(out_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def history(path):
    return torch.load(path, weights_only=True)["history"]  # loads without running code


def check_setup(*opts, config=DEMO):
    from train.train_dali import parse_args, register_bundled_datasets, setup
    register_bundled_datasets()
    return setup(parse_args(["--config", config, *opts]))
