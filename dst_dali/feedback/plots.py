"""A run's feedback in pictures: r per iteration against tau with the collage decisions and the
loss shares by object size (written at the end of each run), and the paper's Fig. 5 and Fig. 6
from finished runs (the command: python -m dst_dali.plots)."""
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
    from .sizes import GROUPS
    for name, color in zip(GROUPS, ("tab:orange", "tab:green", "tab:blue")):
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


# -- the paper's figures from finished runs -------------------------------------------------------

def _per_iteration(histories: dict, key: str):
    """(iterations, values averaged over ranks) of one history field; NaN where unmeasured."""
    rows = {}
    for run in histories.values():
        for h in run["history"]:
            v = h.get(key)
            rows.setdefault(h["iteration"], []).append(np.nan if v is None else v)
    it = np.array(sorted(rows))
    return it, np.array([np.nanmean(rows[i]) if not np.all(np.isnan(rows[i])) else np.nan
                         for i in it])


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` iterations (at most the run's), unmeasured ones left
    out."""
    window = max(1, min(window, len(values)))
    ok = ~np.isnan(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(ok, values, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(float), kernel, mode="same")
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_loss_shares(runs: dict, path: str, window: int = 50) -> str:
    """The paper's Fig. 5: the shares of the loss owed to small, medium and large objects over
    iterations, one line style per run (e.g. {"baseline": ..., "DST": ...} of read_histories)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .sizes import GROUPS
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = dict(zip(GROUPS, ("tab:orange", "tab:green", "tab:blue")))
    for (label, histories), style in zip(runs.items(), ("-", "--", ":", "-.")):
        for group, color in colors.items():
            it, values = _per_iteration(histories, group)
            ax.plot(it, smooth(values, window), style, color=color, lw=1.2,
                    label=f"{group}, {label}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"share of the loss (moving average of {window})")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Loss shares by object size (paper Fig. 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_share_distribution(runs: dict, tau: float, path: str) -> str:
    """The paper's Fig. 6: the distribution of r against tau, per run, over its regular
    iterations, so that runs compare like with like; a run's collage iterations (whose r
    measures collages, larger where small objects are many) are drawn apart, dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..stream.kinds import COLLAGE, REGULAR
    from .history import shares_of
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 51)
    for (label, histories), color in zip(runs.items(), ("tab:blue", "tab:orange", "tab:green",
                                                        "tab:purple")):
        r = np.array(shares_of(histories, REGULAR))
        ax.hist(r, bins=bins, histtype="step", lw=1.5, density=True, color=color,
                label=f"{label}, regular iterations: median {np.median(r):.3f}, "
                      f"r <= τ in {np.mean(r <= tau):.0%}")
        collage = np.array(shares_of(histories, COLLAGE))
        if len(collage):
            ax.hist(collage, bins=bins, histtype="step", lw=1, ls=":", density=True,
                    color=color, label=f"{label}, collage iterations ({len(collage)}): "
                                       f"median {np.median(collage):.3f}")
    ax.axvline(tau, color="tab:red", ls="--", lw=1, label=f"τ = {tau:g}")
    ax.set_xlabel("r: small-object share of the loss")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title("Distribution of r (paper Fig. 6), regular iterations; collages apart")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
