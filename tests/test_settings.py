"""LoaderSettings: the loader's options as one frozen object, each field checked once by its
rule, with the argument's name and value in the message; DSTLoader takes the same fields as
keyword arguments, or a settings object, and resolves every default once."""
import dataclasses

import numpy as np
import pytest

from dst_dali.settings import RULES, LoaderSettings


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, r"batch_size=0: must be a positive integer"),
    ("batch_size", True, r"batch_size=True: must be a positive integer"),
    ("k", 3, r"k=3: the number of collage components must be a square"),
    ("flip_prob", 1.5, r"flip_prob=1.5: must be in \[0, 1\]"),
    ("device", "tpu", r"device='tpu': must be one of"),
    ("seed", -1, r"seed=-1: must be an integer >= 0, or None to draw one"),
    ("output", "yolo", r"output='yolo': must be one of \('detectron2', 'torchvision', "
                       r"'ultralytics'\)"),
    ("imgsz", 0, r"imgsz=0: must be a positive integer"),
    ("record_dir", 3, r"record_dir=3: must be a folder path"),
    ("labels", "names", r"labels='names': must be one of"),
    ("bad_images", "ignore", r"bad_images='ignore': must be one of \('stop', 'skip'\)"),
    ("num_threads", 0, r"num_threads=0: must be a positive integer"),
    ("pipelines", False, r"pipelines=False: must be a positive integer"),
    ("max_pixels", 0, r"max_pixels=0: must be a positive integer"),
    ("signal", "mask", r"signal='mask': must be one of"),
    ("decision", "vote", r"decision='vote': must be one of"),
    ("masks", "yes", r"masks='yes': must be True or False"),
    ("min_size", 800, r"min_size=800, max_size=1333: min_size is a sequence of integers"),
    ("min_size", (800, 0), r"min_size=\(800, 0\), max_size=1333"),
    ("pad_value", (1, 2), r"pad_value=\(1, 2\): give 1 or 3 numbers"),
])
def test_each_bad_value_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoaderSettings(**{field: value})


def test_every_field_with_a_rule_exists_and_the_defaults_pass():
    fields = {f.name for f in dataclasses.fields(LoaderSettings)}
    assert set(RULES) <= fields
    s = LoaderSettings()
    assert s.min_size == (640, 672, 704, 736, 768, 800) and s.format == "BGR"
    assert LoaderSettings(output="torchvision").padding == (123.675, 116.28, 103.53)
    assert LoaderSettings().padding == (103.53, 116.28, 123.675)  # BGR: the mean reversed


def test_frozen_and_replaced_copies_are_checked_again():
    s = LoaderSettings(batch_size=4, min_size=[800], seed=np.int64(3))
    assert s.min_size == (800,)  # plain and hashable, whatever sequence was given
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 8
    assert s.replace(batch_size=8).batch_size == 8 and s.batch_size == 4
    with pytest.raises(ValueError, match="batch_size=-1"):
        s.replace(batch_size=-1)


def test_torchvision_takes_rgb():
    with pytest.raises(ValueError, match="output='torchvision' takes RGB images"):
        LoaderSettings(output="torchvision", image_format="BGR")


def test_ultralytics_output_takes_imgsz_rgb_and_no_masks():
    s = LoaderSettings(output="ultralytics", imgsz=640)
    assert s.format == "RGB" and s.padding == (114.0, 114.0, 114.0)  # YOLO's grey
    for kwargs, message in [
        (dict(output="ultralytics"), r"output='ultralytics', imgsz=None: imgsz is the side"),
        (dict(imgsz=640), r"output='detectron2', imgsz=640: imgsz is the side"),
        (dict(output="ultralytics", imgsz=640, image_format="BGR"), r"takes RGB images"),
        (dict(output="ultralytics", imgsz=640, masks=True), r"masks=True is not offered"),
    ]:
        with pytest.raises(ValueError, match=message):
            LoaderSettings(**kwargs)


def test_a_rule_that_stops_checking_is_caught(monkeypatch):
    """The planted fault: batch_size's rule passing everything lets 0 through."""
    import dst_dali.settings as settings
    monkeypatch.setitem(settings.RULES, "batch_size", lambda v: None)
    assert LoaderSettings(batch_size=0).batch_size == 0
    monkeypatch.undo()
    with pytest.raises(ValueError):
        LoaderSettings(batch_size=0)


def test_the_loader_takes_keywords_or_settings_and_resolves_defaults(coco128):
    from dst_dali import DSTLoader
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['batchsize'\]"):
        DSTLoader(coco128.images, coco128.annotations, batchsize=2)
    with pytest.raises(ValueError, match="batch_size=0: must be a positive integer"):
        DSTLoader(coco128.images, coco128.annotations, batch_size=0)
    given = LoaderSettings(batch_size=1, k=4, min_size=(128,), max_size=192, device="cpu",
                           output="torchvision")
    with DSTLoader(coco128.images, coco128.annotations, settings=given,
                   num_threads=1) as loader:
        s = loader.settings
        assert (s.batch_size, s.num_threads, s.image_format) == (1, 1, "RGB")
        assert (s.shard_id, s.num_shards, s.seed, s.pipelines) == (0, 1, 0, 1)
        assert s.pad_value == (123.675, 116.28, 103.53) and s.aspect_ratio_grouping is False
        assert loader.batch_size == 1 and loader.k == 4 and loader.device == "cpu"
        images, targets = loader.next_batch("collage")
        assert sorted(images[0].shape[1:]) <= [128, 192]  # one regular image's size at most
