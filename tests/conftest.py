import os
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
