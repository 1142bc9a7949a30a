"""Bad input to DSTLoader: a clear error naming the file or argument, or a counted skip."""
import json
import logging
import os
import shutil

import pytest
from PIL import Image

from dst_dali import DSTLoader


@pytest.fixture
def make_dataset(coco128, tmp_path):
    """A copy of the first n coco128 images with their annotations, after `mutate`."""
    with open(coco128.annotations) as f:
        coco = json.load(f)

    def make(n=8, mutate=None):
        os.makedirs(tmp_path / "images", exist_ok=True)
        images = [dict(i) for i in coco["images"][:n]]
        ids = {i["id"] for i in images}
        anns = [dict(a) for a in coco["annotations"] if a["image_id"] in ids]
        for i in images:
            shutil.copy(os.path.join(coco128.images, i["file_name"]), tmp_path / "images")
        data = dict(coco, images=images, annotations=anns)
        if mutate:
            mutate(data)
        with open(tmp_path / "ann.json", "w") as f:
            json.dump(data, f)
        return str(tmp_path / "images"), str(tmp_path / "ann.json")
    make.dir = tmp_path
    return make


def loader(paths, **kw):
    args = dict(batch_size=1, k=4, device="cpu", aspect_ratio_grouping=False)
    args.update(kw)
    return DSTLoader(*paths, **args)


def test_missing_image_file(make_dataset):
    paths = make_dataset()
    name = json.load(open(paths[1]))["images"][2]["file_name"]
    os.remove(os.path.join(paths[0], name))
    with pytest.raises(ValueError, match=f"ann.json: image .* names .*{name}, which does not exist"):
        loader(paths)


def test_missing_paths(make_dataset):
    images, ann = make_dataset()
    with pytest.raises(FileNotFoundError, match="images='/nonexistent'"):
        loader(("/nonexistent", ann))
    with pytest.raises(FileNotFoundError, match="annotations='/nonexistent.json'"):
        loader((images, "/nonexistent.json"))


def test_truncated_jpeg_names_the_file(make_dataset):
    def truncate(data):
        path = make_dataset.dir / "images" / data["images"][0]["file_name"]
        blob = path.read_bytes()
        path.write_bytes(blob[:len(blob) // 3])
    paths = make_dataset(mutate=truncate)
    name = json.load(open(paths[1]))["images"][0]["file_name"]
    lo = loader(paths)
    with pytest.raises(RuntimeError, match=f"the regular pipeline stopped: .*{name}"):
        for _ in range(8):  # the shard is 8 images: the bad one comes within an epoch
            lo.next_batch("regular")


def test_grayscale_cmyk_and_png_images_decode_to_three_channels(make_dataset):
    changed = {}

    def convert(data):
        for image, mode in zip(data["images"][:3], ["L", "CMYK", "PNG"]):
            path = make_dataset.dir / "images" / image["file_name"]
            im = Image.open(path)
            if mode == "PNG":
                os.remove(path)
                image["file_name"] = image["file_name"].replace(".jpg", ".png")
                im.save(make_dataset.dir / "images" / image["file_name"])
            else:
                im.convert(mode).save(path)
            changed[image["id"]] = mode
    lo = loader(make_dataset(mutate=convert))
    seen = set()
    for _ in range(8):
        (d,) = lo.next_batch("regular")
        assert d["image"].shape[0] == 3 and d["image"].dtype.is_floating_point is False
        seen.add(d["image_id"])
    assert set(changed) <= seen


def test_degenerate_boxes_are_skipped_and_counted(make_dataset, caplog):
    def degenerate(data):
        data["annotations"][0]["bbox"][2] = 0.0      # zero width
        data["annotations"][1]["bbox"][3] = -5.0     # negative height
    paths = make_dataset(mutate=degenerate)
    with caplog.at_level(logging.INFO, logger="dst_dali.dataset"):
        lo = loader(paths)
    assert lo.index.skipped["degenerate_boxes"] == 2
    assert "skipping 2 degenerate boxes" in caplog.text
    data = json.load(open(paths[1]))
    expected = {}
    for a in data["annotations"]:
        if not a.get("iscrowd") and a["bbox"][2] >= 0.1 and a["bbox"][3] >= 0.1:
            expected[a["image_id"]] = expected.get(a["image_id"], 0) + 1
    for _ in range(8):
        (d,) = lo.next_batch("regular")
        assert len(d["instances"]) == expected[d["image_id"]]


def test_box_outside_the_image(make_dataset):
    def outside(data):
        image = data["images"][0]
        ann = next(a for a in data["annotations"] if a["image_id"] == image["id"])
        ann["bbox"] = [image["width"] - 10, 0, 50, 10]
    with pytest.raises(ValueError, match=r"annotation \d+ of image \d+ \(.*\.jpg\): bbox .* "
                                         r"outside the \d+x\d+ image"):
        loader(make_dataset(mutate=outside))


def test_unknown_category(make_dataset):
    def unknown(data):
        data["annotations"][3]["category_id"] = 999
    with pytest.raises(ValueError, match="unknown category_id 999"):
        loader(make_dataset(mutate=unknown))


def test_empty_annotation_file(make_dataset, tmp_path):
    images, _ = make_dataset()
    for content in ["{}", json.dumps({"images": [], "annotations": [], "categories": []}),
                    "not json"]:
        path = tmp_path / "empty.json"
        path.write_text(content)
        with pytest.raises(ValueError, match="empty.json: (no images|not valid JSON)"):
            loader((images, str(path)))


def test_batch_size_larger_than_the_shard(make_dataset):
    paths = make_dataset(n=8)
    with pytest.raises(ValueError, match=r"batch_size=3: a collage batch needs k\*batch_size=12"):
        loader(paths, batch_size=3)
    with pytest.raises(ValueError, match=r"batch_size=2: .* shard 1 of 2 holds 4"):
        loader(paths, batch_size=2, shard_id=1, num_shards=2)


@pytest.mark.parametrize("kw, message", [
    (dict(k=3), r"k=3"), (dict(output="mmdet"), r"output='mmdet'"),
    (dict(flip_prob=1.5), r"flip_prob=1.5"), (dict(shard_id=2, num_shards=2), r"shard_id=2"),
    (dict(batch_size=0), r"batch_size=0"), (dict(image_format="YUV"), r"image_format='YUV'"),
    (dict(device="tpu"), r"device='tpu'"), (dict(min_size=(0,)), r"min_size=\(0,\)")])
def test_bad_arguments(make_dataset, kw, message):
    with pytest.raises(ValueError, match=message):
        loader(make_dataset(), **kw)


def test_unknown_kind(make_dataset):
    with pytest.raises(ValueError, match="kind='mosaic'"):
        loader(make_dataset()).next_batch("mosaic")
