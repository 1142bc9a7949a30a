"""Checks a dataset before a long run: every annotation entry, and every image decoded once
and compared with its entry's size. Prints every problem (not only the first) and what
training would skip; exits 1 when training would refuse the dataset. The checked index is
cached where training will look for it (dst_dali.index_cache), so a cluster job can prepare
it before the ranks start; --index-only does just that, without decoding the images.

    python -m dst_dali.check_dataset --images DIR --annotations FILE.json [--workers 2]
    python -m dst_dali.check_dataset --dataset NAME      # registered in detectron2
    python -m dst_dali.check_dataset ... --index-only [--cache-dir DIR]
"""
import argparse
import sys
from typing import List, Tuple


def dali_cause(error: Exception) -> str:
    """The operator's own message out of DALI's error report (which opens with a traceback of
    the pipeline definition): e.g. "Failed to decode sample #0 : 000000000009.jpg"."""
    text = str(error)
    cause = text.split("encountered:", 1)[-1]
    lines = [ln.strip() for ln in cause.splitlines()
             if ln.strip() and "pipeline object is no longer valid" not in ln]
    return " ".join(lines) or text


def decode_sizes(paths: List[str], num_threads: int = 2, batch: int = 32,
                 progress: bool = False) -> List[Tuple[str, object]]:
    """For each file, ("ok", (height, width)) as DALI's decoder (the loader's) decodes it, or
    ("error", DALI's message). A batch that fails is decoded file by file to find the culprit."""
    import numpy as np
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
    from tqdm import tqdm

    def run(files):
        @pipeline_def(batch_size=len(files), num_threads=num_threads, device_id=None,
                      prefetch_queue_depth=1)
        def graph():
            encoded = fn.external_source(
                source=lambda: [np.fromfile(f, np.uint8) for f in files], batch=True)
            return fn.decoders.image(encoded, output_type=types.RGB).shape()
        pipe = graph()
        pipe.build()
        (shapes,) = pipe.run()
        return [("ok", tuple(int(v) for v in np.array(shapes[i])[:2]))
                for i in range(len(files))]

    out = []
    for start in tqdm(range(0, len(paths), batch), unit="batch", desc="decoding",
                      disable=not progress):
        files = paths[start:start + batch]
        try:
            out += run(files)
        except (RuntimeError, OSError) as e:
            if len(files) == 1:
                out.append(("error", dali_cause(e)[:300]))
            else:
                out += decode_sizes(files, num_threads, batch=1)
    return out


def check(index, workers: int = 2, progress: bool = True) -> List[str]:
    """The image problems of an index: files DALI cannot decode and decoded sizes that differ
    from the entries'."""
    problems = []
    results = decode_sizes(index.file_paths, workers, progress=progress)
    for p, (status, value) in enumerate(results):
        path, expected = index.file_paths[p], tuple(int(v) for v in index.sizes[p])
        if status == "error":
            problems.append(f"{path}: does not decode ({value})")
        elif value != expected:
            problems.append(f"{path}: decodes to {value[1]}x{value[0]} (width x height), "
                            f"its entry (image {index.image_ids[p]!r}) says "
                            f"{expected[1]}x{expected[0]}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", help="the image folder of a COCO-format dataset")
    ap.add_argument("--annotations", help="its instances json")
    ap.add_argument("--dataset", help="a dataset registered in detectron2's DatasetCatalog")
    ap.add_argument("--workers", type=int, default=2, help="DALI decoding threads")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--index-only", action="store_true",
                    help="check the entries and cache the index; decode no image")
    ap.add_argument("--cache-dir", help="where the index is cached (default: $DST_DALI_CACHE, "
                    "else $XDG_CACHE_HOME/dst_dali)")
    args = ap.parse_args(argv)
    from .catalog import detectron2_dataset_index
    from .coco_index import load_coco_index
    from .dataset import DatasetError
    entry_problems: List[str] = []
    if args.dataset:
        try:
            index = detectron2_dataset_index(args.dataset, args.cache_dir)
        except DatasetError as e:
            print(e)
            return 1
    elif args.images and args.annotations:
        index = load_coco_index(args.images, args.annotations, problems=entry_problems,
                                cache_dir=args.cache_dir, progress=not args.no_progress)
    else:
        ap.error("give --images and --annotations, or --dataset")
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
