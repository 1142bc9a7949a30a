"""The signals r can be taken from (a loss signal with the row of the probes' parts it reads)
and the scopes a decision is made over, apart from the probes that measure them (signals, which
needs torch): the loader's settings and the detectron2 config are checked without torch."""
from .controller import STATIC_MODES

# The signals measured from the model's losses: each is a row of the probes' (2, 4) parts
# (rows: the box-regression and the classification loss of positives; columns: small, medium,
# large, all). A new one is an entry here; the loader, the config and the trainer read this.
LOSS_SIGNALS = {"reg": lambda parts: parts[0],
                "cls": lambda parts: parts[1],
                "joint": lambda parts: parts[0] + parts[1]}
FEEDBACK_SIGNALS = tuple(LOSS_SIGNALS)             # from the model's losses
INPUT_SIGNAL = "input"                             # from the batch's boxes
STATIC_SIGNALS = STATIC_MODES                      # the controls: no measurement
REPLAY_SIGNAL = "replay"                           # another run's decisions (a yoked control)
SIGNALS = FEEDBACK_SIGNALS + (INPUT_SIGNAL,) + STATIC_SIGNALS + (REPLAY_SIGNAL,)
WATCH_SIGNALS = FEEDBACK_SIGNALS + (INPUT_SIGNAL,)  # what watch() can measure r from

DECISIONS = ("per_rank", "global")  # r of this rank's batch, or of the ranks' summed losses
