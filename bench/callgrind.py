"""Instruction counts with valgrind's callgrind: figures that do not move with the machine's load,
beside the benches' times.

A bench runs a child of itself under `valgrind --tool=callgrind --instr-atstart=no`; the child
sets up, warms up, and wraps the part to count in `counted()`, which switches callgrind's
instrumentation on and off (a client request through a small helper library built here on
first use). The parent reads the dumps: instructions executed in each region (run_regions) or in
all of them (run), in total and by object file (our plugin, DALI, OpenCV, the interpreter, ...).
"""
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HELPER_SOURCE = r"""
#include <valgrind/callgrind.h>
void counting_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void counting_off(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""


def available() -> bool:
    """valgrind, its client-request header and a C compiler (to build the helper) are
    installed."""
    return bool(shutil.which("valgrind") and shutil.which("cc")
                and os.path.exists("/usr/include/valgrind/callgrind.h"))


def _helper() -> ctypes.CDLL:
    folder = os.path.join(ROOT, "build", "callgrind")
    path = os.path.join(folder, "counting.so")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        source = os.path.join(folder, f"counting.{os.getpid()}.c")
        with open(source, "w") as f:
            f.write(_HELPER_SOURCE)
        # built beside and renamed into place, as another process may be building it too
        partial = f"{path}.{os.getpid()}.tmp"
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", source, "-o", partial], check=True)
        os.replace(partial, path)
    return ctypes.CDLL(path)


@contextlib.contextmanager
def counted():
    """Instructions are counted inside the block only (no-op when not under callgrind: the
    client requests are then plain no-ops)."""
    helper = _helper()
    helper.counting_on()
    try:
        yield
    finally:
        helper.counting_off()


def run(argv, env=None) -> dict:
    """Runs `python argv...` under callgrind, from the repository root (so `-m bench.X`
    works); returns {"total": Ir, "by_object": {basename: Ir}}
    of the counted regions, summed over all the child's threads and dumps."""
    by_object = {}
    for _, dump in _dumps(argv, env):
        for obj, ir in dump.items():
            by_object[obj] = by_object.get(obj, 0) + ir
    return {"total": sum(by_object.values()), "by_object": by_object}


def run_regions(argv, names, env=None) -> dict:
    """As run(), but {name: {"total", "by_object"}} of each counted() region, the child having
    run one a name, in the order of `names`."""
    regions = [dump for number, dump in _dumps(argv, env) if number is not None]
    if len(regions) != len(names):
        raise RuntimeError(f"callgrind: {len(regions)} counted regions for {len(names)} "
                           f"({', '.join(names)})")
    return {name: {"total": sum(dump.values()), "by_object": dump}
            for name, dump in zip(names, regions)}


def _dumps(argv, env) -> list:
    """(n, {object: Ir}) of each dump of `python argv...` under callgrind, in order: n for the
    n-th a client request made (callgrind.out.PID.n), None for the one at exit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}.%p", sys.executable] + list(argv)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"callgrind run failed ({proc.returncode}): {' '.join(cmd)}\n"
                               f"{proc.stderr[-3000:]}")
        dumps = []
        for name in os.listdir(tmp):
            parts = name.split(".")  # callgrind, out, PID[, n]
            with open(os.path.join(tmp, name)) as f:
                dumps.append((int(parts[3]) if len(parts) > 3 else None,
                              self_cost_by_object(f)))
    return sorted(dumps, key=lambda d: float("inf") if d[0] is None else d[0])


def self_cost_by_object(lines) -> dict:
    """Ir spent in each object file's own code, from a callgrind output file (its format:
    `ob=`/`fn=` set the current function, `calls=` marks the next cost line as a callee's
    inclusive cost, which belongs to the callee's own records)."""
    names, obj, skip_next, costs = {}, "?", False, {}
    for line in lines:
        if line.startswith("ob="):
            obj = _compressed_name(line[3:].strip(), names)
        elif line.startswith("cob="):  # defines a name an `ob=` may later refer to
            _compressed_name(line[4:].strip(), names)
        elif line.startswith("calls="):
            skip_next = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                costs[obj] = costs.get(obj, 0) + int(parts[1])
    return {os.path.basename(k): v for k, v in costs.items()}


def _compressed_name(field: str, names: dict) -> str:
    """callgrind's name compression: "(3) /lib/x.so" defines id 3, "(3)" refers to it."""
    if field.startswith("("):
        key, _, rest = field.partition(")")
        if rest.strip():
            names[key] = rest.strip()
        return names.get(key, rest.strip())
    return field
