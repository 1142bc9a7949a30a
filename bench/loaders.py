"""The loaders bench/throughput.py measures, each a variant with next_batch(kind) -> (samples,
images decoded, collage step seconds): detectron2's train loader and mapper, the Stitcher way's
collage on top of it, DSTLoader, DALI's built-in operators making the same batches, DALI's
decode alone, Ultralytics' train loader and DSTLoader in its form. variant_builders(args) gives
those this machine can run."""
import os
import time

import numpy as np

from .common import PIXEL_MEAN, PIXEL_STD, ROOT, coco128_yolo, stitcher_collage


def detectron2_mapper(args):
    """detectron2's dataset dicts of the data and its standard training mapper."""
    from detectron2.data import DatasetMapper, transforms as T
    from detectron2.data.datasets import load_coco_json
    dicts = [d for d in load_coco_json(args.annotations, args.images, "dst_bench")
             if any(not a.get("iscrowd", 0) for a in d["annotations"])]
    mapper = DatasetMapper(is_train=True, augmentations=[
        T.ResizeShortestEdge(args.min_size, args.max_size, "choice"), T.RandomFlip()],
        image_format="BGR", use_instance_mask=False)
    return dicts, mapper


def detectron2_loader(args):
    from detectron2.data import build_detection_train_loader
    dicts, mapper = detectron2_mapper(args)
    return iter(build_detection_train_loader(dicts, mapper=mapper, total_batch_size=args.batch,
                                             num_workers=args.workers,
                                             aspect_ratio_grouping=False))


def stitcher_step(batches, k):
    """The Stitcher way's collage of k batches (detectron2 dicts): images normalized and padded
    into one tensor as its model does, then common.stitcher_collage; boxes scaled and offset
    into their cells."""
    import torch
    from detectron2.structures import Boxes, ImageList, Instances
    n = int(round(k ** 0.5))
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    flat = [d for b in batches for d in b]
    images = ImageList.from_tensors([(d["image"].float() - mean) / std for d in flat], 32)
    out = stitcher_collage(images.tensor, k)
    H, W = out.shape[-2:]
    results = []
    for i in range(len(out)):
        boxes, classes = [], []
        for j in range(k):
            inst = batches[j][i]["instances"]
            y0, x0 = (j // n) * (H // n), (j % n) * (W // n)
            boxes.append(inst.gt_boxes.tensor / n + torch.tensor([x0, y0, x0, y0]))
            classes.append(inst.gt_classes)
        inst = Instances((H, W), gt_boxes=Boxes(torch.cat(boxes)), gt_classes=torch.cat(classes))
        results.append({"image": out[i], "instances": inst})
    return results


class Detectron2Variant:
    def __init__(self, args, collage: bool):
        self.it, self.k, self.collage = detectron2_loader(args), args.k, collage

    def next_batch(self, kind):
        if kind == "regular" or not self.collage:
            batch = next(self.it)
            return len(batch), len(batch), 0.0
        batches = [next(self.it) for _ in range(self.k)]
        t = time.process_time()
        out = stitcher_step(batches, self.k)
        return len(out), self.k * len(out), time.process_time() - t


class DSTVariant:
    def __init__(self, args, device):
        from dst_dali import DSTLoader
        self.k = args.k
        self.loader = DSTLoader(args.images, args.annotations, batch_size=args.batch, k=args.k,
                                min_size=args.min_size, max_size=args.max_size, device=device,
                                aspect_ratio_grouping=False, num_threads=args.threads,
                                pipelines=args.pipelines)

    def next_batch(self, kind):
        batch = self.loader.next_batch(kind)
        return len(batch), len(batch) * (self.k if kind == "collage" else 1), None

    @staticmethod
    def op_stats(since=None):
        """CollageStitch's own CPU per k: its steps run on DALI's threads, ahead of next()."""
        from dst_dali import host_cpu_stats
        return host_cpu_stats(since)


class DecodeOnlyVariant:
    """DSTLoader's read + decode alone (files read on the main thread, decoded by DALI to RGB,
    batch B, by as many pipelines as DSTLoader runs a kind, in turn): the CPU cost of
    decoding."""

    def __init__(self, args):
        import itertools

        import numpy as np
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        from dst_dali.data.coco_index import load_coco_index
        from dst_dali.settings import default_pipelines
        files = itertools.cycle(load_coco_index(args.images, args.annotations).file_paths)
        pipelines = args.pipelines or default_pipelines("cpu", args.threads)

        def feed():
            return [np.fromfile(next(files), np.uint8) for _ in range(args.batch)]

        @pipeline_def(batch_size=args.batch, num_threads=max(1, args.threads // pipelines),
                      device_id=None, exec_dynamic=True)
        def graph():
            encoded = fn.external_source(source=feed, batch=True)
            return fn.decoders.image(encoded, output_type=types.RGB).shape()

        self.pipes = itertools.cycle([graph() for _ in range(pipelines)])

    def next_batch(self, kind):
        (shapes,) = next(self.pipes).run()
        return len(shapes), len(shapes), None


class BuiltinsVariant:
    """The same batches from DALI's own operators, the peer a DALI user would pick instead:
    decode, fn.resize to each image's size (bilinear for a regular image, nearest without
    antialiasing for a collage component), fn.flip, and for collages fn.multi_paste into the
    canvases; sizes, anchors and boxes worked out on the host by the method's definition
    (bench/oracle.py). DALI keeps one batch size through a pipeline, so a collage
    pipeline runs k*B images and pastes B canvases plus k*B - B spare 1x1 ones. On the GPU the
    decode is "mixed" and the canvases are handed to torch as DSTLoader hands its images."""

    def __init__(self, args, device):
        import itertools

        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        from dst_dali.data.coco_index import load_coco_index
        from dst_dali.op.device import dali_device_id
        from dst_dali.settings import default_pipelines

        from .oracle import layout, map_boxes, resize_shortest_edge_shape
        self.layout, self.map_boxes = layout, map_boxes
        self.regular_size = resize_shortest_edge_shape
        self.args, self.k, self.gpu = args, args.k, device == "gpu"
        self.index = load_coco_index(args.images, args.annotations)
        self.order = itertools.cycle(np.random.default_rng(0).permutation(len(self.index)))
        self.rng = np.random.default_rng(1)
        self.plans = {}  # pipeline -> the plans of the batches it was fed and has not given
        threads, pipelines = args.threads, args.pipelines or default_pipelines(device, args.threads)

        def graph(kind):
            kb = self.k * args.batch if kind == "collage" else args.batch
            plans = []

            @pipeline_def(batch_size=kb, num_threads=max(1, threads // pipelines),
                          device_id=dali_device_id(device), exec_dynamic=True)
            def pipe():
                names = ("encoded", "size", "flip") + (
                    ("ids", "anchors", "out_size") if kind == "collage" else ())
                given = dict(zip(names, fn.external_source(
                    source=lambda: self._feed(kind, plans), num_outputs=len(names),
                    batch=True)))
                images = fn.decoders.image(given["encoded"], output_type=types.RGB,
                                           device="mixed" if self.gpu else "cpu")
                images = fn.flip(fn.resize(
                    images, size=given["size"], antialias=False,
                    interp_type=types.INTERP_NN if kind == "collage" else types.INTERP_LINEAR),
                    horizontal=given["flip"])
                if kind == "collage":
                    images = fn.multi_paste(images, in_ids=given["ids"],
                                            out_anchors=given["anchors"],
                                            output_size=given["out_size"])
                return images

            built = pipe()
            self.plans[built] = plans
            return built

        self.pipes = {kind: itertools.cycle([graph(kind) for _ in range(pipelines)])
                      for kind in ("regular", "collage")}

    def _feed(self, kind, plans):
        """One batch's inputs; its plan (positions, short sides, flips, placements) is queued for
        batch() in the order the pipeline runs them."""
        k = self.k if kind == "collage" else 1
        positions = [int(next(self.order)) for _ in range(k * self.args.batch)]
        short = self.rng.choice(self.args.min_size, len(positions))
        flips = self.rng.random(len(positions)) < 0.5
        plan = {"positions": positions, "short": short, "flips": flips, "places": [],
                "canvases": []}
        for b in range(self.args.batch):
            mine = slice(b * k, (b + 1) * k)
            sizes = [tuple(self.index.sizes[p]) for p in positions[mine]]
            if kind == "collage":
                canvas, places = self.layout(sizes, short[mine], self.args.max_size)
            else:
                canvas = self.regular_size(*sizes[0], short[b], self.args.max_size)
                places = [(0, 0, *canvas)]
            plan["places"] += places
            plan["canvases"].append(canvas)
        plans.append(plan)
        inputs = [[np.fromfile(self.index.file_paths[p], np.uint8) for p in positions],
                  [np.array(p[2:], np.float32) for p in plan["places"]],
                  [np.array(f, np.int32) for f in flips]]
        if kind == "collage":
            spare = len(positions) - self.args.batch
            inputs += [[np.arange(b * k, (b + 1) * k, dtype=np.int32)
                        for b in range(self.args.batch)] + [np.zeros(0, np.int32)] * spare,
                       [np.array([p[:2] for p in plan["places"][b * k:(b + 1) * k]], np.int32)
                        for b in range(self.args.batch)] + [np.zeros((0, 2), np.int32)] * spare,
                       [np.array(c, np.int32) for c in plan["canvases"]]
                       + [np.ones(2, np.int32)] * spare]
        return inputs

    def batch(self, kind):
        """[(image as a torch tensor, boxes in its pixels)] of one batch, and its plan."""
        import torch

        from dst_dali.stream.batch_stream import gpu_to_torch
        pipe = next(self.pipes[kind])
        (images,) = pipe.run()
        plan = self.plans[pipe].pop(0)
        k = self.k if kind == "collage" else 1
        out = []
        for b in range(self.args.batch):
            boxes = [self.map_boxes(self.index.boxes[p], self.index.sizes[p], place, flip)
                     for p, place, flip in list(zip(plan["positions"], plan["places"],
                                                    plan["flips"]))[b * k:(b + 1) * k]]
            image = (gpu_to_torch(images[b]) if self.gpu
                     else torch.from_numpy(np.asarray(images[b])))
            out.append((image, np.concatenate(boxes)))
        return out, plan

    def next_batch(self, kind):
        out, _ = self.batch(kind)
        return len(out), len(out) * (self.k if kind == "collage" else 1), None


class UltralyticsVariant:
    """Ultralytics' own train loader, built as its DetectionTrainer builds it (build_yolo_dataset
    in "train" mode with its default hyperparameters, build_dataloader with --workers workers)
    over the same images in YOLO form. mosaic=True: its default (mosaic, random perspective,
    HSV, flip; a mosaic takes three of its four images from a buffer of recent ones, so a
    sample decodes about one); False: mosaic=0, as in its last epochs (close_mosaic).
    Mosaic or not whatever the kind: Ultralytics has no collage iterations."""

    def __init__(self, args, mosaic: bool):
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.cfg import get_cfg
        from ultralytics.data import build_dataloader, build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset
        data = check_det_dataset(args.yolo_data)
        overrides = {"imgsz": args.imgsz, "data": args.yolo_data, "workers": args.workers}
        cfg = get_cfg(overrides=overrides if mosaic else dict(overrides, mosaic=0.0))
        dataset = build_yolo_dataset(cfg, data["train"], args.batch, data, mode="train")
        loader = build_dataloader(dataset, args.batch, args.workers, shuffle=True, device="cpu")
        self.it = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch

    def next_batch(self, kind):
        n = len(next(self.it)["img"])
        return n, n, None


class DSTUltralyticsVariant:
    """DSTLoader(output="ultralytics") over the YOLO-form data, as DSTDetectionTrainer builds
    it: regular batches letterboxed into the imgsz square, collages of k half-scale images in
    the same square."""

    def __init__(self, args):
        from dst_dali import DSTLoader
        self.k = args.k
        self.loader = DSTLoader.from_yolo(args.yolo_data, "train", batch_size=args.batch,
                                          k=args.k, output="ultralytics", imgsz=args.imgsz,
                                          device="cpu", num_threads=args.threads,
                                          pipelines=args.pipelines)

    def next_batch(self, kind):
        n = len(self.loader.next_batch(kind)["img"])
        return n, n * (self.k if kind == "collage" else 1), None


def yolo_data(args) -> str:
    """--yolo-data, or data/coco128 in YOLO form (tools/coco_to_yolo.py), made once; with
    --yolo-images N, coco128 repeated to N image files (bench/dataset_scale.py's YOLO set):
    Ultralytics keeps the last batch x 8 images it decoded for its mosaic, which on coco128 is
    the whole set, on any real set a small part of it."""
    if args.yolo_data:
        return args.yolo_data
    if args.yolo_images:
        from .dataset_scale import write_yolo_set
        root = os.path.join(ROOT, "build", f"coco128_yolo_{args.yolo_images}")
        write_yolo_set(root, args.yolo_images)
        return os.path.join(root, "data.yaml")
    return coco128_yolo(os.path.join(ROOT, "build", "coco128_yolo"))


def variant_builders(args) -> dict:
    """name -> constructor of the variants this machine can run (the _gpu ones need a GPU)."""
    from dst_dali.op.device import resolve_device
    builders = {"detectron2": lambda: Detectron2Variant(args, collage=False),
                "stitcher": lambda: Detectron2Variant(args, collage=True),
                "dst_cpu": lambda: DSTVariant(args, "cpu"),
                "builtins_cpu": lambda: BuiltinsVariant(args, "cpu"),
                "decode_only": lambda: DecodeOnlyVariant(args),
                "ultralytics": lambda: UltralyticsVariant(args, mosaic=True),
                "ultralytics_no_mosaic": lambda: UltralyticsVariant(args, mosaic=False),
                "dst_ultralytics": lambda: DSTUltralyticsVariant(args)}
    try:
        resolve_device("gpu")
        builders["dst_gpu"] = lambda: DSTVariant(args, "gpu")
        builders["builtins_gpu"] = lambda: BuiltinsVariant(args, "gpu")
    except ValueError:
        pass  # reported as "not run"
    return builders
