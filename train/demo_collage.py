"""A short demo of DST's data side on the bundled coco128 sample.

Builds regular (k = 1) and collage (k = 4) batches with the CollageStitch pipelines, reports how
many boxes are small (< 32x32 px in network-input pixels, COCO's definition) in each, and the
throughput, and draws one batch of each to PNG. Runs on the GPU when DALI sees one (decode
"mixed" + the CUDA kernel), else on DALI's CPU backend.

    python train/demo_collage.py --out output/demo
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMALL_AREA = 32 ** 2


def draw(image, boxes, path):
    import cv2
    img = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
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

    from nvidia.dali import pipeline_def

    from dst_dali.device import dali_device_id, resolve_device
    from dst_dali.dataset import load_coco_index
    from dst_dali.pipelines.stitch import stitched_batch

    device = resolve_device(args.device)
    index = load_coco_index(args.images, args.annotations)
    os.makedirs(args.out, exist_ok=True)
    print(f"DALI pipelines on the {device.upper()}, data {args.images}")
    stats = {}
    for kind, k, interp in (("regular", 1, "linear"), ("collage", args.k, "nearest")):
        @pipeline_def(batch_size=args.batch_size, num_threads=2,
                      device_id=dali_device_id(device), seed=0)
        def pipe():
            out = stitched_batch(args.images, args.annotations, index.category_ids, k=k,
                                 min_sizes=args.min_size, max_size=args.max_size,
                                 interp=interp, device=device).out
            return out.image, out.boxes

        p = pipe()
        p.build()
        p.run()  # warm-up
        n_boxes = n_small = 0
        t = time.perf_counter()
        for _ in range(args.iters):
            images, boxes = p.run()
            if device == "gpu":
                images, boxes = images.as_cpu(), boxes.as_cpu()
            for b in range(args.batch_size):
                bx = np.array(boxes[b]).reshape(-1, 4)
                area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
                n_boxes += len(bx)
                n_small += int((area < SMALL_AREA).sum())
        dt = time.perf_counter() - t
        path = os.path.join(args.out, f"{kind}.png")
        draw(np.array(images[0]), np.array(boxes[0]).reshape(-1, 4), path)
        samples = args.iters * args.batch_size
        print(f"{kind:8s} k={k}: {samples} samples from {samples * k} images, "
              f"{samples / dt:6.1f} samples/s, {n_small}/{n_boxes} boxes small "
              f"({n_small / max(1, n_boxes):.0%}) -> {path}")
        stats[kind] = {"samples": samples, "boxes": n_boxes, "small": n_small, "png": path}
    return stats


if __name__ == "__main__":
    main()
