"""One stitched sample in the formats detectors take: detectron2's DatasetMapper dicts,
torchvision's (image, target) pairs, and a whole batch as Ultralytics' collate_fn gives it. Work per sample is proportional to its boxes and polygons,
never to its pixels (on the CPU the image is DALI's output buffer itself; on the GPU, one copy
out of DALI's buffers)."""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch


@dataclass
class Sample:
    """One output sample of a stitched batch (its image shares DALI's output buffer)."""
    image: torch.Tensor          # HWC uint8 (on the GPU for device="gpu")
    boxes: np.ndarray            # (N, 4) float32 ltrb
    labels: np.ndarray           # (N,) int32, contiguous 0..C-1
    polygons: np.ndarray         # (Q, 3) int32 [box index, first vertex, one past last]
    vertices: np.ndarray         # (V, 2) float32
    image_ids: List[int]         # the COCO image id of each component (1 for regular)
    short_side: np.ndarray       # (k,) the short side drawn for each component
    flip: np.ndarray             # (k,) the flip drawn for each component
    placement: np.ndarray        # (k, 4) [y0, x0, h, w] of each component in the image
    box_component: np.ndarray    # (N,) the component each box came from
    kind: str                    # "regular" or "collage"
    original_size: Optional[tuple] = None  # (h, w) of the source image (regular only)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def landscape(self) -> bool:
        return self.width > self.height


def polygons_per_instance(sample: Sample) -> List[List[np.ndarray]]:
    """detectron2's polygon format: per instance, a list of flat [x0, y0, x1, y1, ...] arrays."""
    out: List[List[np.ndarray]] = [[] for _ in range(len(sample.boxes))]
    if len(sample.polygons):
        flat = sample.vertices.reshape(-1).astype(np.float64)
        for box, first, last in sample.polygons.tolist():
            out[box].append(flat[2 * first:2 * last])
    return out


def transform_record(sample: Sample) -> dict:
    """What was drawn and where each component went: for logging, debugging and tests."""
    return {"short_side": sample.short_side.tolist(), "flip": sample.flip.astype(bool).tolist(),
            "placement": sample.placement.tolist(), "box_component": sample.box_component}


def to_detectron2(sample: Sample, masks: bool = False) -> dict:
    """A dict as detectron2's DatasetMapper makes it for training; with `masks` (its
    use_instance_mask, i.e. MODEL.MASK_ON) the instances carry gt_masks as PolygonMasks.

    `image` is CHW in the loader's image_format, a view of the HWC sample (detectron2 normalizes
    and pads it into a new tensor anyway). `height`/`width` are the source image's size for a
    regular sample (what DatasetMapper passes on) and the collage's size for a collage.
    """
    from detectron2.structures import Boxes, Instances, PolygonMasks
    h, w = sample.height, sample.width
    instances = Instances((h, w))
    instances.gt_boxes = Boxes(torch.from_numpy(sample.boxes))
    instances.gt_classes = torch.from_numpy(sample.labels.astype(np.int64))
    if masks:
        instances.gt_masks = PolygonMasks(polygons_per_instance(sample))
    oh, ow = sample.original_size or (h, w)
    out = {"image": sample.image.permute(2, 0, 1), "instances": instances,
           "height": oh, "width": ow, "image_id": sample.image_ids[0],
           "dst_kind": sample.kind,
           "dst_transform": transform_record(sample)}
    if sample.kind == "collage":
        out["component_ids"] = list(sample.image_ids)
    return out


def rasterize(sample: Sample) -> torch.Tensor:
    """(N, H, W) uint8 instance masks from the polygons (pycocotools), for Mask R-CNN."""
    from pycocotools import mask as mask_utils
    h, w = sample.height, sample.width
    masks = np.zeros((len(sample.boxes), h, w), np.uint8)
    for i, polys in enumerate(polygons_per_instance(sample)):
        polys = [p.tolist() for p in polys if len(p) >= 6]
        if polys:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            masks[i] = mask_utils.decode(rle)
    return torch.from_numpy(masks)


def to_torchvision(sample: Sample, masks: bool = False, label_ids: Optional[np.ndarray] = None):
    """(image, target) as torchvision's detection models and references take them: float RGB
    in [0, 1], CHW; labels 1..C (0 is torchvision's background), or with `label_ids` (the
    dataset's category id of each contiguous label) the dataset's category ids; `area` (of the
    box, in this image's pixels) and `iscrowd` (0: crowd annotations are not targets), as
    torchvision's ConvertCocoPolysToMask gives them; everything on the image's device."""
    device = sample.image.device
    image = sample.image.permute(2, 0, 1).float().div_(255.0)
    labels = sample.labels.astype(np.int64)
    labels = label_ids[labels] if label_ids is not None else labels + 1
    boxes = torch.from_numpy(sample.boxes)
    target = {"boxes": boxes.to(device), "labels": torch.from_numpy(labels).to(device),
              "area": ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(device),
              "iscrowd": torch.zeros(len(labels), dtype=torch.int64, device=device),
              "image_id": sample.image_ids[0], "dst_transform": transform_record(sample)}
    if sample.kind == "collage":
        target["component_ids"] = list(sample.image_ids)
    if masks:
        target["masks"] = rasterize(sample).to(device)
    return image, target


def to_ultralytics(samples: List[Sample], imgsz: int, pad_value: float, files: List[str],
                   original_sizes: List[tuple]) -> dict:
    """A batch as Ultralytics' YOLODataset.collate_fn gives it for training: `img` uint8
    (B, 3, imgsz, imgsz) RGB, each sample letterboxed (centred on a canvas of `pad_value`, as
    YOLO's LetterBox places an image: the odd pixel of padding right and below); `cls` (N, 1)
    and `bboxes` (N, 4) normalised xywh, `batch_idx` (N,) float, all on the images' device;
    `im_file`, `ori_shape`, `resized_shape` and `ratio_pad` per sample (a collage names its
    first component's file and gives its own size as the original). `files`: each sample's
    file, `original_sizes`: each sample's source size (h, w)."""
    device = samples[0].image.device
    img = torch.full((len(samples), 3, imgsz, imgsz), int(round(pad_value)), dtype=torch.uint8,
                     device=device)
    boxes, classes, owner, ratio_pad = [], [], [], []
    for i, s in enumerate(samples):
        h, w = s.height, s.width
        if h > imgsz or w > imgsz:
            raise ValueError(f"a {s.kind} sample of {w}x{h} does not fit imgsz={imgsz}")
        top, left = (imgsz - h) // 2, (imgsz - w) // 2
        img[i, :, top:top + h, left:left + w] = s.image.permute(2, 0, 1)
        b = s.boxes.astype(np.float64) + [left, top, left, top]
        boxes.append(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                               b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) / imgsz)
        classes.append(s.labels)
        owner.append(np.full(len(s.boxes), i))
        oh, ow = original_sizes[i]
        ratio_pad.append(((h / oh, w / ow), (left, top)))
    to = dict(device=device)
    return {"img": img,
            "cls": torch.from_numpy(np.concatenate(classes).astype(np.float32)[:, None]).to(**to),
            "bboxes": torch.from_numpy(np.concatenate(boxes).astype(np.float32)).to(**to),
            "batch_idx": torch.from_numpy(np.concatenate(owner).astype(np.float32)).to(**to),
            "im_file": tuple(files), "ori_shape": tuple(original_sizes),
            "resized_shape": tuple((imgsz, imgsz) for _ in samples),
            "ratio_pad": tuple(ratio_pad), "dst_kind": samples[0].kind,
            "dst_transform": tuple(transform_record(s) for s in samples)}
