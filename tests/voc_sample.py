"""A tiny PASCAL VOC-format dataset made from the bundled coco128 sample: its images with the
annotations of the COCO classes VOC has, as VOC XML (VOC<year>/{JPEGImages, Annotations,
ImageSets/Main/<split>.txt}), for tests of detectron2's builtin VOC datasets.

    python -m tests.voc_sample OUT_ROOT [--year 2007] [--split trainval]
    DETECTRON2_DATASETS=OUT_ROOT python train/train_dali.py ... \
        DATASETS.TRAIN "('voc_2007_trainval',)"
"""
import argparse
import json
import os
import shutil
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO128 = os.path.join(ROOT, "data", "coco128")
# COCO's names of the 20 VOC classes, where they differ
VOC_NAME = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
            "dining table": "diningtable", "potted plant": "pottedplant", "tv": "tvmonitor"}
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def make_voc_sample(out_root: str, year: int = 2007, split: str = "trainval") -> list:
    """Writes the sample; returns the VOC image ids (file stems) written."""
    with open(os.path.join(COCO128, "instances.json")) as f:
        coco = json.load(f)
    names = {c["id"]: VOC_NAME.get(c["name"], c["name"]) for c in coco["categories"]}
    voc = os.path.join(out_root, f"VOC{year}")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    by_image = {}
    for a in coco["annotations"]:
        if names[a["category_id"]] in VOC_CLASSES and not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    written = []
    for im in coco["images"]:
        if im["id"] not in by_image:
            continue
        stem = os.path.splitext(im["file_name"])[0]
        shutil.copy(os.path.join(COCO128, "images", im["file_name"]),
                    os.path.join(voc, "JPEGImages", stem + ".jpg"))
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = stem + ".jpg"
        size = ET.SubElement(root, "size")
        for key, value in (("width", im["width"]), ("height", im["height"]), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        for a in by_image[im["id"]]:
            x, y, w, h = a["bbox"]
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = names[a["category_id"]]
            for key, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
                ET.SubElement(obj, key).text = value
            box = ET.SubElement(obj, "bndbox")
            # VOC's integer, 1-based pixel indices (detectron2 subtracts 1 from xmin, ymin; the
            # VOC devkit's evaluation reads integers)
            x0, y0 = round(x), round(y)
            for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1),
                               ("xmax", max(round(x + w), x0 + 1)),
                               ("ymax", max(round(y + h), y0 + 1))):
                ET.SubElement(box, key).text = str(value)
        ET.ElementTree(root).write(os.path.join(voc, "Annotations", stem + ".xml"))
        written.append(stem)
    with open(os.path.join(voc, "ImageSets", "Main", split + ".txt"), "w") as f:
        f.write("\n".join(written) + "\n")
    return written


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_root")
    ap.add_argument("--year", type=int, default=2007)
    ap.add_argument("--split", default="trainval")
    a = ap.parse_args()
    print(f"{len(make_voc_sample(a.out_root, a.year, a.split))} images -> {a.out_root}")
