"""Checks a dataset before a long run: every annotation entry, and every image decoded once
and compared with its entry's size. Prints every problem (not only the first) and what
training would skip; exits 1 when training would refuse the dataset. The checked index is
cached where training will look for it (dst_dali.data.index_cache), so a cluster job can prepare
it before the ranks start; --index-only does just that, without decoding the images.

    python -m dst_dali.check_dataset --images DIR --annotations FILE.json [--workers 2]
    python -m dst_dali.check_dataset --dataset NAME      # registered in detectron2
    python -m dst_dali.check_dataset --yolo DATA.yaml [--split train]   # YOLO format
    python -m dst_dali.check_dataset ... --index-only [--cache-dir DIR]
"""
import argparse
import sys
from typing import List

from .data.catalog import detectron2_dataset_index
from .data.checks import check
from .data.coco_index import load_coco_index
from .data.index import DatasetError
from .data.yolo_labels import load_yolo_index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", help="the image folder of a COCO-format dataset")
    ap.add_argument("--annotations", help="its instances json")
    ap.add_argument("--dataset", help="a dataset registered in detectron2's DatasetCatalog")
    ap.add_argument("--yolo", help="a YOLO-format dataset's data yaml")
    ap.add_argument("--split", default="train", help="the YOLO split (default train)")
    ap.add_argument("--workers", type=int, default=2, help="DALI decoding threads")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--index-only", action="store_true",
                    help="check the entries and cache the index; decode no image")
    ap.add_argument("--cache-dir", help="where the index is cached (default: $DST_DALI_CACHE, "
                    "else $XDG_CACHE_HOME/dst_dali)")
    args = ap.parse_args(argv)
    entry_problems: List[str] = []
    if args.dataset:
        try:
            index = detectron2_dataset_index(args.dataset, args.cache_dir)
        except DatasetError as e:
            print(e)
            return 1
    elif args.yolo:
        index = load_yolo_index(args.yolo, args.split, problems=entry_problems,
                                cache_dir=args.cache_dir)
    elif args.images and args.annotations:
        index = load_coco_index(args.images, args.annotations, problems=entry_problems,
                                cache_dir=args.cache_dir, progress=not args.no_progress)
    else:
        ap.error("give --images and --annotations, --dataset or --yolo")
    image_problems = [] if args.index_only else check(index, args.workers, not args.no_progress)
    print(f"{index.source}: {len(index)} usable images, {index.num_classes} classes")
    print("index: " + (f"cached at {index.cache} ({'built now' if index.built else 'reused'})"
                       if index.cache else "not cached" + (" (its entries have problems)"
                                                           if entry_problems else "")))
    checked = (("entries", entry_problems),) + ((("images", image_problems),)
                                                if not args.index_only else ())
    for title, problems in checked:
        print(f"{len(problems)} problem(s) in {title}" + (":" if problems else ""))
        for p in problems:
            print(f"  {p}")
    skipped = {k: v for k, v in index.skipped.items() if v}
    print("training would skip: " + (", ".join(f"{v} {k.replace('_', ' ')}"
                                               for k, v in skipped.items()) or "nothing"))
    if index.rle_annotations:
        print(f"{len(index.rle_annotations)} non-crowd RLE mask(s): refused with masks=True")
    return 1 if entry_problems or image_problems else 0


if __name__ == "__main__":
    sys.exit(main())
