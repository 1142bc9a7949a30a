"""From the loss back to the loader: r split from the model's own losses (signals; their names
in signal_table), fed to the controller once a batch's forward has run (feed), the policy that
picks the next kind (controller), the model found inside a loop that knows nothing of DST
(stock_loops), and the record of a run with its pictures (history, plots)."""
from .controller import (
                         FeedbackController,
                         ReplayController,
                         StaticController,
                         calibrate_tau,
)

__all__ = ["FeedbackController", "ReplayController", "StaticController", "calibrate_tau"]
