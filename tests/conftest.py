import os
from collections import Counter
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Under `make test` the workers share the machine's cores: torch's CPU kernels (and the programs
# a test starts) get their share, or every worker's thread pool spins on all of them
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(share))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a model, runs a bench or starts programs "
                                       "(seconds to a minute); -m 'not slow' for a quick run")


def pytest_collection_modifyitems(config, items):
    """The files with the most slow tests first: under make test's workers each file goes whole
    to a worker about to run out of work, in this order (--no-loadscope-reorder; else by their
    number of tests), so that the short files fill the end instead of one worker finishing a
    long file alone."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each file's order kept


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory):
    """The dataset index cache of this test session (and of the programs it starts), not the
    user's."""
    path = str(tmp_path_factory.mktemp("index_cache"))
    saved = os.environ.get("DST_DALI_CACHE")
    os.environ["DST_DALI_CACHE"] = path
    yield path
    if saved is None:
        del os.environ["DST_DALI_CACHE"]
    else:
        os.environ["DST_DALI_CACHE"] = saved


@pytest.fixture(scope="session")
def coco128():
    root = os.path.join(ROOT, "data", "coco128")
    return SimpleNamespace(root=root, images=os.path.join(root, "images"),
                           annotations=os.path.join(root, "instances.json"))
