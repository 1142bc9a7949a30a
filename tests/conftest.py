import os
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def coco128():
    root = os.path.join(ROOT, "data", "coco128")
    return SimpleNamespace(root=root, images=os.path.join(root, "images"),
                           annotations=os.path.join(root, "instances.json"))
