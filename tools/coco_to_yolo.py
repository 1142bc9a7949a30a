"""A COCO instances file as a YOLO-format dataset, for DSTLoader.from_yolo and Ultralytics alike:

    python tools/coco_to_yolo.py --images data/coco128/images \
        --annotations data/coco128/instances.json --out build/coco128_yolo [--copy]

writes OUT/images/train/ (links to the images, or copies with --copy), OUT/labels/train/*.txt
(one 'class cx cy w h' line a non-crowd box, normalised; class = the category's rank among the
file's sorted category ids; an image without a box gets no label file: a background image) and
OUT/data.yaml (path, train, val: the same folder, names). Boxes are clipped to their image; a
box left with no area is not written.
"""
import argparse
import json
import os
import shutil


def convert(images: str, annotations: str, out: str, copy: bool = False) -> str:
    with open(annotations) as f:
        coco = json.load(f)
    ids = sorted(c["id"] for c in coco["categories"])
    rank = {c: i for i, c in enumerate(ids)}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    boxes = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            boxes.setdefault(a["image_id"], []).append(a)
    image_dir, label_dir = (os.path.join(out, kind, "train") for kind in ("images", "labels"))
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    for im in coco["images"]:
        source = os.path.abspath(os.path.join(images, im["file_name"]))
        target = os.path.join(image_dir, os.path.basename(im["file_name"]))
        if not os.path.lexists(target):
            shutil.copy(source, target) if copy else os.symlink(source, target)
        w_img, h_img = float(im["width"]), float(im["height"])
        lines = []
        for a in boxes.get(im["id"], []):
            x, y, w, h = a["bbox"]
            x1, y1 = min(max(x, 0.0), w_img), min(max(y, 0.0), h_img)
            x2, y2 = min(max(x + w, 0.0), w_img), min(max(y + h, 0.0), h_img)
            if x2 <= x1 or y2 <= y1:
                continue
            lines.append(f"{rank[a['category_id']]} {(x1 + x2) / 2 / w_img:.6f} "
                         f"{(y1 + y2) / 2 / h_img:.6f} {(x2 - x1) / w_img:.6f} "
                         f"{(y2 - y1) / h_img:.6f}")
        if lines:
            stem = os.path.splitext(os.path.basename(im["file_name"]))[0]
            with open(os.path.join(label_dir, stem + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    yaml_path = os.path.join(out, "data.yaml")
    with open(yaml_path, "w") as f:
        f.write(f"path: {os.path.abspath(out)}\ntrain: images/train\nval: images/train\n"
                "names:\n" + "".join(f"  {i}: {json.dumps(names[c])}\n"
                                     for i, c in enumerate(ids)))
    return yaml_path


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="the COCO image folder")
    ap.add_argument("--annotations", required=True, help="the COCO instances json")
    ap.add_argument("--out", required=True, help="the YOLO dataset's root (created)")
    ap.add_argument("--copy", action="store_true", help="copy the images (default: links)")
    args = ap.parse_args(argv)
    path = convert(args.images, args.annotations, args.out, args.copy)
    print(path)
    return path


if __name__ == "__main__":
    main()
