"""Batches of one kind, in order: which images (sampler, each random stream its own generator:
rng), the DALI pipelines that make them and the restarts past a bad image (batch_stream,
bad_images), the samples in detectron2's or torchvision's format (formats), each rank's share
(distributed), and the loader's state schema (state). The two kinds are named in kinds."""
from .kinds import COLLAGE, KINDS, REGULAR

__all__ = ["COLLAGE", "KINDS", "REGULAR"]
