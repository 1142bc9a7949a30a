"""One decoder over a collage batch's k·B images, or k decoders of B images each (the collage
graph's today): the CPU side of that change, measured where no GPU is (docs/design.md, "The
decoder's batching"; the GPU figure is the first GPU run's to give).

Both graphs read the same files in the same order on the main thread (external_source, as
DSTLoader's feed) and decode them to RGB on DALI's CPU backend, one thread. Per batch of k·B
images: instructions from callgrind (repeatable under any load), and CPU seconds of the
process, the two graphs alternating run by run, each round's ratio kept. Before timing, the
first batch's images are compared: one decoder gives the k decoders' images, pixel for pixel.

    python -m bench.decoder_batching                          # about 4 minutes on 2 cores
    python -m bench.decoder_batching --quick --results-dir DIR
"""
import argparse
import itertools
import os
import sys
import time

import numpy as np

from .common import COCO128, RESULTS, write_results

GRAPHS = ("k_decoders", "one_decoder")


def build(graph: str, files, k: int, batch: int, images: bool = False):
    """graph's pipeline over `files` (cycled from the start): k decoders of `batch` images, or
    one of k·batch. Each run gives the decoded images (images=True) or their shapes."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
    order = itertools.cycle(files)
    split = graph == "k_decoders"

    def feed():
        encoded = [np.fromfile(next(order), np.uint8) for _ in range(k * batch)]
        return [encoded[j * batch:(j + 1) * batch] for j in range(k)] if split else encoded

    @pipeline_def(batch_size=batch if split else k * batch, num_threads=1, device_id=None,
                  exec_dynamic=True, prefetch_queue_depth=1)
    def pipe():
        inputs = fn.external_source(source=feed, num_outputs=k if split else None, batch=True)
        decoded = [fn.decoders.image(e, output_type=types.RGB)
                   for e in (inputs if split else [inputs])]
        return tuple(d if images else d.shape() for d in decoded)

    p = pipe()
    p.build()
    return p


def decoded_images(pipe) -> list:
    """One run's images, in feed order (the k decoders' outputs one after another)."""
    return [np.array(out[i]) for out in pipe.run() for i in range(len(out))]


def count_child(args, files):
    """Under callgrind: each graph in turn built, warmed up, then args.counted batches counted
    in a region of its own (one child: DALI's start-up there takes seconds)."""
    from . import callgrind
    for graph in GRAPHS:
        pipe = build(graph, files, args.k, args.batch)
        pipe.run()
        with callgrind.counted():
            for _ in range(args.counted):
                pipe.run()
        del pipe  # its threads go before the next graph's are counted


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8, help="B: collages a batch")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--batches", type=int, default=10, help="batches a timed run")
    ap.add_argument("--counted", type=int, default=3, help="batches counted by callgrind")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke run: the output's form")
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--count", action="store_true", help=argparse.SUPPRESS)  # callgrind child
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    folder = os.path.join(COCO128, "images")
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    if args.count:
        return count_child(args, files)
    if args.quick:
        args.batch, args.rounds, args.batches, args.counted = 2, 2, 2, 1
        if os.path.abspath(args.results_dir) == os.path.abspath(RESULTS):
            ap.error("--quick writes only to a --results-dir of its own")

    split, one = (decoded_images(build(g, files, args.k, args.batch, images=True))
                  for g in GRAPHS)
    same = len(split) == len(one) == args.k * args.batch and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(split, one))
    if not same:
        raise RuntimeError("one decoder over k·B images did not give the k decoders' images")

    pipes = {g: build(g, files, args.k, args.batch) for g in GRAPHS}
    for pipe in pipes.values():
        pipe.run()  # warm-up
    cpu = {g: [] for g in GRAPHS}
    for r in range(args.rounds):
        for g in (GRAPHS if r % 2 == 0 else GRAPHS[::-1]):
            start = time.process_time()
            for _ in range(args.batches):
                pipes[g].run()
            cpu[g].append((time.process_time() - start) / args.batches)
    ratios = [o / s for o, s in zip(cpu["one_decoder"], cpu["k_decoders"])]

    counts = {}
    if not args.no_callgrind:
        from . import callgrind
        if not callgrind.available():
            raise RuntimeError("valgrind and its callgrind.h are needed (or --no-callgrind)")
        print(f"callgrind: {', '.join(GRAPHS)} ...", flush=True)
        regions = callgrind.run_regions(["-m", __spec__.name, "--count", "--k", str(args.k),
                                         "--batch", str(args.batch), "--counted",
                                         str(args.counted)], GRAPHS)
        counts = {g: c["total"] / args.counted for g, c in regions.items()}

    rows = [{"graph": g, "decoders": args.k if g == "k_decoders" else 1,
             "images_per_decoder": args.batch if g == "k_decoders" else args.k * args.batch,
             "cpu_ms": 1e3 * float(np.median(cpu[g])), "cpu_ms_min": 1e3 * min(cpu[g]),
             "cpu_ms_max": 1e3 * max(cpu[g]), "instructions": counts.get(g)} for g in GRAPHS]
    notes = [f"k = {args.k}, B = {args.batch}: {args.k * args.batch} coco128 images a batch, "
             "decoded to RGB by DALI's CPU backend at 1 thread, files read on the main thread",
             "one decoder gave the k decoders' images, pixel for pixel (first batch)",
             f"CPU a batch, one decoder over k decoders: median {np.median(ratios):.3f}, range "
             f"[{min(ratios):.3f}, {max(ratios):.3f}] over {args.rounds} rounds of "
             f"{args.batches} batches, the graphs alternating"]
    if counts:
        notes.append(f"instructions a batch (callgrind, {args.counted} batches), one decoder "
                     f"over k decoders: {counts['one_decoder'] / counts['k_decoders']:.4f}")
    columns = [("graph", "graph"), ("decoders", "decoders"),
               ("images_per_decoder", "images a decoder"), ("cpu_ms", "CPU ms a batch"),
               ("cpu_ms_min", "min"), ("cpu_ms_max", "max"),
               ("instructions", "instructions a batch")]
    path = write_results("decoder_batching", rows, columns,
                         {"k": args.k, "batch": args.batch, "rounds": args.rounds,
                          "batches": args.batches, "ratios": ratios, "same_images": same},
                         notes, results_dir=args.results_dir, script=__file__, argv=argv)
    print(open(path).read())
    return rows


if __name__ == "__main__":
    main()
