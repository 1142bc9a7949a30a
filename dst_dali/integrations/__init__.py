"""DST inside other programs' training loops: detectron2 (its trainer, hook and config
section). A loop that only iterates the loader needs nothing from here (dst_dali.loader finds
the model by itself)."""
