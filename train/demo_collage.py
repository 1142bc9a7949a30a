"""A short demo of DST's data side on the bundled coco128 sample.

Builds regular (k = 1) and collage (k = 4) batches with DSTLoader, reports how
many boxes are small (< 32x32 px in network-input pixels, COCO's definition) in each, and the
throughput, and draws one batch of each to PNG. Runs on the GPU when DALI sees one (decode
"mixed" + the CUDA kernel), else on DALI's CPU backend.

    python train/demo_collage.py --out output/demo
"""
import argparse
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def draw(image, boxes, path):
    import cv2

    from dst_dali.feedback.sizes import SMALL_AREA
    img = np.ascontiguousarray(image)
    for l, t, r, b in boxes.astype(int):
        small = (r - l) * (b - t) < SMALL_AREA
        cv2.rectangle(img, (l, t), (r, b), (0, 0, 255) if small else (0, 255, 0), 1)
    cv2.imwrite(path, img)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=os.path.join(ROOT, "data", "coco128", "images"))
    ap.add_argument("--annotations",
                    default=os.path.join(ROOT, "data", "coco128", "instances.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "demo"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--min-size", type=int, nargs="+", default=[640, 672, 704, 736, 768, 800])
    ap.add_argument("--max-size", type=int, default=1333)
    args = ap.parse_args(argv)

    from dst_dali import DSTLoader
    from dst_dali.feedback.sizes import SMALL_AREA
    loader = DSTLoader(args.images, args.annotations, batch_size=args.batch_size, k=args.k,
                       min_size=args.min_size, max_size=args.max_size, device=args.device,
                       output="detectron2", image_format="BGR", aspect_ratio_grouping=True)
    os.makedirs(args.out, exist_ok=True)
    print(f"DALI pipelines on the {loader.device.upper()}, data {args.images}")
    stats = {}
    for kind in ("regular", "collage"):
        loader.next_batch(kind)  # warm-up
        n_boxes = n_small = 0
        t = time.perf_counter()
        for _ in range(args.iters):
            batch = loader.next_batch(kind)
            for d in batch:
                area = d["instances"].gt_boxes.area()
                n_boxes += len(area)
                n_small += int((area < SMALL_AREA).sum())
        dt = time.perf_counter() - t
        path = os.path.join(args.out, f"{kind}.png")
        draw(batch[0]["image"].permute(1, 2, 0).cpu().numpy(),
             batch[0]["instances"].gt_boxes.tensor.numpy(), path)
        samples = args.iters * args.batch_size
        k = args.k if kind == "collage" else 1
        print(f"{kind:8s} k={k}: {samples} samples from {samples * k} images, "
              f"{samples / dt:6.1f} samples/s, {n_small}/{n_boxes} boxes small "
              f"({n_small / max(1, n_boxes):.0%}) -> {path}")
        stats[kind] = {"samples": samples, "boxes": n_boxes, "small": n_small, "png": path}
    return stats


if __name__ == "__main__":
    main()
