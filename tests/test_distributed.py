"""Two ranks over torch.distributed (gloo, CPU): per-rank and global decisions, tau calibrated
from every rank's r, disjoint loader shards by default (no shard arguments, as detectron2's
lazyconfig_train_net.py builds its loader)."""
import os

import numpy as np
import pytest
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Local (small, total) per iteration and rank: rank 0 alone would decide otherwise than rank 1.
LOCAL = {0: [(0.0, 1.0), (0.0, 1.0), (0.05, 1.0), (0.0, 0.0)],
         1: [(0.5, 1.0), (0.15, 1.0), (0.9, 1.0), (0.0, 0.0)]}


def _rank(rank, world, init_file, out):
    import torch.distributed as dist

    from dst_dali import DSTLoader, FeedbackController
    from dst_dali.stream.distributed import gather_over_ranks, sum_over_ranks
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        per_rank, global_ = FeedbackController(tau=0.1), FeedbackController(tau=0.1)
        for small, total in LOCAL[rank]:
            per_rank.observe(small, total)
            global_.observe(*sum_over_ranks([small, total]))
        calibrated = FeedbackController(None, warmup=3, pool=gather_over_ranks)
        for small, total in LOCAL[rank]:
            calibrated.observe(small, total)
        loader = DSTLoader(os.path.join(ROOT, "data", "coco128", "images"),
                           os.path.join(ROOT, "data", "coco128", "instances.json"),
                           batch_size=2, device="cpu", aspect_ratio_grouping=False)
        assert (loader.settings.shard_id, loader.settings.num_shards) == (rank, world)
        ids = [d["image_id"] for _ in range(len(loader)) for d in loader.next_batch("regular")]
        # no grouping: the first len(drawn) batches are this rank's share of one epoch exactly
        # (grouped, an orientation's last images can go to the next epoch's batches)
        drawn = DSTLoader(os.path.join(ROOT, "data", "coco128", "images"),
                          os.path.join(ROOT, "data", "coco128", "instances.json"),
                          batch_size=2, device="cpu", seed=None,
                          aspect_ratio_grouping=False)
        drawn_ids = [d["image_id"] for _ in range(len(drawn))
                     for d in drawn.next_batch("regular")]
        out[rank] = dict(per_rank=list(per_rank.decisions), global_=list(global_.decisions),
                         global_shares=list(global_.shares), tau=calibrated.tau,
                         calibrated=list(calibrated.decisions), ids=ids[:loader.shard_size],
                         seed=drawn.settings.seed, drawn_ids=drawn_ids[:drawn.shard_size])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_per_rank_and_global_decisions(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    # per rank (the paper): each follows its own r <= 0.1
    assert r0["per_rank"] == ["collage", "collage", "collage", "regular"]
    assert r1["per_rank"] == ["regular", "regular", "regular", "regular"]
    # global: both follow the share of the summed losses
    assert r0["global_shares"] == r1["global_shares"]
    assert [round(s, 6) if s is not None else None for s in r0["global_shares"]] == \
        [0.25, 0.075, 0.475, None]
    assert r0["global_"] == r1["global_"] == ["regular", "collage", "regular", "regular"]
    # tau from both ranks' warm-up r (3 iterations each), the same on both: their median
    pooled = [0.0, 0.0, 0.05, 0.5, 0.15, 0.9]
    assert r0["tau"] == r1["tau"] == np.quantile(pooled, 0.5)
    # two warm-up decisions are regular; the last warm-up r then decides against tau
    # (rank 0: 0.05 <= 0.1, rank 1: 0.9), and no r (total 0) means regular
    assert r0["calibrated"] == ["regular", "regular", "collage", "regular"]
    assert r1["calibrated"] == ["regular"] * 4
    # the loader: disjoint shards covering the data
    assert not set(r0["ids"]) & set(r1["ids"]) and len(set(r0["ids"]) | set(r1["ids"])) == 126
    # seed=None (SEED -1): one seed drawn for both ranks, so their shards stay disjoint
    assert r0["seed"] == r1["seed"]
    assert not set(r0["drawn_ids"]) & set(r1["drawn_ids"])
    assert len(set(r0["drawn_ids"]) | set(r1["drawn_ids"])) == 126
