# samlab: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.samlab-installed

# Keep Jupyter, IPython and matplotlib state inside the repository, not in $HOME.
export JUPYTER_CONFIG_DIR := $(CURDIR)/.jupyter/config
export JUPYTER_DATA_DIR := $(CURDIR)/.jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.jupyter/runtime
export IPYTHONDIR := $(CURDIR)/.ipython
export MPLCONFIGDIR := $(CURDIR)/.mplconfig
export MPLBACKEND := Agg

.PHONY: venv demo test browser-deps lint format lab bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name samlab --display-name "Python (samlab)" > /dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m samlab.demo --output results

test: $(STAMP) browser-deps
	$(PY) -m pytest tests

# The browser test drives Debian's chromium (playwright's own browser download is not reachable):
# installed here only when running as root with apt (as CI does); otherwise the test skips and
# names `sudo apt-get install chromium`.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for tests/test_browser.py (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; } \
		|| echo "could not install chromium: the browser test will skip"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Listens on 127.0.0.1 only; --allow-root only when run as root (Jupyter refuses root without it).
# MPLBACKEND is unset for the kernels: ipykernel then draws figures inline (Agg would draw none).
lab: $(STAMP)
	env -u MPLBACKEND $(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.kernel_manager_class=jupyter_server.services.kernels.kernelmanager.AsyncMappingKernelManager

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/optim_step.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/landscape_surface.py --mpi-check
	OMP_NUM_THREADS=1 $(PY) benchmarks/forecast_epoch.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/hessian.py --quick
	OMP_NUM_THREADS=1 $(PY) benchmarks/sparse_sam.py --quick
	OMP_NUM_THREADS=1 $(PY) benchmarks/train_epoch.py --quick

clean:
	rm -rf results .pytest_cache .ruff_cache
