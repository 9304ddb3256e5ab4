# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (python3 >= 3.10), install the pinned torch for this machine kind and the
# project with the extras they need. Installs are stamped, so a second run does not reinstall.

PYTHON ?= python3
VENV   ?= .venv
# VENV_FLAGS=--system-site-packages: the venv also sees a TensorRT installed for the system Python (README: Deploying)
VENV_FLAGS ?=
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.pand-installed
PYTEST_ARGS ?=

.PHONY: install test demo latency-check latency-baseline gpu-check clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "pand needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) install --quiet --upgrade pip

# Two distributions: pand-runtime (runtime/, torch-free, what a device installs) and pand (training + export),
# which depends on it; one pip call installs both from this checkout.
$(STAMP): $(PY) setup.cfg pyproject.toml runtime/pyproject.toml
	$(PIP) install --quiet $(TORCH_PIN)
	$(PIP) install --quiet -e ./runtime -e '.[train,export,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/python -m pand.demo --run-dir runs/demo

# Absolute latency checks are opt-in: they compare with a baseline recorded on this very machine (same device key).
latency-check: $(STAMP)
	$(PY) -m pytest -m latency tests/latency

latency-baseline: $(STAMP)
	PAND_LATENCY_RECORD=1 $(PY) -m pytest -m latency tests/latency

# On a CUDA GPU machine with torch preinstalled: own venv + wheels from bench/wheels, then tests and throughput /
# latency numbers into runs/gpu_check/gpu_check.{json,md} (bench/gpu_check.sh --help). GPU_CHECK_ARGS=--dry-run: CPU.
gpu-check:
	bash bench/gpu_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf runs/demo .pytest_cache
