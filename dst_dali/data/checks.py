"""The dataset checks as a library: every image decoded once by DALI's decoder (the loader's) and
compared with its entry's size; and the cause out of a DALI error report. The command
`python -m dst_dali.check_dataset` prints what they find; the loader uses them to name a bad
image when a batch fails."""
from typing import List, Tuple

from .image_files import MAX_PIXELS, byte_limit, file_bytes


def dali_cause(error: Exception) -> str:
    """The operator's own message out of DALI's error report (which opens with a traceback of
    the pipeline definition): e.g. "Failed to decode sample #0 : 000000000009.jpg"."""
    text = str(error)
    cause = text.split("encountered:", 1)[-1]
    lines = [ln.strip() for ln in cause.splitlines()
             if ln.strip() and "pipeline object is no longer valid" not in ln]
    return " ".join(lines) or text


def decode_sizes(paths: List[str], num_threads: int = 2, batch: int = 32,
                 progress: bool = False, header=None,
                 max_pixels: int = MAX_PIXELS) -> List[Tuple[str, object]]:
    """For each file, ("ok", (height, width)) as DALI's decoder (the loader's) decodes it, or
    ("error", DALI's message). A batch that fails is decoded file by file to find the culprit.
    header: a graph function of the encoded file giving the (H, W, C) its header gives; then
    each ok result is ("ok", (height, width), (header's height, width))."""
    import numpy as np
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
    from tqdm import tqdm

    def read(path):  # the feed's own reading: no FIFO blocks it, no file outgrows memory
        data, why = file_bytes(path, byte_limit(max_pixels))
        if why is not None:
            raise OSError(f"{path} {why}")
        return data

    def run(files):
        @pipeline_def(batch_size=len(files), num_threads=num_threads, device_id=None,
                      prefetch_queue_depth=1)
        def graph():
            encoded = fn.external_source(source=lambda: [read(f) for f in files], batch=True)
            decoded = fn.decoders.image(encoded, output_type=types.RGB).shape()
            return (decoded, header(encoded)) if header else (decoded,)
        pipe = graph()
        pipe.build()
        outputs = pipe.run()
        return [("ok", *(tuple(int(v) for v in np.array(o[i])[:2]) for o in outputs))
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
                out += decode_sizes(files, num_threads, batch=1, header=header,
                                    max_pixels=max_pixels)
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
