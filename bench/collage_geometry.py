"""How close DSTLoader's collages come to the paper's "identical size as regular images":
collages of coco128 at short side 800 (flip off), each against the regular images of its own
components (sizes from detectron2's ResizeShortestEdge).

Per collage: its area over the mean regular area of its components, the share of its pixels
that is padding, each component's scale over 1/sqrt(k) of its regular scale, and whether its
components share an orientation. Goals: mean area ratio <= 1.05, mean padding <= 10%, every
component's scale in [0.85, 1.0], orientation never mixed.

    python -m bench.collage_geometry [--collages 128] [--short-side 800]
"""
import argparse
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from .common import COCO128, RESULTS, write_results

GOALS = {"area_ratio_mean": 1.05, "padding_mean": 0.10, "scale_min": 0.85, "scale_max": 1.0,
         "mixed_orientation": 0}


def measure(args) -> dict:
    from detectron2.data.transforms import ResizeShortestEdge

    from dst_dali import DSTLoader
    loader = DSTLoader(os.path.join(COCO128, "images"), os.path.join(COCO128, "instances.json"),
                       batch_size=args.batch, k=args.k, min_size=(args.short_side,),
                       max_size=args.max_size, flip_prob=0.0, device="cpu",
                       aspect_ratio_grouping=True)
    index = loader.index
    position = {image_id: i for i, image_id in enumerate(index.image_ids)}
    n = int(round(np.sqrt(args.k)))
    area_ratio, padding, scales, mixed = [], [], [], 0
    while len(area_ratio) < args.collages:
        for d in loader.next_batch("collage"):
            h, w = d["image"].shape[1:]
            regular = np.array([ResizeShortestEdge.get_output_shape(
                *index.sizes[position[i]], args.short_side, args.max_size)
                for i in d["component_ids"]], np.float64)
            place = np.array(d["dst_transform"]["placement"], np.float64)
            area_ratio.append(h * w / np.mean(regular[:, 0] * regular[:, 1]))
            padding.append(1 - np.sum(place[:, 2] * place[:, 3]) / (h * w))
            scales += (place[:, 2:] / (regular / n)).min(1).tolist()
            mixed += len({bool(r[1] > r[0]) for r in regular}) > 1
    scales = np.array(scales)
    return {"collages": len(area_ratio), "area_ratio_mean": float(np.mean(area_ratio)),
            "area_ratio_max": float(np.max(area_ratio)),
            "padding_mean": float(np.mean(padding)), "padding_max": float(np.max(padding)),
            "scale_min": float(scales.min()), "scale_max": float(scales.max()),
            "scale_share_below_1": float(np.mean(scales < 1 - 1e-9)),
            "mixed_orientation": mixed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collages", type=int, default=128)
    ap.add_argument("--short-side", type=int, default=800)
    ap.add_argument("--max-size", type=int, default=1333)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="collage_geometry")
    args = ap.parse_args(argv)
    row = measure(args)
    met = {"area_ratio_mean": row["area_ratio_mean"] <= GOALS["area_ratio_mean"],
           "padding_mean": row["padding_mean"] <= GOALS["padding_mean"],
           "scale": GOALS["scale_min"] <= row["scale_min"] and
           row["scale_max"] <= GOALS["scale_max"] + 1e-9,
           "mixed_orientation": row["mixed_orientation"] == GOALS["mixed_orientation"]}
    notes = [f"goal {key}: {'met' if ok else 'NOT met'}" for key, ok in met.items()]
    columns = [(key, key) for key in row]
    path = write_results(args.name, [row], columns, {"goals": GOALS, "met": met,
                                                     "k": args.k, "short_side": args.short_side},
                         notes, results_dir=args.results_dir, script=__file__, argv=argv)
    for key, value in row.items():
        print(f"{key:22s} {value:.4g}" if isinstance(value, float) else f"{key:22s} {value}")
    print("\n".join(notes) + f"\n-> {path}")
    return row, met


if __name__ == "__main__":
    main()
