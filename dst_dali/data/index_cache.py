"""A dataset's index, built once a node and memory-mapped by every rank, every later run and
every resume: one .npy file an array (dst_dali.data.columns), in a directory named after a key that
cannot serve stale data (the annotation file's real path, size, mtime and first and last
bytes, the image folder, the index format and the checking rules).

    $DST_DALI_CACHE, else $XDG_CACHE_HOME/dst_dali, else ~/.cache/dst_dali

The pages of a mapped index are shared by all processes of the node. One process builds, under
an flock on the key's lock file, which the kernel releases if the builder dies; the others wait
for it (up to `wait` seconds) and map what it published. A build is written to a temporary
directory and renamed into place with its manifest, so a cache is whole or absent; one that
does not open as its manifest says (a torn copy, a truncated file) is built again."""
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Callable, Optional, Tuple

import numpy as np
import xxhash

logger = logging.getLogger("dst_dali.index_cache")  # the name users filter logs by
FORMAT = 3       # the layout of the files; an index of another format is not read
WAIT = 3600.0    # seconds a process waits for another's build
_SAMPLE = 1 << 16  # bytes of the file's start and end in the key


def cache_root(cache_dir: Optional[str] = None) -> str:
    """Where indices are cached: node-local by default (not beside an annotation file that
    may sit on NFS)."""
    def expand(path):  # "~/x" or "$SCRATCH/x" as a shell would, not a folder named "~"
        return os.path.expanduser(os.path.expandvars(path))
    if cache_dir:
        return expand(cache_dir)
    if os.environ.get("DST_DALI_CACHE"):
        return expand(os.environ["DST_DALI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(expand(base), "dst_dali")


def coco_key(images_dir: str, annotations: str, rules: dict) -> dict:
    """What the index of a COCO file depends on. The file's first and last bytes catch a
    rewrite of the same size within one tick of the file system's clock."""
    st = os.stat(annotations)
    digest = hashlib.sha256()
    with open(annotations, "rb") as f:
        digest.update(f.read(_SAMPLE))
        f.seek(max(st.st_size - _SAMPLE, 0))
        digest.update(f.read(_SAMPLE))
    return {"format": FORMAT, "rules": rules, "annotations": os.path.realpath(annotations),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "sample": digest.hexdigest(), "images": os.path.realpath(images_dir)}


_VERSION = ("size", "mtime_ns", "inode", "sample")  # which version of the file a key is of


def _name(key: dict) -> str:
    text = json.dumps(key, sort_keys=True)
    return "index-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def digest(value) -> str:
    """blake2b of an array's bytes, or of a JSON value's canonical text (a loader state's
    dataset identity: kept as it was written)."""
    data = np.ascontiguousarray(value).reshape(-1).view(np.uint8) \
        if isinstance(value, np.ndarray) else json.dumps(value, sort_keys=True).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str) -> str:
    """xxh3-128 of a cached file's bytes (about 15 GB/s, blake2b 0.85), read in blocks rather
    than mapped, so that every start checks every byte of even an Objects365-size index and
    leaves none of its pages in the process (bench/dataset_scale.py measures it)."""
    h = xxhash.xxh3_128()
    block = bytearray(1 << 24)
    view = memoryview(block)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(block)
            if not n:
                return h.hexdigest()
            h.update(view[:n])


def open_index(path: str, key: dict, root: str):
    """The index cached at `path` for `key`, its arrays memory-mapped; None when it is absent,
    of another key, or does not open as its manifest says: a file missing, empty or torn,
    another dtype or shape, or bytes other than those published (each array's digest, and the
    meta's, are in the manifest: an array corrupted in place is never served)."""
    from .index import DatasetIndex
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
        if manifest.get("key") != key or digest(manifest["meta"]) != manifest["meta_digest"]:
            return None
        arrays = {}
        for name, (dtype, shape, published) in manifest["arrays"].items():
            file = os.path.join(path, f"{name}.npy")
            if file_digest(file) != published:
                return None
            array = np.load(file, mmap_mode="r" if int(np.prod(shape)) else None)
            if array.dtype.str != dtype or list(array.shape) != shape:
                return None
            arrays[name] = array
        return DatasetIndex.from_arrays(arrays, manifest["meta"], root, cache=path)
    except (OSError, ValueError, KeyError, TypeError, EOFError):  # EOFError: a 0-byte array
        return None


def _write(path: str, write: Callable) -> None:
    """A file written and flushed to disk: a power loss after the rename that publishes it
    cannot leave it empty."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _publish(index, key: dict, path: str) -> None:
    """Writes the index beside `path` and renames it into place, the manifest last; every file
    and the folder on disk before the rename. Any OSError (a full disk, a quota, a read-only
    or foreign folder) leaves no temporary folder behind and is the caller's to report."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        shapes = {}
        for name, array in index.arrays().items():
            array = np.ascontiguousarray(array)
            file = os.path.join(temporary, f"{name}.npy")
            _write(file, lambda f: np.save(f, array))
            shapes[name] = [array.dtype.str, list(array.shape), file_digest(file)]
        meta = index.meta()
        manifest = json.dumps({"key": key, "meta": meta, "meta_digest": digest(meta),
                               "arrays": shapes, "built": time.strftime("%Y-%m-%dT%H:%M:%S")})
        _write(os.path.join(temporary, "manifest.json"), lambda f: f.write(manifest.encode()))
        folder = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        os.rename(temporary, path)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _remove_stale(top: str, key: dict, keep: str) -> None:
    """Removes what earlier builds left: the temporary directories of builders that died (only
    the lock's holder writes one) and the indices of earlier versions of the same file and
    folder. A process still mapping one keeps its pages: unlinked files live until unmapped."""
    name = os.path.basename(keep)
    for entry in os.scandir(top):
        if entry.name.startswith(name + ".tmp-"):
            shutil.rmtree(entry.path, ignore_errors=True)
        if not entry.name.startswith("index-") or "." in entry.name or entry.name == name:
            continue
        try:
            with open(os.path.join(entry.path, "manifest.json")) as f:
                old = json.load(f)["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        # another version of the file, not the same file read with other rules (polygons
        # or not: two jobs of one node may want both)
        if (old.get("annotations"), old.get("images")) == (key["annotations"], key["images"]) \
                and any(old.get(field) != key[field] for field in _VERSION):
            shutil.rmtree(entry.path, ignore_errors=True)


def _lock(path: str, wait: float, ready: Callable[[], bool]) -> Optional[int]:
    """Holds the flock on `path`: its file descriptor, or None when `ready()` turned true
    while waiting (another process built the index)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        if ready():
            os.close(fd)
            return None
        if time.monotonic() > deadline:
            os.close(fd)
            raise TimeoutError(f"waited {wait:.0f} s for another process's build of the "
                               f"dataset index ({path} is locked)")
        if not told:
            logger.info("waiting for another process to build the dataset index (%s)", path)
            told = True
        time.sleep(0.05)


def find(key: dict, root: str, cache_dir: Optional[str] = None):
    """The cached index for `key`, or None."""
    return open_index(os.path.join(cache_root(cache_dir), _name(key)), key, root)


def load_or_build(key: dict, build: Callable[[], Tuple[object, bool]], root: str,
                  cache_dir: Optional[str] = None, wait: float = WAIT):
    """The cached index for `key`, or `build()`'s (index, cacheable), published when cacheable.
    `root`: the image folder the index's file names are relative to. A cache directory that
    cannot be written costs the cache, not the run."""
    top = cache_root(cache_dir)
    path = os.path.join(top, _name(key))
    index = open_index(path, key, root)
    if index is not None:
        return index
    try:
        os.makedirs(top, exist_ok=True)
        fd = _lock(path + ".lock", wait, lambda: open_index(path, key, root) is not None)
    except OSError as e:  # not writable, not a folder
        logger.warning("dataset index not cached (%s); set DST_DALI_CACHE to a writable "
                       "folder", e)
        return build()[0]
    if fd is None:
        return open_index(path, key, root)
    try:
        index = open_index(path, key, root)  # built while this process took the lock
        if index is not None:
            return index
        if os.path.exists(path):
            logger.warning("the dataset index cached in %s is not what was published (a torn, "
                           "emptied or changed file); building it again", path)
        shutil.rmtree(path, ignore_errors=True)
        _remove_stale(top, key, path)
        started = time.monotonic()
        index, cacheable = build()
        if not cacheable:
            return index
        try:
            _publish(index, key, path)
        except OSError as e:  # a full disk, a quota, a read-only folder: the run goes on
            logger.warning("dataset index not cached in %s (%s); this run reads it uncached",
                           top, e)
            return index
        logger.info("dataset index of %s built in %.1f s, cached at %s", key.get("annotations"),
                    time.monotonic() - started, path)
    finally:
        os.close(fd)  # releases the lock
    mapped = open_index(path, key, root)
    mapped.built = True
    return mapped
