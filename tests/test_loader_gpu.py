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


@pytest.mark.skipif(not gpu_ready(), reason="needs a CUDA GPU visible to DALI and torch")
def test_unsynchronised_batches_equal_synchronised_ones_beside_other_streams(coco128):
    """The hand-off shares DALI's buffers with torch and orders torch's stream after DALI's
    work by an event, never the host (docs/design.md): 300 batches taken with no
    synchronisation, used on torch's stream at once while a second stream does unrelated work,
    equal the same batches taken with the device synchronised after every step."""
    kw = dict(images=coco128.images, annotations=coco128.annotations, batch_size=2,
              device="gpu", output="torchvision", seed=0)
    kinds = ["collage" if (i * 7) % 3 == 0 else "regular" for i in range(300)]
    side = torch.cuda.Stream()
    noise = torch.randn(2048, 2048, device="cuda")
    loose, kept, used = DSTLoaderOf(kw), [], []
    for kind in kinds:
        with torch.cuda.stream(side):
            noise = noise @ noise.T / 2048  # unrelated work on another stream
        images, _ = loose.next_batch(kind)
        used.append([im.float().mean() for im in images])  # used at once, on torch's stream
        kept.append(images)
    strict = DSTLoaderOf(kw)
    for kind, got, means in zip(kinds, kept, used):
        images, _ = strict.next_batch(kind)
        torch.cuda.synchronize()
        assert all(torch.equal(a, b) for a, b in zip(got, images))
        assert [float(m) for m in means] == [float(im.float().mean()) for im in images]


def DSTLoaderOf(kw):
    from dst_dali import DSTLoader
    return DSTLoader(**kw)


@pytest.mark.skipif(not gpu_ready(), reason="needs a CUDA GPU visible to DALI and torch")
def test_the_gpu_graph_names_a_header_that_disagrees_with_its_pixels(coco128, monkeypatch):
    """The GPU graph plans boxes from the headers while the GPU decodes the pixels: a header
    planted to give a larger shape than the pixels is named and set aside, not trained on."""
    from dst_dali.pipelines import stitch

    def larger(encoded):
        h, w, c = (stitch.fn.peek_image_shape(encoded)[i] for i in range(3))
        return stitch.fn.stack(h + 16, w + 16, c)
    monkeypatch.setattr(stitch, "header_shape", larger)
    loader = DSTLoaderOf(dict(images=coco128.images, annotations=coco128.annotations,
                              batch_size=2, device="gpu", output="torchvision", seed=0))
    with pytest.raises((ValueError, RuntimeError), match="has a header giving"):
        loader.next_batch("collage")
    assert loader.set_aside and all("has a header giving" in why
                                    for why in loader.set_aside.values())
