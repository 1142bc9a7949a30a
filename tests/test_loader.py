"""DSTLoader on the coco128 sample, against detectron2's own DatasetMapper and transforms."""
import os

import numpy as np
import pytest
import torch

from bench.oracle import nearest_indices
from dst_dali import DSTLoader, FeedbackController

MAX_SIZE = 1333


@pytest.fixture(scope="module")
def d2_dataset(coco128):
    """detectron2's own view of the sample: load_coco_json (contiguous ids) by image id."""
    from detectron2.data.datasets import load_coco_json
    dicts = load_coco_json(coco128.annotations, coco128.images,
                           dataset_name="dst_coco128_test")
    return {d["image_id"]: d for d in dicts}


def d2_mapped(d2_dataset, image_id, short_side, flip, image_format="BGR"):
    """detectron2's DatasetMapper output for one image with a given size and flip."""
    import copy

    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T
    mapper = DatasetMapper(is_train=True, augmentations=[
        T.ResizeShortestEdge((int(short_side), int(short_side)), MAX_SIZE, "choice"),
        T.RandomFlip(prob=1.0 if flip else 0.0)], image_format=image_format,
        use_instance_mask=True, instance_mask_format="polygon")
    return mapper(copy.deepcopy(d2_dataset[image_id]))


def make_loader(coco128, **kw):
    args = dict(batch_size=2, k=4, device="cpu", seed=0, aspect_ratio_grouping=False)
    args.update(kw)
    return DSTLoader(coco128.images, coco128.annotations, **args)


def test_regular_batches_equal_detectron2_mapper(coco128, d2_dataset):
    loader = make_loader(coco128, masks=True)
    diffs = []
    for _ in range(3):
        for d in loader.next_batch("regular"):
            t = d["dst_transform"]
            ref = d2_mapped(d2_dataset, d["image_id"], t["short_side"][0], t["flip"][0])
            assert d["image"].shape == ref["image"].shape  # same size: ResizeShortestEdge's rule
            assert (d["height"], d["width"]) == (ref["height"], ref["width"])
            diffs.append((d["image"].int() - ref["image"].int()).abs().float())
            got, want = d["instances"], ref["instances"]
            np.testing.assert_array_equal(got.gt_classes.numpy(), want.gt_classes.numpy())
            np.testing.assert_allclose(got.gt_boxes.tensor.numpy(), want.gt_boxes.tensor.numpy(),
                                       atol=1.0)
            assert len(got.gt_masks.polygons) == len(want.gt_masks.polygons)
            for pg, pw in zip(got.gt_masks.polygons, want.gt_masks.polygons):
                assert len(pg) == len(pw)
                for a, b in zip(pg, pw):
                    np.testing.assert_allclose(a, b, atol=1.0)
    # Pixels: our fused bilinear vs PIL's (detectron2 resizes uint8 images with PIL). COCO
    # images are upscaled here, where both are plain bilinear; they differ by rounding only.
    # The bound: mean absolute difference under 0.5 grey levels, and 99.9% of values within 2.
    d = torch.cat([x.reshape(-1) for x in diffs])
    assert d.mean() < 0.5, d.mean()
    assert torch.quantile(d[:1_000_000], 0.999) <= 2
    # Without masks (DatasetMapper's use_instance_mask=False, a Faster R-CNN) the polygons are
    # not fed to DALI at all: the same batches, without gt_masks.
    with_masks, without = make_loader(coco128, masks=True), make_loader(coco128)
    for kind in ("regular", "collage", "collage"):
        for a, b in zip(with_masks.next_batch(kind), without.next_batch(kind), strict=True):
            assert not b["instances"].has("gt_masks")
            assert torch.equal(a["image"], b["image"])
            assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
            assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)


def test_collage_cells_are_half_scale_regular_images(coco128, d2_dataset):
    """Each cell is detectron2's regular image of its component at 1/2 scale, shrunk (aspect
    kept) by at most 15% to fit a canvas the size of a regular image; padding is the pixel
    mean (zero after detectron2's normalization); components share an orientation."""
    from detectron2.config import get_cfg
    from detectron2.data.detection_utils import read_image
    loader = make_loader(coco128)
    n = 2
    pixel_mean = np.round(get_cfg().MODEL.PIXEL_MEAN)  # BGR, as detectron2's default
    for _ in range(3):
        for d in loader.next_batch("collage"):
            t = d["dst_transform"]
            img, inst = d["image"].numpy(), d["instances"]
            box_component = np.asarray(t["box_component"])
            total = 0
            assert len(d["component_ids"]) == 4 and len(set(d["component_ids"])) == 4
            covered = np.zeros(img.shape[1:], bool)
            orientations = set()
            for j, image_id in enumerate(d["component_ids"]):
                ref = d2_mapped(d2_dataset, image_id, t["short_side"][j], t["flip"][j])
                rh, rw = ref["image"].shape[1:]
                orientations.add(rw > rh)
                y0, x0, h, w = t["placement"][j]
                scale = min(h / (rh / n), w / (rw / n))  # of the regular image's half scale
                assert 0.85 <= scale and h <= rh / n + 1 and w <= rw / n + 1
                assert abs(h - scale * rh / n) <= 1 and abs(w - scale * rw / n) <= 1
                covered[y0:y0 + h, x0:x0 + w] = True
                cell = img[:, y0:y0 + h, x0:x0 + w].astype(np.int16)
                # exactly the nearest-neighbour half-scale of the image, as detectron2 reads it
                src = read_image(os.path.join(coco128.images, d2_dataset[image_id]["file_name"]),
                                 "BGR").transpose(2, 0, 1)
                half = src[:, nearest_indices(h, src.shape[1])][:, :, nearest_indices(w, src.shape[2])]
                np.testing.assert_array_equal(cell, half[:, :, ::-1] if t["flip"][j] else half)
                # and the same picture as detectron2's regular image at half scale (sampled from
                # its bilinear upscale, so equal only up to resampling): a misplaced or
                # unflipped cell would not correlate
                reg = ref["image"].numpy()[:, nearest_indices(h, rh)][:, :, nearest_indices(w, rw)]
                assert np.corrcoef(cell.ravel(), reg.ravel())[0, 1] > 0.8
                mine = box_component == j
                assert mine.sum() == len(ref["instances"])        # every box accounted for
                total += mine.sum()
                b = inst.gt_boxes.tensor.numpy()[mine]
                assert np.all(b >= [x0, y0, x0, y0]) and np.all(b <= [x0 + w, y0 + h] * 2)
                np.testing.assert_allclose(b, ref["instances"].gt_boxes.tensor.numpy()
                                           * np.array([w / rw, h / rh] * 2) + [x0, y0, x0, y0],
                                           atol=1.0)
            assert total == len(inst)
            assert len(orientations) == 1
            np.testing.assert_array_equal(img[:, ~covered].T, np.broadcast_to(
                pixel_mean, ((~covered).sum(), 3)))


def ids_of(batch):
    return [d.get("component_ids", [d["image_id"]]) for d in batch]


def test_forced_sequence_epochs_and_shards(coco128):
    """Both streams on 2 ranks, through DALI: each rank reads its share of an epoch once, ranks
    are disjoint, and a batch is exactly its sampler's group."""
    from dst_dali.stream.sampler import GroupSampler
    pattern = ["regular", "collage", "collage", "regular"]
    loaders = [make_loader(coco128, shard_id=s, num_shards=2) for s in range(2)]
    read = {s: {"regular": [], "collage": []} for s in range(2)}
    for s, loader in enumerate(loaders):
        for it in range(2 * len(loader)):
            kind = pattern[it % 4]
            batch = loader.next_batch(kind)
            assert loader.last_kind == kind and all(d["dst_kind"] == kind for d in batch)
            read[s][kind] += [i for comps in ids_of(batch) for i in comps]
    assert loaders[0].shard_size + loaders[1].shard_size == 126  # usable images of coco128
    index = loaders[0].index
    for kind, k in (("regular", 1), ("collage", 4)):
        epoch = {}
        for s in range(2):
            sampler = GroupSampler(index.landscape if kind == "collage" else None, 126, 2 * k,
                                   seed=0, stream=STREAM[kind], shard_id=s, num_shards=2)
            expected = [index.image_ids[p] for _ in range(len(read[s][kind]) // (2 * k))
                        for p in next(sampler)]
            assert read[s][kind] == expected
            epoch[s] = set(read[s][kind][:54])  # within the first epoch's share of 63
            assert len(epoch[s]) == 54
        assert not epoch[0] & epoch[1]
    # the two streams do not walk the data in step (separate permutations)
    assert read[0]["regular"][:8] != read[0]["collage"][:8]


STREAM = {"regular": 0, "collage": 1}


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("k, batch_size, shards", [(4, 2, 1), (4, 2, 2), (1, 2, 3), (9, 1, 2)])
def test_groups_over_many_epochs(coco128, k, batch_size, shards, grouped):
    """25 epochs of the sampler on coco128's orientations: no group repeats an image or mixes
    orientations, ranks never share an image within an epoch, and every image is read once an
    epoch (a group straddling two epochs may move one read across the boundary)."""
    from dst_dali.data.coco_index import load_coco_index
    from dst_dali.stream.sampler import GroupSampler
    index = load_coco_index(coco128.images, coco128.annotations)
    n, size, epochs = len(index), k * batch_size, 25
    landscape = index.landscape
    samplers = [GroupSampler(landscape if grouped else None, n, size, seed=3, shard_id=s,
                             num_shards=shards) for s in range(shards)]
    counts = np.zeros(n, int)
    per_rank_epoch = []
    for sampler in samplers:
        share = n * (sampler.shard_id + 1) // shards - n * sampler.shard_id // shards
        groups = [next(sampler) for _ in range(epochs * share // size)]
        for g in groups:
            assert len(g) == size and len(set(g)) == size
            if grouped:
                assert len({bool(landscape[p]) for p in g}) == 1
            counts[g] += 1
        flat = [p for g in groups for p in g]
        per_rank_epoch.append([set(flat[e * share:(e + 1) * share]) for e in range(epochs)])
    # every image read about once an epoch: within the reads a carried group moves
    assert counts.min() >= epochs - 2 and counts.max() <= epochs + 1, (counts.min(), counts.max())
    for e in range(1, epochs - 1):  # ranks' shares of an epoch are (all but carried) disjoint
        for a in range(shards):
            for b in range(a + 1, shards):
                assert len(per_rank_epoch[a][e] & per_rank_epoch[b][e]) <= 2 * size


def test_collages_never_repeat_an_image_over_epochs(tmp_path):
    """A dataset whose orientations do not divide into groups (7 portrait, 13 landscape; k * B
    = 4): 25 epochs of collage batches through DALI, none repeats an image or mixes them."""
    images, ann = mixed_orientation_dataset(tmp_path, portrait=7, landscape=13)
    loader = DSTLoader(images, ann, batch_size=1, k=4, min_size=(32,), max_size=64,
                       flip_prob=0.0, device="cpu", aspect_ratio_grouping=False)
    seen = []
    for _ in range(25 * 20 // 4):
        (d,) = loader.next_batch("collage")
        ids = d["component_ids"]
        assert len(set(ids)) == 4
        assert len({i > 100 for i in ids}) == 1  # ids over 100 are the landscape images
        seen += ids
    counts = np.bincount(seen)
    assert set(np.unique(counts[counts > 0]).tolist()) <= {24, 25, 26}


def mixed_orientation_dataset(folder, portrait, landscape):
    import json

    from PIL import Image
    os.makedirs(folder / "images")
    images, anns = [], []
    sizes = [(i + 1, (40, 24)) for i in range(portrait)] + \
            [(101 + i, (24, 40)) for i in range(landscape)]
    for image_id, (h, w) in sizes:
        Image.new("RGB", (w, h), (image_id, 0, 0)).save(folder / "images" / f"{image_id}.jpg")
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        anns.append({"id": image_id, "image_id": image_id, "category_id": 1,
                     "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0})
    with open(folder / "ann.json", "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "thing"}]}, f)
    return str(folder / "images"), str(folder / "ann.json")


def batches_equal(a, b):
    assert ids_of(a) == ids_of(b)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"])
        assert torch.equal(x["instances"].gt_boxes.tensor, y["instances"].gt_boxes.tensor)


def test_same_seed_same_batches_and_resume(coco128):
    a = make_loader(coco128, aspect_ratio_grouping=True, controller=FeedbackController(0.1))
    b = make_loader(coco128, aspect_ratio_grouping=True, controller=FeedbackController(0.1))
    for kind in ["regular", "collage", "regular"]:
        batches_equal(a.next_batch(kind), b.next_batch(kind))
    a.controller.observe(0.05, 1.0)  # r = 0.05 <= tau: the next batch is a collage
    state = a.state_dict()
    after = [a.next_batch()] + [a.next_batch(k) for k in ["regular", "collage", "regular"]]
    assert after[0][0]["dst_kind"] == "collage"
    resumed = make_loader(coco128, aspect_ratio_grouping=True, controller=FeedbackController(0.1))
    resumed.load_state_dict(state)
    assert resumed.iteration == 3 and resumed.controller.wants_collage()
    again = [resumed.next_batch()] + [resumed.next_batch(k)
                                      for k in ["regular", "collage", "regular"]]
    for x, y in zip(after, again):
        batches_equal(x, y)
    with pytest.raises(ValueError, match=r"other settings .*'seed': \(0, 1\)"):
        make_loader(coco128, aspect_ratio_grouping=True, seed=1).load_state_dict(state)
    other = make_loader(coco128, seed=1)
    assert ids_of(other.next_batch("regular")) != ids_of(make_loader(coco128).next_batch("regular"))


def test_a_drawn_seed_is_logged_kept_and_resumed(coco128, caplog):
    """seed=None (detectron2's SEED -1) draws a seed, logs it and keeps it in the state; a loader
    that drew another resumes with the saved one and gives the same batches, while a loader
    given a seed keeps it and refuses the state."""
    import logging
    kinds = ["regular", "collage", "regular", "collage", "regular"]
    with caplog.at_level(logging.INFO, logger="dst_dali.loader"):
        a = make_loader(coco128, seed=None)
    seed = a.state_dict()["config"]["seed"]
    assert a.seed_drawn and f"drew seed {seed} " in caplog.text
    b = make_loader(coco128, seed=None)
    assert b.settings.seed != seed  # two draws from 2**31
    given = make_loader(coco128, seed=seed)
    for kind in kinds[:2]:
        batches_equal(a.next_batch(kind), given.next_batch(kind))
    state = a.state_dict()
    after = [a.next_batch(kind) for kind in kinds[2:]]
    b.load_state_dict(state)
    assert b.settings.seed == seed
    for kind, batch in zip(kinds[2:], after):
        batches_equal(b.next_batch(kind), batch)
    with pytest.raises(ValueError, match=rf"other settings .*'seed': \({seed}, 7\)"):
        make_loader(coco128, seed=7).load_state_dict(state)
    with pytest.raises(ValueError, match=r"seed=-1: must be an integer >= 0, or None"):
        make_loader(coco128, seed=-1)
    with pytest.raises(ValueError, match=r"seed=None with num_shards=2: .*torch.distributed"):
        make_loader(coco128, seed=None, shard_id=0, num_shards=2)


def test_batches_do_not_depend_on_the_pipelines(coco128):
    """Pipelines of a kind make its batches in turn, each prefetching ahead: the stream is the
    one a single pipeline makes, for both kinds interleaved, and a state saved with one number
    of pipelines resumes with another."""
    kinds = ["regular", "collage", "collage", "regular", "regular", "regular", "collage"]
    one = make_loader(coco128, aspect_ratio_grouping=True, pipelines=1)
    expected = [one.next_batch(kind) for kind in kinds * 2]
    for pipelines in (2, 3):
        many = make_loader(coco128, aspect_ratio_grouping=True, pipelines=pipelines)
        assert len(many.streams["collage"].pipes) == pipelines
        for kind, batch in zip(kinds, expected):
            batches_equal(many.next_batch(kind), batch)
        resumed = make_loader(coco128, aspect_ratio_grouping=True, pipelines=5 - pipelines)
        resumed.load_state_dict(many.state_dict())
        for kind, batch in zip(kinds, expected[len(kinds):]):
            batches_equal(resumed.next_batch(kind), batch)


def same_size_dataset(folder, n=16, hw=(48, 64)):
    """n random JPEGs of one size, a box each: every batch of a kind has the same shape, so a
    loader that recycled its output buffers would write the next batch over a held one."""
    import json

    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(folder / "images")
    images, anns = [], []
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(
            folder / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": hw[0], "width": hw[1]})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 16],
                     "area": 320, "iscrowd": 0})
    with open(folder / "ann.json", "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "thing"}]}, f)
    return str(folder / "images"), str(folder / "ann.json")


def test_batches_stay_valid_after_later_batches(tmp_path):
    """Images are views of DALI's output buffers (no copy): a batch a trainer still holds must
    not change while later batches of both kinds are made with prefetching."""
    loader = DSTLoader(*same_size_dataset(tmp_path), batch_size=2, k=4, min_size=(48,),
                       flip_prob=0.0, device="cpu", aspect_ratio_grouping=False, prefetch=2)
    held = [loader.next_batch(kind) for kind in ["regular", "collage", "collage", "regular"]]
    snapshot = [[d["image"].clone() for d in batch] for batch in held]
    for kind in ["collage", "regular"] * 6:
        loader.next_batch(kind)
    pointers = {d["image"].data_ptr() for batch in held for d in batch}
    assert len(pointers) == 8  # no two held images share a buffer
    for batch, images in zip(held, snapshot):
        for d, image in zip(batch, images):
            assert torch.equal(d["image"], image)


def test_aspect_ratio_grouping(coco128):
    loader = make_loader(coco128, aspect_ratio_grouping=True)
    for kind in ["regular", "collage"] * 3:
        batch = loader.next_batch(kind)
        assert len(batch) == 2
        shapes = [d["image"].shape for d in batch]
        assert len({s[2] > s[1] for s in shapes}) == 1  # one orientation a batch


def test_controller_decides_the_next_kind(coco128):
    ctrl = FeedbackController(tau=0.1)
    loader = make_loader(coco128, controller=ctrl)
    kinds = []
    for r in [None, 0.5, 0.05, 0.1, 0.2]:
        if r is not None:
            ctrl.observe(r, 1.0)
        loader.next_batch()
        kinds.append(loader.last_kind)
    assert kinds == ["regular", "regular", "collage", "collage", "regular"]
    assert len(loader) == 63  # ceil(126 / 2)


@pytest.mark.slow
def test_torchvision_fasterrcnn_trains_on_a_batch(coco128):
    from .torchvision_models import torchvision_faster_rcnn
    loader = make_loader(coco128, output="torchvision", masks=True)
    images, targets = loader.next_batch("collage")
    assert images[0].dtype == torch.float32 and 0 <= images[0].min() and images[0].max() <= 1
    assert targets[0]["labels"].min() >= 1  # torchvision: 0 is background
    assert targets[0]["masks"].shape[1:] == images[0].shape[1:]
    model = torchvision_faster_rcnn(81, min_size=320, max_size=512)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    losses = model(images, [{k: v for k, v in t.items() if k in ("boxes", "labels")}
                            for t in targets])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness"}


def one_image_at_a_time(sampler, count):
    """The grouping rule applied to the sampler's reading order an image at a time: each key
    fills its own group; an image already in its key's open group waits and comes first into
    the key's next group."""
    from collections import deque
    keys = sampler._keys
    buckets, waiting, groups, epoch = {}, {}, [], 0
    while len(groups) < count:
        for pos in sampler._shard_order(epoch).tolist():
            key = int(keys[pos])
            bucket, queue = buckets.setdefault(key, []), waiting.setdefault(key, deque())
            if pos in bucket:
                queue.append(pos)
                continue
            bucket.append(pos)
            while len(bucket) == sampler.group_size:
                groups.append(bucket)
                bucket = buckets[key] = []
                for _ in range(len(queue)):
                    p = queue.popleft()
                    (queue if p in bucket else bucket).append(p)
                    if len(bucket) == sampler.group_size:
                        break
        epoch += 1
    return groups[:count]


@pytest.mark.slow
def test_sampler_follows_the_one_by_one_rule_and_seeks_anywhere():
    """Each epoch's groups made key by key with numpy equal the rule applied an image at a
    time (the group straddling two epochs included), over many sizes, shards and orientation
    mixes; seek(k) gives what k groups of replay leave, across tens of epochs."""
    from dst_dali.stream.sampler import GroupSampler
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(200):
        n, size, ranks = int(rng.integers(8, 150)), int(rng.integers(1, 12)), \
            int(rng.integers(1, 4))
        keys = rng.random(n) < rng.random()
        try:
            sampler = GroupSampler(keys, n, size, seed=trial, stream=trial % 2,
                                   shard_id=trial % ranks, num_shards=ranks)
        except ValueError:
            continue
        count = int(rng.integers(1, 400))
        groups = [next(sampler) for _ in range(count)]
        assert groups == one_image_at_a_time(sampler, count)
        for k in rng.integers(0, count, 3).tolist():
            sampler.seek(k)
            assert [next(sampler) for _ in range(count - k)] == groups[k:]
        checked += 1
    assert checked > 100


def test_sampler_seek_far_makes_one_epoch():
    """A position a billion groups on is reached by counting: only the epoch holding it is made,
    and the few before it only read for the partial groups carried in, and it agrees with a
    seek a few groups before it plus replay."""
    from dst_dali.stream.sampler import GroupSampler
    keys = np.random.default_rng(1).random(126) < 0.7
    sampler = GroupSampler(keys, 126, 8, seed=5, stream=1, shard_id=1, num_shards=2)
    made, read = [], []
    epoch, key_order = sampler._epoch, sampler._key_order
    sampler._epoch = lambda e, carried: made.append(e) or epoch(e, carried)
    sampler._key_order = lambda e, key: read.append(e) or key_order(e, key)
    far = 10 ** 9
    sampler.seek(far)
    assert len(made) == 1 and made[0] - min(read) <= sampler.group_size
    there = [next(sampler) for _ in range(3)]
    sampler.seek(far - 5)
    assert [next(sampler) for _ in range(8)][5:] == there


def test_every_random_stream_is_its_own():
    """The deal of each stream, the draws and the replacements come from generators of their
    own: no two give the same numbers, in particular not seed s's collage deal and seed s + 1's
    regular deal, nor a deal and a draw at the same numbers."""
    from dst_dali.stream.rng import DEAL, DRAW, REPLACE, generator
    from dst_dali.stream.sampler import GroupSampler
    firsts = {}
    for seed in (0, 1):
        for purpose in (DEAL, DRAW, REPLACE):
            for a in (0, 1):
                for b in (0, 1):
                    firsts[(seed, purpose, a, b)] = tuple(
                        generator(seed, purpose, a, b, 1).integers(0, 2 ** 62, 4).tolist())
    assert len(set(firsts.values())) == len(firsts)
    keys = np.zeros(200, np.int64)
    collage_0 = GroupSampler(keys, 200, 4, seed=0, stream=1)._shard_order(0)
    regular_1 = GroupSampler(keys, 200, 4, seed=1, stream=0)._shard_order(0)
    assert not np.array_equal(collage_0, regular_1)
