#!/usr/bin/env bash
# Installs detectron2 into the current Python environment, unless one is already importable
# (a user's own detectron2 is never replaced).
#
# Why this dance: detectron2 has no wheel for Python 3.11 on PyPI. `sal-detectron2==0.7.2`
# (upstream detectron2 main of 2024-04, Apache-2.0) is a cp310 wheel whose Python code is
# version-independent; only its compiled `_C` extension is tied to CPython 3.10. Without `_C`,
# detectron2 falls back to pure-PyTorch/torchvision ops (ROIAlign, NMS come from torchvision)
# and to pycocotools for COCO evaluation, which is all dst_dali needs. So we drop `_C`, re-tag
# the wheel `py3-none-any` and install it with the pins it was released against.
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "detectron2 already installed: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q sal-detectron2==0.7.2 --no-deps --python-version 3.10 \
  --only-binary=:all: -d "$tmp/dl"
"$PY" -m wheel unpack "$tmp"/dl/sal_detectron2-0.7.2-*.whl -d "$tmp/src" >/dev/null
root="$tmp/src/sal_detectron2-0.7.2"
rm -f "$root"/detectron2/_C*.so
sed -i 's/^Tag: .*/Tag: py3-none-any/' "$root"/sal_detectron2-0.7.2.dist-info/WHEEL
mkdir -p "$tmp/whl"
"$PY" -m wheel pack "$root" -d "$tmp/whl" >/dev/null
"$PY" -m pip install -q "$tmp"/whl/sal_detectron2-0.7.2-py3-none-any.whl \
  'fvcore>=0.1.5,<0.1.6' 'iopath>=0.1.7,<0.1.10' 'setuptools<81'
"$PY" -c "import detectron2; print('detectron2', detectron2.__version__, 'installed')"
