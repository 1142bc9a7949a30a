"""The run's feedback as the paper draws it: r per iteration against tau with the collage
decisions (Fig. 5), and the loss shares of small, medium and large objects (Fig. 6)."""
import os

import numpy as np


def plot_feedback(history, controller, output_dir: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    it = np.array([h["iteration"] for h in history])
    share = np.array([np.nan if h["share"] is None else h["share"] for h in history])
    collage = np.array([h["kind"] == "collage" for h in history])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    top.plot(it, share, lw=1, color="tab:blue", label="r: small-object share of the loss")
    tau = getattr(controller, "tau", None)
    if tau is not None:
        top.axhline(tau, color="tab:red", ls="--", lw=1, label=f"τ = {tau:g}")
    top.scatter(it[collage], np.zeros(collage.sum()), marker="|", color="tab:orange", s=80,
                label=f"collage iteration ({collage.mean():.0%})")
    top.set_ylabel("r")
    top.set_ylim(-0.05, 1.0)
    top.legend(loc="upper right", fontsize=8)
    top.set_title("DST feedback")
    for name, color in (("small", "tab:orange"), ("medium", "tab:green"), ("large", "tab:blue")):
        values = np.array([h.get(name, np.nan) for h in history])
        bottom.plot(it, values, lw=1, color=color, label=name)
    bottom.set_ylabel("share of the loss")
    bottom.set_xlabel("iteration")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = os.path.join(output_dir, "dst_feedback.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
