"""What is read: a detection dataset as a checked index of flat columns (index, columns), read
from COCO json (coco_json, coco_index) or detectron2's DatasetCatalog (catalog), cached once a
node and memory-mapped by every rank (index_cache); each image file's bytes, or why not
(image_files); every image decoded once against its entry (checks)."""
from .catalog import detectron2_dataset_index
from .coco_index import load_coco_index
from .index import DatasetError, DatasetIndex

__all__ = ["DatasetError", "DatasetIndex", "detectron2_dataset_index", "load_coco_index"]
