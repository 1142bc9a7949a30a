"""The detection set of bench/evidence/accuracy.py: coco128's objects, cut out by their polygons,
pasted at controlled sizes onto blurred coco128 backgrounds, with COCO's scale problem in every
split.

- Three splits: train, val (only for choosing the schedule) and test (only for the final
  numbers). SIZE x SIZE images, trained and tested at their own size, so COCO's areas (small
  < 32², large > 96²) apply in input pixels as they are.
- The same scale mix in every split, as in COCO: about half the images hold small objects
  (1-3 of them, with 0-2 larger ones), the other half none (1-3 medium or large objects), so
  about 40% of the objects are small (COCO: 41%) and most batches mix both kinds of image.
- Split by source image: each coco128 image gives its cut-outs to one split only, images dealt
  to the splits class by class (rarest class first), so every class has source images in every
  split and no object appears in two splits.

    python -m bench.evidence.accuracy_set OUT_DIR [--train 2000 --val 300 --test 500]

writes OUT_DIR/{train,val,test}/*.jpg and OUT_DIR/{train,val,test}.json (COCO format).
"""
import argparse
import json
import os

import numpy as np

from ..common import COCO128

# coco128's classes with cut-outs (>= 40 px a side) from at least 4 source images, so each split
# gets some; distinct shapes, so a small detector trained from scratch can tell them apart
CLASSES = ("person", "chair", "potted plant", "cup", "dog", "elephant", "giraffe", "umbrella")
SIZE = 192
SPLITS = {"train": 0.6, "val": 0.15, "test": 0.25}  # share of each class's source images
# longest side of a pasted object (px): small ones end under 32² in box area
SIDES = {"small": (12, 30), "medium": (36, 95), "large": (100, 176)}
SMALL_IMAGE_SHARE = 0.5  # images holding small objects (COCO: about 41% of objects small)


def cutouts():
    """{source image id: [(class index, RGBA patch), ...]} of every coco128 instance of
    CLASSES at least 40 px a side whose box is mostly the object, cut out by its polygons."""
    import cv2
    from pycocotools import mask as mask_utils
    with open(os.path.join(COCO128, "instances.json")) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im for im in coco["images"]}
    out = {}
    for a in coco["annotations"]:
        name = names[a["category_id"]]
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        if (name not in CLASSES or a.get("iscrowd") or not isinstance(a["segmentation"], list)
                or w < 40 or h < 40):
            continue
        im = files[a["image_id"]]
        image = cv2.cvtColor(cv2.imread(os.path.join(COCO128, "images", im["file_name"])),
                             cv2.COLOR_BGR2RGB)
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
            a["segmentation"], im["height"], im["width"])))
        patch = np.dstack([image, mask * 255])[y:y + h, x:x + w]
        if patch[..., 3].mean() > 40:
            out.setdefault(a["image_id"], []).append((CLASSES.index(name), patch))
    return out


def split_sources(sources: dict, rng) -> dict:
    """{split: [source image id]}: each class's source images dealt to the splits in the shares
    of SPLITS, rarest class first; an image goes where its classes are furthest below their
    share."""
    classes_of = {i: {c for c, _ in patches} for i, patches in sources.items()}
    images_of = {c: [i for i in sources if c in classes_of[i]] for c in range(len(CLASSES))}
    given = {split: {c: 0 for c in images_of} for split in SPLITS}
    out = {split: [] for split in SPLITS}
    for c in sorted(images_of, key=lambda c: len(images_of[c])):
        for i in rng.permutation(images_of[c]):
            i = int(i)
            if any(i in ids for ids in out.values()):
                continue
            need = {split: sum(share * len(images_of[k]) - given[split][k]
                               for k in classes_of[i])
                    for split, share in SPLITS.items()}
            # a class without an image in a split gets one first
            empty = [s for s in SPLITS if given[s][c] == 0]
            split = max(empty or SPLITS, key=lambda s: need[s])
            out[split].append(i)
            for k in classes_of[i]:
                given[split][k] += 1
    return out


def backgrounds(rng, n):
    """n blurred SIZE x SIZE crops of coco128 images: texture without recognisable objects."""
    import cv2
    folder = os.path.join(COCO128, "images")
    names = sorted(os.listdir(folder))
    out = []
    for _ in range(n):
        img = cv2.imread(os.path.join(folder, names[rng.integers(len(names))]))
        scale = SIZE / min(img.shape[:2]) * rng.uniform(1.0, 1.6)
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y, x = rng.integers(img.shape[0] - SIZE + 1), rng.integers(img.shape[1] - SIZE + 1)
        out.append(cv2.GaussianBlur(img[y:y + SIZE, x:x + SIZE], (0, 0), 5))
    return out


def object_sizes(rng) -> list:
    """The size bands of one image's objects, largest first (so small ones are not hidden)."""
    if rng.random() < SMALL_IMAGE_SHARE:
        bands = ["small"] * int(rng.integers(1, 4)) + [
            "medium" if rng.random() < 0.6 else "large" for _ in range(rng.integers(0, 3))]
    else:
        bands = ["medium" if rng.random() < 0.6 else "large" for _ in range(rng.integers(1, 4))]
    order = ("large", "medium", "small")
    return sorted(bands, key=order.index)


def make_split(folder, split, n_images, patches, rng) -> dict:
    """patches: {class index: [RGBA patch]}. Writes folder/split/*.jpg and folder/split.json;
    returns the split's figures."""
    import cv2
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    classes = sorted(patches)
    images, anns = [], []
    for i, bg in enumerate(backgrounds(rng, n_images)):
        canvas = bg.astype(np.float32)
        boxes = []
        for band in object_sizes(rng):
            cls = classes[rng.integers(len(classes))]  # classes alike, whatever their cut-outs
            patch = patches[cls][rng.integers(len(patches[cls]))]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            low, high = SIDES[band]
            f = int(rng.integers(low, high + 1)) / max(patch.shape[:2])
            h, w = max(1, round(patch.shape[0] * f)), max(1, round(patch.shape[1] * f))
            p = cv2.resize(np.ascontiguousarray(patch), (w, h), interpolation=cv2.INTER_AREA)
            ys, xs = np.nonzero(p[..., 3] > 127)
            if len(xs) == 0:
                continue
            for _ in range(20):  # a place that hides no earlier object much
                y, x = int(rng.integers(SIZE - h + 1)), int(rng.integers(SIZE - w + 1))
                if all(_overlap((x, y, w, h), b) < 0.3 for b in boxes):
                    break
            else:
                continue
            alpha = p[..., 3:4].astype(np.float32) / 255
            rgb = p[..., :3][..., ::-1].astype(np.float32)  # the canvas is BGR (OpenCV)
            canvas[y:y + h, x:x + w] = canvas[y:y + h, x:x + w] * (1 - alpha) + rgb * alpha
            box = [x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1),
                   int(ys.max() - ys.min() + 1)]
            boxes.append(box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        name = f"{split}_{i:05d}.jpg"
        cv2.imwrite(os.path.join(folder, split, name), canvas.clip(0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE})
    with open(os.path.join(folder, f"{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}, f)
    return split_figures(images, anns)


def split_figures(images, anns) -> dict:
    """Images, objects, the shares of small/medium/large objects (COCO's areas), the share of
    images holding a small object, and objects per class."""
    area = np.array([a["area"] for a in anns], np.float64)
    small, large = area < 32 ** 2, area > 96 ** 2
    with_small = {a["image_id"] for a, s in zip(anns, small) if s}
    return {"images": len(images), "objects": len(anns),
            "small": round(float(small.mean()), 4),
            "medium": round(float((~small & ~large).mean()), 4),
            "large": round(float(large.mean()), 4),
            "images_with_small": round(len(with_small) / len(images), 4),
            "per_class": {c: sum(a["category_id"] == i + 1 for a in anns)
                          for i, c in enumerate(CLASSES)}}


def _overlap(a, b):
    """Intersection over the smaller of two xywh boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def make_dataset(folder, seed=0, train=2000, val=300, test=500) -> dict:
    """The three splits in folder; returns {split: figures, "sources": {split: {class: source
    images}}}. The same seed makes the same set (done.json says it is complete)."""
    done = os.path.join(folder, "done.json")
    wanted = {"seed": seed, "train": train, "val": val, "test": test, "size": SIZE,
              "classes": list(CLASSES)}
    if os.path.exists(done):
        with open(done) as f:
            made = json.load(f)
        if made["wanted"] == wanted:
            return made["figures"]
    rng = np.random.default_rng(seed)
    sources = cutouts()
    splits = split_sources(sources, rng)
    figures = {"sources": {split: {c: sum(any(k == i for k, _ in sources[s]) for s in ids)
                                   for i, c in enumerate(CLASSES)}
                           for split, ids in splits.items()}}
    for split, n in (("train", train), ("val", val), ("test", test)):
        patches = {}
        for s in splits[split]:
            for c, patch in sources[s]:
                patches.setdefault(c, []).append(patch)
        figures[split] = make_split(folder, split, n, patches, rng)
    with open(done, "w") as f:
        json.dump({"wanted": wanted, "figures": figures}, f)
    return figures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--test", type=int, default=500)
    args = ap.parse_args(argv)
    figures = make_dataset(args.out_dir, args.seed, args.train, args.val, args.test)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
