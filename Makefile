# The two commands of a fresh machine (each installs what it needs into .venv, once):
#   make demo   the main job on the bundled coco128 sample (GPU when DALI sees one, else CPU)
#   make test   the test suite
# VENV=/path/to/env uses an existing environment instead (a detectron2 in it is kept).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dst_dali_installed

.PHONY: install demo test bench accuracy gpu-kernel-check gpu-check clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py $(wildcard csrc/*) tools/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	PYTHON=$(PY) bash tools/install_detectron2.sh
	# Ultralytics (AGPL-3.0) for the YOLO integration's tests, never a dependency of the
	# package: without its requirements (their opencv-python would shadow the pinned headless
	# OpenCV), plus the few it uses
	$(PY) -m pip install -q --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3
	$(PY) -m pip install -q requests polars
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

demo: install
	$(PY) train/train_dali.py --config train/configs/demo_coco128_cpu.yaml

# Two workers, a test file each (files share their fixtures and build folders), the files with
# the most slow tests first (tests/conftest.py). CI runs them all; a quick local run leaves the
# slow ones out: .venv/bin/python -m pytest tests -m "not slow"
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=15

bench: install
	$(PY) -m bench.collage_op --repeats 11 --callgrind
	$(PY) -m bench.collage_op --k 1 --name resize_op --repeats 9 --callgrind
	$(PY) -m bench.throughput --callgrind

accuracy: install
	$(PY) -m bench.evidence.accuracy
	$(PY) -m bench.iteration_cost

# The first thing to run on a GPU node, even a bare one: the CUDA kernel alone, built by nvcc
# and driven by $(PYTHON) with numpy (no .venv, no DALI, no network). EMULATE=1: no GPU, the
# CPU replay of the kernel's launch. The report and gpu_kernel_check.json go to $(OUT).
OUT ?= output
gpu-kernel-check:
	$(PYTHON) -m bench.gpu.kernel_check $(if $(EMULATE),--emulate) --out $(OUT)

# Then the whole GPU path through DALI: one report, a line per check (exits 0 without a GPU).
# VENV=/path: an environment that has everything is used as it is (no pip call).
gpu-check: $(if $(filter .venv,$(VENV)),install)
	$(PY) -m bench.gpu.loader_check

clean:
	rm -rf build output dst_dali/_collage_stitch*.so *.egg-info
