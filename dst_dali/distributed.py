"""What crosses ranks: the feedback's numbers summed, and the warm-up's r values gathered (as
torchvision's reference keeps reduce_dict beside its training loop, not in the model)."""
from typing import List, Sequence


def _world():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


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
