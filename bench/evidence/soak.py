"""Soak: the loader alone (no model) through what a multi-day run meets. Two ranks (two
DSTLoaders, shards 0 and 1 of 2, stepped in lockstep in one process, as a job that dies and
resumes as a whole), 3000 iterations, the feedback deciding each batch from its boxes (signal
"input", tau 0.3), bad_images="skip", a file of every fault kind planted, some mid-run:

    python -m bench.evidence.soak [--iters 3000] [--work build/soak]    # about 6 minutes on 2 cores

Two runs from fresh copies of data/coco128: "straight", never stopped, and "killed", which
SIGKILLs itself at KILLS and resumes from its last checkpoint (every CHECKPOINT iterations) each
time. The delivered streams (each rank's batch kind, image ids and a hash of every sample's
pixels and boxes) must be equal. From the straight run: every good image is read every epoch of
each stream, and the RSS after warm-up grows less than 5%. A fault lands on disk at a fixed
iteration; a kill comes at least a checkpoint period after any fault, so the files a resumed
run reads again are those the straight run read (a file that changes within the prefetch of
a restart would differ between the runs, as it would in any loader). Resumable run by run:
a finished run is kept in WORK/RUN/done.json.
"""
import argparse
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np

from ..common import COCO128, RESULTS, ROOT, write_results

RANKS, TAU, SEED = 2, 0.3, 11
MAX_PIXELS = 2_000_000  # coco128's images are at most 640x640
# For 3000 iterations (others scale them): (iteration it lands at, kind, which image: its place
# among coco128's entries). Iteration 0: in the data from the start (entry faults among them).
FAULTS = [(0, "smaller", 3), (0, "larger", 5), (0, "corrupt", 7), (0, "entry_over_limit", 9),
          (600, "missing", 11), (1300, "unreadable", 13), (2000, "header_over_limit", 15),
          (2600, "empty", 17)]
KILLS, CHECKPOINT, ITERS = [1037, 1737, 2337], 100, 3000
RUNS = ("straight", "killed")


def schedule(iters: int):
    """(faults, kills, checkpoint period) for a run of `iters` iterations."""
    scale = iters / ITERS
    return ([(round(at * scale), kind, place) for at, kind, place in FAULTS],
            [round(k * scale) for k in KILLS], max(1, round(CHECKPOINT * scale)))


# -- the data and its faults ------------------------------------------------------------------
def fresh_data(run_dir: str) -> dict:
    """A copy of coco128 in run_dir with the iteration-0 faults planted: the COCO entries of
    every image (its place -> entry)."""
    import cv2
    with open(os.path.join(COCO128, "instances.json")) as f:
        coco = json.load(f)
    images = os.path.join(run_dir, "images")
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(os.path.join(COCO128, "images"), images)
    entries = coco["images"]
    for at, kind, place in FAULTS:
        if at:
            continue
        entry = entries[place]
        path = os.path.join(images, entry["file_name"])
        if kind == "smaller":  # the file replaced by a half-size one, its entry kept
            im = cv2.imread(path)
            cv2.imwrite(path, cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2)))
        elif kind == "larger":  # the entry says 2/3 of the file's size, boxes scaled along
            entry["width"], entry["height"] = entry["width"] * 2 // 3, entry["height"] * 2 // 3
            for a in coco["annotations"]:
                if a["image_id"] == entry["id"]:
                    a["bbox"] = [v * 2 / 3 for v in a["bbox"]]
                    a.pop("segmentation", None)
        elif kind == "corrupt":  # a JPEG's first bytes, then noise
            with open(path, "r+b") as f:
                f.seek(600)
                f.write(np.random.default_rng(place).bytes(4000))
        elif kind == "entry_over_limit":
            entry["width"], entry["height"] = 4000, 4000
    with open(os.path.join(run_dir, "instances.json"), "w") as f:
        json.dump(coco, f)
    return {place: entry for place, entry in enumerate(entries)}


def land_faults(run_dir: str, iteration: int, entries: dict, faults: list) -> None:
    """The mid-run faults due at `iteration`, on disk."""
    import cv2
    for at, kind, place in faults:
        if at != iteration or not at:
            continue
        path = os.path.join(run_dir, "images", entries[place]["file_name"])
        if kind == "missing":
            os.remove(path)
        elif kind == "unreadable":  # open() fails (a directory: root reads any mode bits)
            os.remove(path)
            os.mkdir(path)
        elif kind == "header_over_limit":  # replaced by a 1500x1500 file, its entry kept
            cv2.imwrite(path, np.full((1500, 1500, 3), 128, np.uint8))
        elif kind == "empty":
            open(path, "w").close()


# -- a run: a worker process from the last checkpoint up to an iteration ----------------------
def loaders(run_dir: str):
    from dst_dali import DSTLoader, FeedbackController
    images = os.path.join(run_dir, "images")
    annotations = os.path.join(run_dir, "instances.json")
    made = []
    for rank in range(RANKS):
        loader = DSTLoader(images, annotations, batch_size=2, k=4, min_size=(320,),
                           max_size=533, device="cpu", seed=SEED, shard_id=rank,
                           num_shards=RANKS, output="torchvision", bad_images="skip",
                           max_pixels=MAX_PIXELS, num_threads=1,
                           cache_dir=os.path.join(run_dir, "cache"))
        made.append(loader.watch(None, signal="input", controller=FeedbackController(TAU)))
    return made


def record(iteration: int, rank: int, loader, batch) -> dict:
    images, targets = batch
    digest = hashlib.blake2b(digest_size=12)
    for image, target in zip(images, targets):  # their buffers: no copy of a contiguous array
        digest.update(np.ascontiguousarray(image.numpy()))
        digest.update(np.ascontiguousarray(target["boxes"].numpy()))
    return {"it": iteration, "rank": rank, "kind": loader.last_kind,
            "ids": [t.get("component_ids", [t["image_id"]]) for t in targets],
            "hash": digest.hexdigest()}


def work(run_dir: str, until: int, total: int) -> None:
    """Runs iterations from the last checkpoint to `until`; SIGKILLs itself there unless it is
    the end (a crash: what came after the checkpoint is lost and made again)."""
    import psutil
    faults, _, period = schedule(total)
    with open(os.path.join(run_dir, "entries.json")) as f:
        entries = {int(k): v for k, v in json.load(f).items()}
    ranks = loaders(run_dir)
    checkpoint = os.path.join(run_dir, "checkpoint.pkl")
    start, offset = 0, 0
    if os.path.exists(checkpoint):
        with open(checkpoint, "rb") as f:
            saved = pickle.load(f)
        for loader, state in zip(ranks, saved["loaders"]):
            loader.load_state_dict(state)
        start, offset = saved["iteration"], saved["records"]
    records = os.path.join(run_dir, "records.jsonl")
    with open(records, "a+b") as out:
        out.truncate(offset)
    rss = []
    with open(records, "a") as out:
        for it in range(start, until):
            land_faults(run_dir, it, entries, faults)
            if it % period == 0 and it > start:
                out.flush()
                with open(checkpoint + ".tmp", "wb") as f:
                    pickle.dump({"iteration": it, "records": out.tell(),
                                 "loaders": [loader.state_dict() for loader in ranks]}, f)
                os.replace(checkpoint + ".tmp", checkpoint)
            for rank, loader in enumerate(ranks):
                out.write(json.dumps(record(it, rank, loader, loader.next_batch())) + "\n")
            if it % max(1, period // 2) == 0:
                rss.append([it, psutil.Process().memory_info().rss])
    with open(os.path.join(run_dir, f"rss_from_{start}.json"), "w") as f:
        json.dump(rss, f)
    if until < total:
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.path.join(run_dir, "done.json"), "w") as f:
        json.dump({"set_aside": [{ranks[0].index.image_ids[p]: why
                                  for p, why in loader.set_aside.items()} for loader in ranks],
                   "resumed_from": start, "iters": total,
                   "dealt": dealt(ranks)}, f)
    for loader in ranks:
        loader.close()


def run(args, name: str) -> dict:
    run_dir = os.path.join(args.work, name)
    done = os.path.join(run_dir, "done.json")
    if not os.path.exists(done):
        entries = fresh_data(run_dir)
        with open(os.path.join(run_dir, "entries.json"), "w") as f:
            json.dump(entries, f)
        stops = schedule(args.iters)[1] if name == "killed" else []
        for until in stops + [args.iters]:
            print(f"{name}: up to iteration {until}", flush=True)
            r = subprocess.run([sys.executable, "-m", __spec__.name, "--worker", run_dir,
                                "--until",
                                str(until), "--iters", str(args.iters)], cwd=ROOT)
            expected = -signal.SIGKILL if until < args.iters else 0
            if r.returncode != expected:
                raise SystemExit(f"{name}: the worker up to {until} ended with {r.returncode}")
    with open(done) as f:
        result = json.load(f)
    with open(os.path.join(run_dir, "records.jsonl")) as f:
        result["records"] = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "rss_from_0.json")) as f:  # the first worker's
        result["rss"] = json.load(f)
    return result


# -- the checks --------------------------------------------------------------------------------
def dealt(ranks: list) -> list:
    """Per rank and stream: the groups a fresh sampler of the loader's settings deals, as image
    ids, as far as the stream delivered; and the images of the usable set left out of some
    epoch's deal, over all ranks."""
    out = [{} for _ in ranks]
    for kind in ("regular", "collage"):
        samplers = [loader.streams[kind].new_sampler() for loader in ranks]
        for loader, sampler, part in zip(ranks, samplers, out):
            ids = loader.index.image_ids
            part[kind] = {"groups": [[ids[p] for p in next(sampler)]
                                     for _ in range(loader.streams[kind].delivered)],
                          "epochs": sampler._next_epoch}
        usable = set(np.concatenate(list(samplers[0]._members.values())).tolist())
        epochs = min(part[kind]["epochs"] for part in out)
        out[0][kind]["left_out_of_a_deal"] = sum(
            len(usable - set(np.concatenate([s._shard_order(e) for s in samplers]).tolist()))
            for e in range(epochs))
    return out


def reads_every_epoch(result: dict, aside: set) -> dict:
    """Per stream: the delivered groups against the dealt ones. Every slot must hold the dealt
    image, unless that image was set aside (its replacement may go bad later, as any image):
    with deals that cover every image every epoch, every good image is read every epoch."""
    out = {}
    for kind in ("regular", "collage"):
        wrong, replaced, epochs = 0, 0, []
        for rank in range(RANKS):
            expected = result["dealt"][rank][kind]
            epochs.append(expected["epochs"])
            got = [[i for ids in r["ids"] for i in ids] for r in result["records"]
                   if r["rank"] == rank and r["kind"] == kind]
            for group, deal in zip(got, expected["groups"]):
                for have, want in zip(group, deal):
                    if have == want:
                        continue
                    replaced += 1
                    wrong += want not in aside
        out[kind] = {"epochs": min(epochs),
                     "left_out_of_a_deal": result["dealt"][0][kind]["left_out_of_a_deal"],
                     "replaced": replaced, "wrong": wrong}
    return out


def report(args, results: dict) -> dict:
    """Writes RESULTS/NAME.{md,json}; returns the summary, its "pass" the verdict."""
    faults, kills, period = schedule(args.iters)
    straight, killed = results["straight"], results["killed"]
    key = [(r["it"], r["rank"]) for r in straight["records"]]
    same = sum(a == b for a, b in zip(straight["records"], killed["records"]))
    same *= key == [(r["it"], r["rank"]) for r in killed["records"]]
    with open(os.path.join(args.work, "straight", "entries.json")) as f:
        entries = json.load(f)
    planted = {str(entries[str(place)]["id"]): (at, kind) for at, kind, place in faults}
    aside = {i: why for part in straight["set_aside"] for i, why in part.items()}
    aside_killed = {i: why for part in killed["set_aside"] for i, why in part.items()}
    epochs = reads_every_epoch(straight, {int(i) for i in aside})
    warm_up = args.iters // 10
    warm = [v for it, v in straight["rss"] if it >= warm_up]
    growth = (max(warm) / warm[0] - 1) * 100
    collages = sum(r["kind"] == "collage" for r in straight["records"]) / len(key)
    rows = [{"fault": kind, "image": i, "at": at, "straight": aside.get(i, "NOT set aside"),
             "killed": aside_killed.get(i, "NOT set aside")} for i, (at, kind) in planted.items()]
    notes = [
        f"{args.iters} iterations x {RANKS} ranks, batch 2, k 4, seed {SEED}, feedback from "
        f"the batches' boxes (tau {TAU}): {collages:.0%} of the batches were collages.",
        f"Killed run: SIGKILL at iterations {kills}, each resumed from the checkpoint before "
        f"(every {period}). Delivered batches equal to the straight run's: {same} of "
        f"{len(key)} (kind, ids and a hash of the pixels and boxes of every sample).",
        "Set aside beside the planted files: straight "
        f"{sorted(set(aside) - set(planted))}, killed {sorted(set(aside_killed) - set(planted))}.",
        "Every good image read every epoch (straight run): " + "; ".join(
            f"{kind}: {v['epochs']} epochs dealt, images left out of an epoch's deal "
            f"{v['left_out_of_a_deal']}, slots of a set-aside image given another "
            f"{v['replaced']}, slots not as dealt otherwise {v['wrong']}"
            for kind, v in epochs.items()) + ".",
        f"RSS (straight run) from iteration {warm_up} on: {warm[0] / 2**20:.0f} MiB, at most "
        f"{max(warm) / 2**20:.0f} MiB (+{growth:.1f}%; goal < 5%).",
    ]
    summary = {"equal": same, "compared": len(key), "rss_growth_pct": growth,
               "epochs": epochs, "collage_share": collages}
    summary["pass"] = (same == len(key) and growth < 5 and
                       all(v["wrong"] == v["left_out_of_a_deal"] == 0 for v in epochs.values())
                       and all(i in aside and i in aside_killed for i in planted))
    write_results(args.name, rows, [("fault", "fault"), ("image", "image id"),
                                    ("at", "lands at iteration"), ("straight", "straight run"),
                                    ("killed", "killed and resumed")],
                  {"summary": summary, "faults": faults, "kills": kills}, notes=notes,
                  results_dir=args.results_dir)
    print("\n".join(notes))
    print("soak:", "PASS" if summary["pass"] else "FAIL")
    return summary


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=ITERS)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "soak"))
    ap.add_argument("--results-dir", default=RESULTS)
    ap.add_argument("--name", default="soak")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--until", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return work(args.worker, args.until, args.iters)
    return report(args, {name: run(args, name) for name in RUNS})


if __name__ == "__main__":
    main()
