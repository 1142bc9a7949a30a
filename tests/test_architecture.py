"""The package's rooms and their one dependency direction (docs/design.md, "The rooms"): every
import of every module, read from its source (lazy imports inside functions included), goes to
its own room or to a room below; rooms side by side do not see each other; no module is in an
import cycle; no module of the package imports a command."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (layer, room, the modules and packages in it), bottom first: the order of docs/design.md
ROOMS = [
    (0, "op", ["dst_dali.op"]),
    (0, "data", ["dst_dali.data"]),
    (1, "pipelines", ["dst_dali.pipelines"]),
    (2, "stream", ["dst_dali.stream"]),
    (3, "feedback", ["dst_dali.feedback"]),
    (4, "loader", ["dst_dali.loader", "dst_dali.settings", "dst_dali.checkpoint"]),
    (5, "integrations", ["dst_dali.integrations"]),
    # what users run or import by name: commands, and the public paths of moved modules
    (6, "commands", ["dst_dali.check_dataset", "dst_dali.calibrate_tau", "dst_dali.plots",
                     "dst_dali.diagnose_feedback", "dst_dali.trainer", "dst_dali.config",
                     "dst_dali.ultralytics"]),
    (7, "public face", ["dst_dali"]),
]
COMMANDS = ["dst_dali.check_dataset", "dst_dali.calibrate_tau", "dst_dali.plots",
            "dst_dali.diagnose_feedback"]
SOURCES = {"dst_dali": os.path.join(ROOT, "dst_dali"),
           "dst_dali.pipelines": os.path.join(ROOT, "pipelines")}


def room_of(module: str):
    """(layer, room) of a module: the longest declared prefix."""
    best = None
    for layer, room, prefixes in ROOMS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and \
                    (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer, room)
    return None if best is None else best[1:]


def package_modules():
    """{module name: source path} of every module of the package, as installed."""
    out = {}
    for package, top in SOURCES.items():
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel = os.path.relpath(folder, top)
            parts = [package] + ([] if rel == "." else rel.split(os.sep))
            for f in files:
                if not f.endswith(".py"):
                    continue
                name = ".".join(parts + ([] if f == "__init__.py" else [f[:-3]]))
                if name.startswith("dst_dali.pipelines") and package == "dst_dali":
                    continue
                out[name] = os.path.join(folder, f)
    return out


def imports_of(name: str, path: str, modules) -> set:
    """The package modules `name` imports, anywhere in its source."""
    is_package = path.endswith("__init__.py")
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = ".".join(base[:len(base) - node.level + 1] +
                                ([node.module] if node.module else []))
            else:
                stem = node.module
            # `from package import module` names a module; `from module import name` does not
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "dst_dali" or t.startswith("dst_dali."))
    found.discard(name)
    return found


def violations(graph) -> list:
    out = []
    for module, targets in graph.items():
        here = room_of(module)
        for target in sorted(targets):
            there = room_of(target)
            if there is None:
                continue  # reported by test_every_module_has_a_room
            if there[1] == here[1]:
                continue
            if there[0] >= here[0]:
                out.append(f"{module} ({here[1]}, layer {here[0]}) imports {target} "
                           f"({there[1]}, layer {there[0]})")
    return out


def cycles(graph) -> list:
    """Each import cycle, once, as the modules on it (Tarjan's strongly connected parts)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph():
    modules = package_modules()
    # a package's __init__ imports what it re-exports; that is no dependency of its modules
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_room():
    assert [m for m in package_modules() if room_of(m) is None] == []


def test_imports_follow_the_declared_direction():
    assert violations(import_graph()) == []


def test_no_import_cycle():
    graph = import_graph()
    # the package's own __init__ is imported by every module implicitly; its explicit imports
    # (the operator, the lazy public names) are a face, not a dependency of what it names
    graph = {m: {t for t in ts if t != "dst_dali"} for m, ts in graph.items()
             if m != "dst_dali"}
    assert cycles(graph) == []


def test_nothing_imports_a_command():
    graph = import_graph()
    users = {m: sorted(ts & set(COMMANDS)) for m, ts in graph.items()
             if ts & set(COMMANDS) and m not in COMMANDS}
    assert users == {}


def test_a_planted_back_import_is_caught(tmp_path):
    """The checks can fail: a stream module importing the loader, a data module importing the
    operator's room beside it, and a two-module cycle are each found."""
    graph = import_graph()
    back = dict(graph, **{"dst_dali.stream.sampler": graph["dst_dali.stream.sampler"] |
                          {"dst_dali.loader"}})
    assert any("dst_dali.stream.sampler (stream, layer 2) imports dst_dali.loader" in v
               for v in violations(back))
    sideways = dict(graph, **{"dst_dali.data.index": graph["dst_dali.data.index"] |
                              {"dst_dali.op.collage"}})
    assert any("dst_dali.data.index" in v for v in violations(sideways))
    loop = dict(graph, **{"dst_dali.stream.rng": graph["dst_dali.stream.rng"] |
                          {"dst_dali.stream.sampler"}})
    assert ["dst_dali.stream.rng", "dst_dali.stream.sampler"] in cycles(loop)
    # and from the source itself: a relative import written into a copy of a module
    planted = tmp_path / "sampler.py"
    planted.write_text(open(package_modules()["dst_dali.stream.sampler"]).read() +
                       "\n\ndef _planted():\n    from ..loader import DSTLoader\n")
    modules = package_modules()
    assert "dst_dali.loader" in imports_of("dst_dali.stream.sampler", str(planted), modules)


@pytest.mark.slow
def test_the_public_paths_import():
    """What users and committed files name keeps working after the package got its rooms."""
    code = "\n".join([
        "import dst_dali, importlib",
        "for name in dst_dali.__all__: getattr(dst_dali, name)",
        "from dst_dali.checkpoint import (rng_states, set_rng_states, check_loader_state,",
        "                                 STATE_VERSION, SEQUENCE_KEYS)",
        "from dst_dali.trainer import DSTTrainer, DSTHook, build_dst_loader, build_controller",
        "from dst_dali.config import load_config, add_dst_config, check_dst_config",
        "from dst_dali.plots import plot_loss_shares, plot_share_distribution, plot_feedback",
        "for cmd in ('check_dataset', 'calibrate_tau', 'plots', 'diagnose_feedback'):",
        "    assert callable(importlib.import_module('dst_dali.' + cmd).main)",
    ])
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for cmd in ("check_dataset", "calibrate_tau", "plots", "diagnose_feedback"):
        r = subprocess.run([sys.executable, "-m", f"dst_dali.{cmd}", "--help"], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout, (cmd, r.stderr[-2000:])


def test_the_commands_over_finished_runs_need_no_torch(tmp_path):
    """calibrate_tau, plots and diagnose_feedback read a run's record (CSV or JSON): they run
    where torch cannot be imported, and so start without its seconds of import."""
    import numpy as np

    from dst_dali.feedback.record import FeedbackRecord
    rng = np.random.default_rng(0)
    for rank in (0, 1):
        record = FeedbackRecord(str(tmp_path), rank)
        for i in range(40):
            shares = rng.dirichlet([1, 2, 3])
            record.add({"iteration": i, "kind": "regular", "next": "regular",
                        "decided_by": "control", "r": float(shares[0]),
                        **dict(zip(("small", "medium", "large"), map(float, shares))),
                        "n_small": 2, "n_medium": 3, "n_large": 1})
        record.close()
    blocked = "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; " \
              "runpy.run_module(sys.argv[0], run_name='__main__')"
    for argv in (["dst_dali.calibrate_tau", str(tmp_path)],
                 ["dst_dali.plots", "--baseline", str(tmp_path), "--dst", str(tmp_path),
                  "--tau", "0.1", "--out", str(tmp_path / "figures")],
                 ["dst_dali.diagnose_feedback", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-c", blocked, *argv], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 0, (argv[0], r.stderr[-2000:])
    assert (tmp_path / "figures").is_dir()


def test_the_loaders_settings_are_checked_without_torch():
    """LoaderSettings names the signals and decision scopes it accepts from the signal table,
    not from the probes that measure them: checking settings, as a benchmark's decode-only
    child does, needs no torch."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from dst_dali.settings import LoaderSettings\n"
            "LoaderSettings(batch_size=2, signal='cls', decision='global')\n"
            "try:\n"
            "    LoaderSettings(batch_size=2, signal='mask')\n"
            "except ValueError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "signal='mask': must be one of ('reg', 'cls', 'joint', 'input')" in r.stdout


@pytest.mark.parametrize("module,name", [
    ("dst_dali.loader", "dst_dali.loader"), ("dst_dali.data.index", "dst_dali.dataset"),
    ("dst_dali.feedback.controller", "dst_dali.controller"),
    ("dst_dali.data.index_cache", "dst_dali.index_cache"),
    ("dst_dali.data.coco_index", "dst_dali.coco_index"),
    ("dst_dali.stream.batch_stream", "dst_dali.batch_stream"),
    ("dst_dali.integrations.detectron2.trainer", "dst_dali.trainer")])
def test_logger_names_users_filter_by_are_kept(module, name):
    import importlib
    assert importlib.import_module(module).logger.name == name
