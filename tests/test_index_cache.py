"""The dataset index: its typed (streaming) build against the entry-by-entry one and against
detectron2's own COCO reader, and its cache (built once, reused, never stale, rebuilt when
torn, one build when processes race)."""
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dst_dali.data import coco_index, index_cache
from dst_dali.data.coco_index import build_coco_index, load_coco_index
from dst_dali.data.index import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same_index(a, b):
    """Array for array, and the same meaning of each position."""
    x, y = a.arrays(), b.arrays()
    assert sorted(x) == sorted(y)
    for name in x:
        assert x[name].dtype == y[name].dtype, name
        assert np.array_equal(x[name], y[name]), name
    assert list(a.file_paths) == list(b.file_paths)
    assert (a.skipped, a.rle_annotations, a.category_names) == \
        (b.skipped, b.rle_annotations, b.category_names)


@pytest.fixture
def coco_copy(coco128, tmp_path):
    """coco128's annotation file, copied where a test may change it."""
    path = tmp_path / "instances.json"
    shutil.copy(coco128.annotations, path)
    return coco128.images, str(path)


# -- the build -------------------------------------------------------------------------------
def test_typed_build_equals_the_entry_by_entry_build(coco128):
    typed = build_coco_index(coco128.images, coco128.annotations, progress=False)
    loose = build_coco_index(coco128.images, coco128.annotations, force_loose=True,
                             progress=False)
    assert_same_index(typed, loose)
    assert len(typed) == 126 and typed.skipped["crowd_annotations"] > 0


def test_the_index_holds_what_detectron2_reads(coco128):
    """Each image's boxes (float64 sums, then float32), labels and polygons as detectron2's
    load_coco_json gives them, crowds and empty images left out."""
    from detectron2.data.datasets import load_coco_json
    index = build_coco_index(coco128.images, coco128.annotations, progress=False)
    dicts = {d["image_id"]: d for d in load_coco_json(coco128.annotations, coco128.images,
                                                      "coco128_index_reference")}
    assert len(index) == sum(any(not a.get("iscrowd") for a in d["annotations"])
                             for d in dicts.values())
    for p, image_id in enumerate(index.image_ids):
        d = dicts[image_id]
        anns = [a for a in d["annotations"] if not a.get("iscrowd")]
        xywh = np.array([a["bbox"] for a in anns], np.float64)
        expected = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        assert np.array_equal(index.boxes[p], expected.astype(np.float32))
        assert index.labels[p].tolist() == [a["category_id"] for a in anns]
        assert index.file_paths[p] == d["file_name"]
        assert tuple(index.sizes[p]) == (d["height"], d["width"])
        polygons = [(b, poly) for b, a in enumerate(anns) for poly in a.get("segmentation", [])]
        assert len(index.polygons[p]) == len(polygons)
        for (box, first, last), (b, poly) in zip(index.polygons[p].tolist(), polygons):
            assert box == b
            assert np.array_equal(index.vertices[p][first:last].reshape(-1),
                                  np.asarray(poly, np.float32))


def _planted(data):
    """One of each entry fault the checks name, spread over the file."""
    anns, images = data["annotations"], data["images"]
    anns[0]["bbox"] = [1, 2, 3]
    anns[5]["category_id"] = 999
    anns[9]["image_id"] = 123456789
    anns[11]["image_id"] = str(anns[11]["image_id"])                  # "25" is not 25
    anns[13]["iscrowd"] = 2
    anns[17]["bbox"] = [-50, 0, 10, 10]
    anns[21]["bbox"] = ["a", 0, 1, 1]
    anns[25]["segmentation"] = [[1, 2, 3, 4, 5]]
    anns[29]["bbox"] = [0, 0, 0, 5]
    del images[3]["height"]
    images.append(dict(images[4]))
    images[6]["id"] = 1.5
    images[7]["file_name"] = "missing.jpg"


def _write(tmp_path, mutate, coco128, name="faults.json"):
    with open(coco128.annotations) as f:
        data = json.load(f)
    mutate(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_every_planted_fault_is_listed_by_both_builds(coco128, tmp_path):
    path = _write(tmp_path, _planted, coco128)
    with open(path) as f:
        data = json.load(f)
    found = {}
    for force_loose in (False, True):
        problems = []
        index = build_coco_index(coco128.images, path, problems=problems,
                                 force_loose=force_loose, progress=False)
        found[force_loose] = (problems, index)
    assert sorted(found[False][0]) == sorted(found[True][0])
    assert_same_index(found[False][1], found[True][1])
    text = "\n".join(found[False][0])
    for expected in ("is not 4 finite numbers", "unknown category_id 999",
                     "of image 123456789: no such image", "iscrowd 2 must be 0 or 1",
                     f"of image '{data['annotations'][11]['image_id']}': no such image",
                     "lies outside the", "images[3]: no height", "listed twice",
                     "its id is neither an integer nor a string", "missing.jpg, which does not"):
        assert expected in text, expected
    with open(coco128.annotations) as f:  # image 6's annotations lose their image with its id
        data = json.load(f)
    orphans = sum(a["image_id"] == data["images"][6]["id"] for a in data["annotations"])
    assert len(found[False][0]) == 11 + orphans
    with pytest.raises(DatasetError, match=f"{11 + orphans} problems"):
        build_coco_index(coco128.images, path, progress=False)


def test_a_fault_in_one_chunk_leaves_the_others_typed(coco128, tmp_path, monkeypatch):
    """A chunk with a problem is checked entry by entry, the rest by numpy: the same index."""
    from dst_dali.data import coco_json
    monkeypatch.setattr(coco_json, "CHUNK", 100)
    path = _write(tmp_path, lambda d: d["annotations"][450].update(category_id=999), coco128)
    problems = []
    index = build_coco_index(coco128.images, path, problems=problems, progress=False)
    assert len(problems) == 1 and "unknown category_id 999" in problems[0]
    reference = build_coco_index(coco128.images, path, problems=[], force_loose=True,
                                 progress=False)
    assert_same_index(index, reference)


def _odd_segmentations(data):
    """Segmentations the typed path must read as the entry-by-entry one does (no problems)."""
    anns = [a for a in data["annotations"] if not a.get("iscrowd")]
    anns[0]["segmentation"] = {"size": [10, 10], "counts": "abc"}     # RLE on a non-crowd
    anns[1]["segmentation"] = []
    anns[2]["segmentation"] = None
    anns[3]["segmentation"] = "nope"
    anns[4]["segmentation"] = [[1, 2, 3, 4, 5, 6], []]                # an empty polygon
    anns[5]["segmentation"] = [[1, 2, 3, 4, 5, 6], ["a", 1, 2, 3, 4, 5]]
    anns[6]["segmentation"] = [1, 2, 3, 4, 5, 6]                       # not nested
    anns[7]["segmentation"] = [[[1, 2, 3, 4, 5, 6]]]                   # nested once more
    anns[8]["segmentation"] = [[1, 2, 3, 4, 5, 6, 7]]                  # odd
    del anns[9]["segmentation"]


def test_odd_segmentations_read_alike(coco128, tmp_path, monkeypatch):
    from dst_dali.data import coco_json
    monkeypatch.setattr(coco_json, "CHUNK", 1)  # each odd one in a chunk of its own
    path = _write(tmp_path, _odd_segmentations, coco128)
    typed = build_coco_index(coco128.images, path, progress=False)
    assert_same_index(typed, build_coco_index(coco128.images, path, force_loose=True,
                                              progress=False))
    assert len(typed.rle_annotations) == 1 and typed.skipped["rle_segmentations"] == 2
    boxes_only = build_coco_index(coco128.images, path, progress=False, polygons=False)
    for name in ("boxes", "labels", "sizes", "boxes_offsets", "image_ids"):
        assert np.array_equal(boxes_only.arrays()[name], typed.arrays()[name]), name
    assert not boxes_only.polygons_read and len(boxes_only.vertices.values) == 0


def test_a_truncated_file_is_named(coco128, tmp_path):
    path = tmp_path / "cut.json"
    path.write_bytes(open(coco128.annotations, "rb").read()[:100_000])
    with pytest.raises(DatasetError, match="cut.json: not valid JSON .*truncated.*written in "
                                           "full"):
        build_coco_index(coco128.images, str(path), progress=False)


# -- the cache -------------------------------------------------------------------------------
def test_built_once_then_mapped(coco_copy, tmp_path, caplog):
    images, path = coco_copy
    first = load_coco_index(images, path, cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.INFO, logger="dst_dali.dataset"):
        again = load_coco_index(images, path, cache_dir=str(tmp_path / "c"))
    assert "skipping 2 images without annotations" in caplog.text  # said at every start
    assert first.built and not again.built and first.cache == again.cache
    assert isinstance(again.boxes.values, np.memmap) and not again.boxes.values.flags.writeable
    assert_same_index(again, build_coco_index(images, path, progress=False))


def test_warm_start_trusts_the_index(coco_copy, tmp_path):
    """A file gone after the build is not looked for at start (it is a bad image when met)."""
    images, path = coco_copy
    copy = tmp_path / "images"
    shutil.copytree(images, copy)
    cold = load_coco_index(str(copy), path, cache_dir=str(tmp_path / "c"))
    os.remove(cold.file_paths[0])
    warm = load_coco_index(str(copy), path, cache_dir=str(tmp_path / "c"))
    assert not warm.built and len(warm) == len(cold)


def _rewrite(path, mutate, keep_mtime=False):
    st = os.stat(path)
    with open(path) as f:
        data = json.load(f)
    mutate(data)
    text = json.dumps(data)
    with open(path, "w") as f:
        f.write(text)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("change", ["file", "same_size_same_mtime", "images", "rules"])
def test_a_stale_cache_is_never_served(coco_copy, tmp_path, monkeypatch, change):
    images, path = coco_copy
    cache = str(tmp_path / "c")
    _rewrite(path, lambda d: None)  # json.dumps's own spacing, so that a rewrite keeps sizes
    before = load_coco_index(images, path, cache_dir=cache)
    if change == "file":
        _rewrite(path, lambda d: d["annotations"][0]["bbox"].__setitem__(0, 0.5))
    elif change == "same_size_same_mtime":  # within one tick of the file system's clock
        size = os.path.getsize(path)
        _rewrite(path, lambda d: d["annotations"].reverse(), keep_mtime=True)
        assert os.path.getsize(path) == size
    elif change == "images":
        images = str(tmp_path / "elsewhere")
        shutil.copytree(coco_copy[0], images)
    else:
        monkeypatch.setattr(coco_index, "RULES", dict(coco_index.RULES, version=-1))
    after = load_coco_index(images, path, cache_dir=cache)
    assert after.built and after.cache != before.cache
    assert_same_index(after, build_coco_index(images, path, progress=False))
    if change == "images":
        assert after.file_paths[0].startswith(images)
    # an earlier version of the file is removed; the same file under other rules is kept
    assert os.path.exists(before.cache) == (change in ("images", "rules"))


def test_the_same_file_with_and_without_polygons_keeps_both(coco_copy, tmp_path):
    """Two jobs of one node, one training masks: neither removes the other's index."""
    images, path = coco_copy
    cache = str(tmp_path / "c")
    boxes_only = load_coco_index(images, path, cache_dir=cache, polygons=False)
    with_polygons = load_coco_index(images, path, cache_dir=cache, polygons=True)
    assert with_polygons.built and os.path.exists(boxes_only.cache)
    again = load_coco_index(images, path, cache_dir=cache, polygons=False)
    assert not again.built and again.cache in (boxes_only.cache, with_polygons.cache)


@pytest.mark.parametrize("damage", ["truncated_array", "no_manifest", "garbage_manifest",
                                    "wrong_shape", "empty_array"])
def test_a_torn_cache_is_built_again(coco_copy, tmp_path, damage):
    images, path = coco_copy
    cache = str(tmp_path / "c")
    built = load_coco_index(images, path, cache_dir=cache).cache
    manifest = os.path.join(built, "manifest.json")
    if damage == "truncated_array":
        boxes = os.path.join(built, "boxes.npy")
        with open(boxes, "r+b") as f:
            f.truncate(os.path.getsize(boxes) // 2)
    elif damage == "no_manifest":
        os.remove(manifest)
    elif damage == "empty_array":  # a power loss between a write and its rename
        open(os.path.join(built, "labels.npy"), "w").close()
    elif damage == "garbage_manifest":
        with open(manifest, "w") as f:
            f.write("{not json")
    else:
        np.save(os.path.join(built, "labels.npy"), np.zeros(3, np.int32))
    again = load_coco_index(images, path, cache_dir=cache)
    assert again.built and again.cache == built
    assert_same_index(again, build_coco_index(images, path, progress=False))


def _corrupt(built, damage):
    """Changes the cache's bytes in place, keeping every array's dtype and shape."""
    def rewrite(name, change):
        file = os.path.join(built, f"{name}.npy")
        array = np.load(file)
        np.save(file, change(array))
    if damage == "boxes_scaled":
        rewrite("boxes", lambda a: a * 2)
    elif damage == "bytes_flipped":
        file = os.path.join(built, "boxes.npy")
        with open(file, "r+b") as f:
            f.seek(os.path.getsize(file) // 2)
            chunk = f.read(200)
            f.seek(-len(chunk), os.SEEK_CUR)
            f.write(bytes(b ^ 0xFF for b in chunk))
    elif damage == "labels_reversed":
        rewrite("labels", lambda a: a[::-1].copy())
    elif damage == "ids_rolled":
        rewrite("image_ids", lambda a: np.roll(a, 1))
    else:  # a category name edited in the manifest
        manifest = os.path.join(built, "manifest.json")
        with open(manifest) as f:
            data = json.load(f)
        data["meta"]["category_names"][0] = "not_a_person"
        with open(manifest, "w") as f:
            json.dump(data, f)


DAMAGES = ["boxes_scaled", "bytes_flipped", "labels_reversed", "ids_rolled", "category_name"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_cache_changed_in_place_is_never_served(coco_copy, tmp_path, damage, caplog):
    """Each array's digest (and the meta's) is in the manifest: a change that keeps dtypes
    and shapes is found at open, and the index is built again, with one warning naming the
    folder."""
    images, path = coco_copy
    cache = str(tmp_path / "c")
    built = load_coco_index(images, path, cache_dir=cache).cache
    _corrupt(built, damage)
    with caplog.at_level(logging.WARNING, logger="dst_dali.index_cache"):
        again = load_coco_index(images, path, cache_dir=cache)
    assert again.built and again.cache == built
    assert f"the dataset index cached in {built} is not what was published" in caplog.text
    assert_same_index(again, build_coco_index(images, path, progress=False))


def test_a_digest_check_that_is_skipped_is_caught(coco_copy, tmp_path, monkeypatch):
    """The planted fault: digests that always agree serve the scaled boxes."""
    images, path = coco_copy
    cache = str(tmp_path / "c")
    built = load_coco_index(images, path, cache_dir=cache).cache
    monkeypatch.setattr(index_cache, "file_digest", lambda path: "same")
    shutil.rmtree(built)
    built = load_coco_index(images, path, cache_dir=cache).cache  # published with "same"
    _corrupt(built, "boxes_scaled")
    served = load_coco_index(images, path, cache_dir=cache)
    assert not served.built
    fresh = build_coco_index(images, path, progress=False)
    assert not np.array_equal(served.arrays()["boxes"], fresh.arrays()["boxes"])


def test_entries_with_problems_are_not_cached(coco128, tmp_path):
    path = _write(tmp_path, _planted, coco128)
    problems = []
    index = load_coco_index(coco128.images, path, problems=problems,
                            cache_dir=str(tmp_path / "c"))
    assert problems and index.cache is None
    assert not os.path.exists(tmp_path / "c") or not any(
        n.startswith("index-") and not n.endswith(".lock") for n in os.listdir(tmp_path / "c"))


def test_a_cache_folder_that_cannot_be_written_costs_the_cache_not_the_run(
        coco_copy, tmp_path, caplog):
    images, path = coco_copy
    (tmp_path / "a_file").write_text("")  # a folder no one can make (root writes anywhere)
    with caplog.at_level(logging.WARNING):
        index = load_coco_index(images, path, cache_dir=str(tmp_path / "a_file" / "c"))
    assert index.cache is None and "DST_DALI_CACHE" in caplog.text


def test_an_empty_cached_array_in_a_read_only_cache_costs_the_cache_not_the_run(
        coco_copy, tmp_path, caplog):
    """A 0-byte array where the cache cannot be rebuilt (its folder read-only, a mount a
    job cannot write): the index is built and used uncached, with a warning."""
    images, path = coco_copy
    cache = tmp_path / "c"
    built = load_coco_index(images, path, cache_dir=str(cache)).cache
    open(os.path.join(built, "labels.npy"), "w").close()
    subprocess.run(["mount", "--bind", "-o", "ro", str(cache), str(cache)], check=False,
                   capture_output=True)
    read_only = subprocess.run(["touch", str(cache / "probe")], capture_output=True).returncode
    if not read_only:  # no bind mount here: a folder that cannot be a folder instead
        os.remove(cache / "probe")
        pytest.skip("a read-only mount needs root and mount here")
    try:
        with caplog.at_level(logging.WARNING):
            index = load_coco_index(images, path, cache_dir=str(cache))
    finally:
        subprocess.run(["umount", str(cache)], check=False)
    assert index.cache is None and "not cached" in caplog.text
    assert_same_index(index, build_coco_index(images, path, progress=False))


def _full_disk(tmp_path, monkeypatch):
    """A cache folder on a 64 KiB tmpfs where the test runs as root and may mount (a real
    ENOSPC), else ENOSPC injected into the cache's writes; says which."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        import errno

        def full(file, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(index_cache.np, "save", full)
    print(f"full disk: {'a 64 KiB tmpfs' if mounted else 'ENOSPC injected'}")
    return folder, mounted


def test_a_full_cache_disk_costs_the_cache_not_the_run(coco_copy, tmp_path, monkeypatch,
                                                       caplog):
    images, path = coco_copy
    folder, mounted = _full_disk(tmp_path, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING):
            index = load_coco_index(images, path, cache_dir=str(folder))
        assert index.cache is None and f"dataset index not cached in {folder}" in caplog.text
        if not mounted:
            assert "No space left on device" in caplog.text
        assert not [n for n in os.listdir(folder) if ".tmp-" in n]  # nothing half-written
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
    monkeypatch.undo()
    assert_same_index(index, build_coco_index(images, path, progress=False))


def test_the_cache_folder_expands_home_and_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("DST_DALI_CACHE", "~/x")
    assert index_cache.cache_root() == str(tmp_path / "home" / "x")
    assert index_cache.cache_root("$SCRATCH/y") == str(tmp_path / "scratch" / "y")
    monkeypatch.chdir(tmp_path)
    images = os.path.join(ROOT, "data", "coco128", "images")
    load_coco_index(images, os.path.join(ROOT, "data", "coco128", "instances.json"))
    assert not (tmp_path / "~").exists() and (tmp_path / "home" / "x").is_dir()


def test_the_default_location_is_node_local_and_movable(monkeypatch, tmp_path):
    monkeypatch.delenv("DST_DALI_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert index_cache.cache_root() == str(tmp_path / "xdg" / "dst_dali")
    monkeypatch.setenv("DST_DALI_CACHE", str(tmp_path / "moved"))
    assert index_cache.cache_root() == str(tmp_path / "moved")
    assert index_cache.cache_root(str(tmp_path / "arg")) == str(tmp_path / "arg")


RACER = """
import json, sys, time
from dst_dali.data import coco_index
build = coco_index.build_coco_index
def slow(*args, **kwargs):  # a build long enough for every racer to arrive during it
    time.sleep(1.5)
    return build(*args, **kwargs)
coco_index.build_coco_index = slow
open({ready!r} + "/" + sys.argv[1], "w").close()
import os
while len(os.listdir({ready!r})) < {n}:
    time.sleep(0.01)
index = coco_index.load_coco_index({images!r}, {path!r}, cache_dir={cache!r})
print(json.dumps({{"built": index.built, "cache": index.cache, "n": len(index)}}))
"""


@pytest.mark.slow
def test_processes_racing_build_once(coco_copy, tmp_path):
    images, path = coco_copy
    n, ready = 4, tmp_path / "ready"
    ready.mkdir()
    script = RACER.format(root=ROOT, ready=str(ready), n=n, images=images, path=path,
                          cache=str(tmp_path / "c"))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE,
                              text=True) for i in range(n)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1])
               for p in procs]
    assert [p.returncode for p in procs] == [0] * n
    assert sum(r["built"] for r in results) == 1
    assert len({r["cache"] for r in results}) == 1 and len({r["n"] for r in results}) == 1


def test_a_builder_that_dies_leaves_no_half_cache(coco_copy, tmp_path):
    """Killed mid-write: the next process finds no cache, takes the lock the kernel released,
    builds, and clears the dead builder's temporary directory."""
    images, path = coco_copy
    cache = tmp_path / "c"
    script = f"""
import os, sys
import numpy as np
from dst_dali.data import coco_index, index_cache
save = np.save
def die(file, array):  # np.save is given the open file
    if getattr(file, "name", file).endswith("labels.npy"):
        os._exit(9)
    save(file, array)
index_cache.np.save = die
coco_index.load_coco_index({images!r}, {path!r}, cache_dir={str(cache)!r})
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert [n for n in os.listdir(cache) if ".tmp-" in n]
    index = load_coco_index(images, path, cache_dir=str(cache))
    assert index.built
    assert not [n for n in os.listdir(cache) if ".tmp-" in n]


# -- what the loader reads -------------------------------------------------------------------
def test_the_same_batches_with_and_without_the_cache(coco128, tmp_path):
    from dst_dali import DSTLoader
    args = dict(batch_size=2, k=4, device="cpu", seed=5, masks=True, min_size=(96,),
                max_size=160)
    cached = DSTLoader(coco128.images, coco128.annotations, cache_dir=str(tmp_path / "c"),
                       **args)
    cached = DSTLoader(coco128.images, coco128.annotations, cache_dir=str(tmp_path / "c"),
                       **args)  # the second one maps what the first built
    assert cached.index.cache and not cached.index.built
    plain = DSTLoader(index=build_coco_index(coco128.images, coco128.annotations,
                                             progress=False), **args)
    for kind in ("regular", "collage", "regular", "collage"):
        a, b = cached.next_batch(kind), plain.next_batch(kind)
        for x, y in zip(a, b):
            assert x["image_id"] == y["image_id"]
            assert x.get("component_ids") == y.get("component_ids")
            assert np.array_equal(x["image"].numpy(), y["image"].numpy())
            ia, ib = x["instances"], y["instances"]
            assert np.array_equal(ia.gt_boxes.tensor.numpy(), ib.gt_boxes.tensor.numpy())
            assert np.array_equal(ia.gt_classes.numpy(), ib.gt_classes.numpy())
            for pa, pb in zip(ia.gt_masks.polygons, ib.gt_masks.polygons):
                assert all(np.array_equal(u, v) for u, v in zip(pa, pb))
    cached.close()
    plain.close()


def test_a_registered_coco_file_is_read_and_cached_as_a_file(coco128, tmp_path):
    """register_coco_instances: the cached index of its file, equal to the index of the dicts
    detectron2's loader gives; a registered list of dicts gives the same columns uncached."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import load_coco_json, register_coco_instances

    from dst_dali.data.catalog import detectron2_dataset_index, index_of_dataset_dicts
    name = "coco128_cached_registration"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, coco128.annotations, coco128.images)
    cache = str(tmp_path / "c")
    first = detectron2_dataset_index(name, cache)
    second = detectron2_dataset_index(name, cache)
    assert first.built and second.cache == first.cache and not second.built
    dicts = load_coco_json(coco128.annotations, coco128.images, name)
    from_dicts = index_of_dataset_dicts(name, dicts, first.category_ids, first.category_names)
    assert from_dicts.cache is None
    x, y = first.arrays(), from_dicts.arrays()
    for key in ("boxes", "labels", "polygons", "vertices", "sizes", "image_ids",
                "boxes_offsets", "polygons_offsets", "vertices_offsets"):
        assert np.array_equal(x[key], y[key]), key


def test_several_registered_coco_files_are_concatenated(coco128, tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from dst_dali.data.catalog import detectron2_dataset_index
    with open(coco128.annotations) as f:
        data = json.load(f)
    halves = []
    for h, images in enumerate((data["images"][:64], data["images"][64:])):
        ids = {im["id"] for im in images}
        path = tmp_path / f"half{h}.json"
        path.write_text(json.dumps(dict(data, images=images, annotations=[
            a for a in data["annotations"] if a["image_id"] in ids])))
        name = f"coco128_half{h}_{tmp_path.name}"
        register_coco_instances(name, {}, str(path), coco128.images)
        halves.append(name)
    cache = str(tmp_path / "c")
    both = detectron2_dataset_index(halves, cache)
    whole = build_coco_index(coco128.images, coco128.annotations, progress=False)
    assert both.source == "+".join(halves)
    x, y = both.arrays(), whole.arrays()
    for key in x:
        if not key.startswith("file_names"):
            assert np.array_equal(x[key], y[key]), key
    assert list(both.file_paths) == list(whole.file_paths)
    with pytest.raises(DatasetError, match="listed in two datasets"):
        detectron2_dataset_index([halves[0], halves[0]], cache)
    for name in halves:
        DatasetCatalog.remove(name)


def test_check_dataset_prepares_the_cache(coco128, tmp_path, capsys):
    from dst_dali.check_dataset import main
    cache = str(tmp_path / "c")
    argv = ["--images", coco128.images, "--annotations", coco128.annotations,
            "--index-only", "--cache-dir", cache, "--no-progress"]
    assert main(argv) == 0
    assert "built now" in capsys.readouterr().out
    index = load_coco_index(coco128.images, coco128.annotations, cache_dir=cache)
    assert not index.built
    assert main(argv) == 0 and "reused" in capsys.readouterr().out


def test_a_registered_coco_file_is_checked_like_a_file_given_directly(coco128, tmp_path):
    """register_coco_instances: every planted problem listed (detectron2's own loader stops at
    the first unknown category and merges duplicate ids), files checked, one polygon rule."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from dst_dali.data.catalog import detectron2_dataset_index
    path = _write(tmp_path, _planted, coco128)
    name = f"coco128_planted_{tmp_path.name}"
    register_coco_instances(name, {}, path, coco128.images)
    try:
        with pytest.raises(DatasetError) as registered:
            detectron2_dataset_index(name, str(tmp_path / "c"))
        with pytest.raises(DatasetError) as given:
            load_coco_index(coco128.images, path, cache_dir=str(tmp_path / "c"))
        assert sorted(registered.value.problems) == sorted(given.value.problems)
        assert any("listed twice" in p for p in registered.value.problems)
        assert any("missing.jpg" in p for p in registered.value.problems)
    finally:
        DatasetCatalog.remove(name)
