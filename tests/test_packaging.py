"""The package as users install it: the operator with DALI alone, the loader's parts named
when their requirement is missing, and the public API in one place."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WITHOUT_TORCH = r"""
import sys
for name in ("torch", "torchvision", "detectron2"):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import numpy as np
import dst_dali
from nvidia.dali import fn, pipeline_def

@pipeline_def(batch_size=1, num_threads=1, device_id=None)
def pipe():
    images = [fn.external_source(source=lambda: [np.full((8, 12, 3), j, np.uint8)],
                                 batch=True, layout="HWC") for j in range(4)]
    return dst_dali.collage_stitch(images, short_side=8, max_size=16).image

p = pipe()
p.build()
(out,) = p.run()
print(np.array(out[0]).shape)
try:
    dst_dali.DSTLoader
except ImportError as e:
    print("ImportError:", e)
"""


def test_operator_without_torch_and_a_clear_message_for_the_loader():
    r = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "(8, 12, 3)"  # a 2 x 2 collage of 8 x 12 images at half scale
    assert lines[1] == ("ImportError: dst_dali.DSTLoader needs torch and torchvision: "
                        "pip install 'dst_dali[loader]'")


def test_public_api():
    import dst_dali
    from dst_dali.feedback.controller import FeedbackController
    from dst_dali.loader import DSTLoader
    from dst_dali.trainer import DSTHook
    assert dst_dali.DSTLoader is DSTLoader and dst_dali.FeedbackController is FeedbackController
    assert dst_dali.DSTHook is DSTHook
    for name in dst_dali.__all__:
        assert getattr(dst_dali, name) is not None
        assert getattr(dst_dali, name).__doc__, name  # every public piece says what it is


def test_build_requirements_pin_the_installed_dali():
    import nvidia.dali
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert f'"nvidia-dali-cuda120=={nvidia.dali.__version__}"' in text
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert f'"nvidia-dali-cuda120=={nvidia.dali.__version__}"' in setup


NO_ULTRALYTICS = r"""
import sys
import dst_dali
from dst_dali import DSTLoader, FeedbackController
import dst_dali.check_dataset, dst_dali.data.yolo_labels
print(sorted(m for m in sys.modules if m.split(".")[0] == "ultralytics"))
"""


def test_ultralytics_is_tested_beside_one_opencv_and_never_imported_by_the_package():
    """make install puts Ultralytics (AGPL-3.0) in the test environment without its own
    requirements: one OpenCV distribution stays, the pinned headless one, and cv2 is its. The
    package's own imports, the YOLO-format reader among them, never import Ultralytics, and
    setup.py never requires it."""
    from importlib import metadata

    import cv2
    assert metadata.version("ultralytics").startswith("8.4.")
    opencv = sorted(d.metadata["Name"] for d in metadata.distributions()
                    if d.metadata["Name"].lower().startswith("opencv"))
    assert opencv == ["opencv-python-headless"], opencv
    dist = metadata.distribution("opencv-python-headless")
    files = {os.path.realpath(dist.locate_file(f)) for f in dist.files}
    assert os.path.realpath(cv2.__file__) in files
    r = subprocess.run([sys.executable, "-c", NO_ULTRALYTICS], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])
    assert "ultralytics" not in open(os.path.join(ROOT, "setup.py")).read().lower()


def test_without_ultralytics_the_integration_says_what_to_install():
    code = ("import sys; sys.modules['ultralytics'] = None\n"
            "import dst_dali\n"
            "try:\n    import dst_dali.ultralytics\nexcept ModuleNotFoundError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == ("dst_dali.ultralytics needs Ultralytics: pip install "
                                "'ultralytics==8.4.*' (AGPL-3.0: its terms apply to what uses "
                                "it)")
