"""DALI pipeline graphs of dst_dali: reader -> decode -> (regular | collage) -> batch."""
