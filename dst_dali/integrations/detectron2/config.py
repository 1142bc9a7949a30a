"""The `DST:` section of a detectron2 config, and loading a config with it checked.

    DST:
      ENABLED: True        # False: the baseline (regular batches only, same loader)
      TAU: 0.1             # next iteration is a collage iff r <= TAU (in [-1, 1]; < 0: never)
      DECISION: "per_rank" # per_rank: each rank decides from its own batch's r (the paper);
                           # global: one decision from the losses summed over ranks
      TAU_WARMUP: 0        # > 0: that many regular-only iterations, then TAU is set to the
      TAU_QUANTILE: 0.5    #   TAU_QUANTILE of their r (pooled over ranks); TAU is unused
      K: 4                 # images a collage: 1, 4, 9 or 16
      SIGNAL: "reg"        # reg | cls | joint | input | random | always_collage | never |
                           # replay (REPLAY_FROM's decisions, iteration by iteration)
      REPLAY_FROM: ""      # OUTPUT_DIR of a finished run (its dst_history, this rank's)
      DEVICE: "auto"       # where DALI runs: auto | cpu | gpu
      RANDOM_PROB: 0.5     # collage probability of SIGNAL "random"
      EXPLORE: 0.0         # share of DST's decisions drawn at random, recorded as such (for
                           # python -m dst_dali.diagnose_feedback); 0: the paper's rule
      NUM_THREADS: 2       # DALI CPU threads of each kind (regular, collage)
      PIPELINES: 0         # DALI pipelines of each kind, sharing its threads; 0: 2 on the CPU
                           # (at most NUM_THREADS), 1 on a GPU
      BAD_IMAGES: "stop"   # an image that is missing, unreadable, does not decode, has another
                           # size than its entry or more than MAX_PIXELS: stop (naming it) |
                           # skip (logged, counted as dst/images_set_aside)
      MAX_PIXELS: 178956970  # by its entry or its file's header (PIL's threshold); 0: no limit
      PLOT: True           # OUTPUT_DIR/dst_feedback.png (r and the decisions) at the end
"""
from detectron2.config import CfgNode, get_cfg

from ...data.image_files import MAX_PIXELS
from ...data.index import is_integer, is_number
from ...feedback.controller import TAU_RULE, valid_tau
from ...feedback.signal_table import (
    INPUT_SIGNAL,
    REPLAY_SIGNAL,
    SIGNALS,
    STATIC_SIGNALS,
    WATCH_SIGNALS,
)
from ...settings import check_setting

DST_DEFAULTS = {"ENABLED": True, "TAU": 0.1, "DECISION": "per_rank", "TAU_WARMUP": 0,
                "TAU_QUANTILE": 0.5, "K": 4, "SIGNAL": "reg", "DEVICE": "auto",
                "RANDOM_PROB": 0.5, "EXPLORE": 0.0, "REPLAY_FROM": "", "NUM_THREADS": 2,
                "PIPELINES": 0, "BAD_IMAGES": "stop", "MAX_PIXELS": MAX_PIXELS, "PLOT": True}
# What each meta-architecture can feed back: the loss-based signals need its box loss probe.
SIGNALS_OF = {"GeneralizedRCNN": SIGNALS, "RetinaNet": SIGNALS, "FCOS": SIGNALS}
MODEL_FREE_SIGNALS = (INPUT_SIGNAL,) + STATIC_SIGNALS + (REPLAY_SIGNAL,)


def add_dst_config(cfg: CfgNode) -> None:
    """Adds the DST section (the defaults above) to a detectron2 config."""
    cfg.DST = CfgNode(dict(DST_DEFAULTS))


def _check_keys(keys, where: str) -> None:
    unknown = sorted(set(keys) - set(DST_DEFAULTS))
    if unknown:
        raise KeyError(f"{where}: unknown DST key(s) {unknown}; the valid ones are "
                       f"{sorted(DST_DEFAULTS)}")


# DST keys that are loader settings: checked by the loader's own rules (dst_dali.settings),
# named as the config names them; 0 stands for the loader's default where the key says so
LOADER_SETTINGS = {"K": "k", "DEVICE": "device", "DECISION": "decision",
                   "BAD_IMAGES": "bad_images", "NUM_THREADS": "num_threads",
                   "PIPELINES": "pipelines", "MAX_PIXELS": "max_pixels"}
ZERO_IS_DEFAULT = ("PIPELINES", "MAX_PIXELS")


def _check(ok: bool, key: str, value, why: str) -> None:
    if not ok:
        raise ValueError(f"DST.{key}={value!r}: {why}")


def check_dst_config(cfg: CfgNode) -> None:
    """ValueErrors naming the key, for settings no run could use."""
    dst = cfg.DST
    for key, field in LOADER_SETTINGS.items():
        value = dst[key]
        check_setting(field, None if key in ZERO_IS_DEFAULT and value == 0 and
                      is_integer(value) else value, label=f"DST.{key}")
    _check(valid_tau(dst.TAU), "TAU", dst.TAU, f"must be {TAU_RULE}")
    _check(is_integer(dst.TAU_WARMUP) and dst.TAU_WARMUP >= 0, "TAU_WARMUP", dst.TAU_WARMUP,
           "must be a non-negative integer")
    _check(is_number(dst.TAU_QUANTILE) and 0.0 <= dst.TAU_QUANTILE <= 1.0, "TAU_QUANTILE",
           dst.TAU_QUANTILE, "must be in [0, 1]")
    _check(is_number(dst.RANDOM_PROB) and 0.0 <= dst.RANDOM_PROB <= 1.0, "RANDOM_PROB",
           dst.RANDOM_PROB, "must be in [0, 1]")
    _check(is_number(dst.EXPLORE) and 0.0 <= dst.EXPLORE <= 1.0, "EXPLORE", dst.EXPLORE,
           "must be in [0, 1]")
    if dst.EXPLORE and dst.SIGNAL not in WATCH_SIGNALS:
        raise ValueError(f"DST.EXPLORE={dst.EXPLORE}: explores the feedback's decisions, "
                         f"which DST.SIGNAL={dst.SIGNAL!r} does not take")
    _check(dst.SIGNAL in SIGNALS, "SIGNAL", dst.SIGNAL, f"must be one of {SIGNALS}")
    if dst.TAU_WARMUP and dst.SIGNAL not in WATCH_SIGNALS:
        raise ValueError(f"DST.TAU_WARMUP={dst.TAU_WARMUP}: calibrates tau, which DST.SIGNAL="
                         f"{dst.SIGNAL!r} does not use")
    if (dst.SIGNAL == REPLAY_SIGNAL) != bool(dst.REPLAY_FROM):
        raise ValueError(f"DST.SIGNAL={dst.SIGNAL!r}, DST.REPLAY_FROM={dst.REPLAY_FROM!r}: "
                         f"SIGNAL {REPLAY_SIGNAL!r} replays the run in REPLAY_FROM, which no "
                         "other signal reads; give both or neither")
    arch = cfg.MODEL.META_ARCHITECTURE
    possible = SIGNALS_OF.get(arch, MODEL_FREE_SIGNALS)
    if dst.ENABLED and dst.SIGNAL not in possible:
        raise ValueError(f"DST.SIGNAL={dst.SIGNAL!r}: MODEL.META_ARCHITECTURE={arch!r} has no "
                         f"box loss to measure it from; it can use {possible}")
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "choice":
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING={cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING!r}: "
                         "DSTLoader draws the short side as 'choice'")
    if not cfg.DATASETS.TRAIN:
        raise ValueError("DATASETS.TRAIN is empty")
    if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP={cfg.INPUT.RANDOM_FLIP!r}: DSTLoader flips "
                         "horizontally (the paper's augmentation) or not at all; use "
                         "'horizontal' or 'none'")


def load_config(config_file: str, opts=()) -> CfgNode:
    """detectron2's config with the DST section, from a yaml file and KEY VALUE overrides.
    Unknown DST keys fail with the list of valid ones (detectron2 alone names only the key)."""
    from .fcos import add_fcos_config  # registers FCOS with detectron2's builders
    cfg = get_cfg()
    add_dst_config(cfg)
    add_fcos_config(cfg)
    loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)
    _check_keys((loaded.get("DST") or {}).keys(), config_file)
    opts = list(opts)
    _check_keys([k[len("DST."):] for k in opts[0::2] if k.startswith("DST.")], "command line")
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    check_dst_config(cfg)
    return cfg
