"""What crosses ranks: each rank's shard of the data, a drawn seed, the feedback's numbers
summed, and the warm-up's r values gathered (as torchvision's reference keeps reduce_dict beside
its training loop, not in the model)."""
import secrets
from typing import List, Optional, Sequence, Tuple

from ..data.index import is_integer


def _world():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def shard_of_rank(shard_id: Optional[int], num_shards: Optional[int]) -> Tuple[int, int]:
    """(shard_id, num_shards) as given; when neither is given, this process's rank and the
    world size where torch.distributed is initialised (detectron2's launch, torchrun), else
    (0, 1). Giving one without the other is an error: it would shard by half a setting."""
    if shard_id is None and num_shards is None:
        try:
            import torch.distributed as dist
        except ImportError:
            return 0, 1
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if shard_id is None or num_shards is None:
        raise ValueError(f"shard_id={shard_id!r}, num_shards={num_shards!r}: give both, or "
                         "neither (then torch.distributed's rank and world size)")
    for name, value in (("shard_id", shard_id), ("num_shards", num_shards)):
        if not is_integer(value):
            raise ValueError(f"{name}={value!r}: must be an integer")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id={shard_id}, num_shards={num_shards}: need "
                         "0 <= shard_id < num_shards")
    return shard_id, num_shards


def shared_random_seed(num_shards: int) -> int:
    """A random seed in [0, 2**31), the same on every torch.distributed rank (rank 0's draw, as
    detectron2's comm.shared_random_seed for SEED -1). Shards of one dataset must deal the
    same permutations: `num_shards` > 1 without torch.distributed is an error."""
    seed = [secrets.randbelow(2 ** 31)]
    dist = _world()
    if dist is not None:
        dist.broadcast_object_list(seed, src=0)
    elif num_shards > 1:
        raise ValueError(f"seed=None with num_shards={num_shards}: a drawn seed is shared "
                         "through torch.distributed, which is not initialised here; give every "
                         "shard the same seed")
    return seed[0]


def sum_over_ranks(values: Sequence[float]) -> List[float]:
    """`values` (numbers) summed over torch.distributed ranks, as Python floats: one all-reduce
    and one host read a call; the values themselves when not distributed."""
    dist = _world()
    if dist is None:
        return [float(v) for v in values]
    import torch
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_over_ranks(values: Sequence[float]) -> List[float]:
    """Every rank's `values`, concatenated in rank order (the values when not distributed)."""
    dist = _world()
    if dist is None:
        return list(values)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(values))
    return [v for part in gathered for v in part]
