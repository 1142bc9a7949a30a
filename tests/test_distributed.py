"""Two ranks over torch.distributed (gloo, CPU): one decision for both, disjoint shards."""
import os

import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Local (small, total) per iteration and rank: rank 0 alone would decide otherwise than rank 1.
LOCAL = {0: [(0.0, 1.0), (0.0, 1.0), (0.05, 1.0), (0.0, 0.0)],
         1: [(0.5, 1.0), (0.15, 1.0), (0.9, 1.0), (0.0, 0.0)]}


def _rank(rank, world, init_file, out):
    import torch.distributed as dist

    from dst_dali import DSTLoader, FeedbackController
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        ctrl = FeedbackController(tau=0.1)
        shares = [ctrl.observe(small, total) for small, total in LOCAL[rank]]
        loader = DSTLoader(os.path.join(ROOT, "data", "coco128", "images"),
                           os.path.join(ROOT, "data", "coco128", "instances.json"),
                           batch_size=2, device="cpu", shard_id=rank, num_shards=world,
                           aspect_ratio_grouping=False)
        ids = [d["image_id"] for _ in range(len(loader)) for d in loader.next_batch("regular")]
        out[rank] = (shares, list(ctrl.decisions), ids[:loader.shard_size])
    finally:
        dist.destroy_process_group()


def test_two_ranks_decide_together_and_read_disjoint_shards(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    (s0, d0, ids0), (s1, d1, ids1) = out[0], out[1]
    # the shares of the summed losses, the same on both ranks
    assert s0 == s1
    assert [round(s, 6) if s is not None else None for s in s0] == [0.25, 0.075, 0.475, None]
    # alone, rank 0 would have chosen collage after iterations 0 and 2 (r = 0, 0.05) and rank 1
    # regular after iteration 1 (r = 0.15); together both follow the summed share
    assert d0 == d1 == ["regular", "collage", "regular", "regular"]
    assert not set(ids0) & set(ids1) and len(set(ids0) | set(ids1)) == 126
