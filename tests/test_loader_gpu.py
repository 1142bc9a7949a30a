"""DSTLoader on a GPU node (skipped here, where there is none): a pipeline's device_id and the
CUDA tensors it hands to torch agree, whichever device torch's current one is."""
import pytest
import torch

from dst_dali.op.device import resolve_device


def gpu_ready():
    try:
        return resolve_device("gpu") == "gpu" and torch.cuda.is_available()
    except ValueError:
        return False


@pytest.mark.skipif(not gpu_ready(), reason="needs a CUDA GPU visible to DALI and torch")
def test_batches_land_on_the_pipelines_gpu_not_torchs_current_one(coco128):
    from dst_dali import DSTLoader
    n = torch.cuda.device_count()
    for device_id in range(n):
        torch.cuda.set_device((device_id + 1) % n)  # another GPU than the pipeline's, if any
        loader = DSTLoader(coco128.images, coco128.annotations, batch_size=2, device="gpu",
                           device_id=device_id, output="torchvision", seed=0)
        for kind in ("regular", "collage"):
            images, targets = loader.next_batch(kind)
            assert all(im.device == torch.device("cuda", device_id) for im in images)
            assert all(t["boxes"].device == torch.device("cuda", device_id) for t in targets)
    torch.cuda.set_device(0)
