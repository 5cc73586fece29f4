# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
# Both create ./.venv and install the package into it on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo keypoints nucleus ablations test test-fast build-ops clean

$(STAMP): pyproject.toml requirements.txt setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "mrcnn needs Python >= 3.10, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Compile the RoIAlign op (CPU, and CUDA where nvcc exists) ahead of use.
build-ops: install
	$(PY) -m mrcnn.ops.build

demo: install
	$(PY) samples/shapes/shapes.py demo

# Keypoint R-CNN from scratch on generated squares and triangles with named corners:
# keypoint AP (OKS) and pixel error on fresh images, a picture (samples/keypoints).
keypoints: install
	$(PY) samples/keypoints/keypoints.py demo

# Real data: train from scratch on the nuclei images' train split, evaluate on val,
# save a picture (samples/nucleus/README.md).
nucleus: install
	$(PY) samples/nucleus/nucleus.py demo --dataset ../shared/data/nuclei

# The paper's Table 2 ablations on shapes and nuclei, CPU settings (~40 min on 2 cores;
# benchmarks/README.md); ARGS="--full" on a GPU.
ablations: install build-ops
	$(PY) benchmarks/ablations.py $(ARGS)

# Two pytest workers (pytest-xdist), one test file each at a time: the suite is
# mostly single-threaded graph building, so two workers use both of CI's cores.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: install build-ops
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) build *.egg-info logs
