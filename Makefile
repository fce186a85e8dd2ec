# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make report   set up .venv if needed, then render every notebook to reports/ (offline HTML)
#   make test     set up .venv (with test extras) if needed, then run the test suite
# Both are idempotent: the install step re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" on a machine
# without a local torch wheelhouse, so that pip takes the CPU build of torch==2.13.0.
PIP_ARGS ?=
PROFILE ?= default
# `make report WORKERS=2`: render that many notebooks at once (a local Dask cluster; see README, Sweeps).
WORKERS ?=
PYTEST_ARGS ?=
# `make test` runs the tests in this many processes (pytest-xdist), whole test files to a process so that a
# file's module-scoped fixtures are built once: 2 = the CI machine's cores. TEST_WORKERS=0 runs them in-process.
TEST_WORKERS ?= 2

.PHONY: help setup setup-test report test notebooks clean-notebooks clean-reports benchmarks

help:
	@echo "make report   # .venv + every notebook → reports/index.html (profile=$(PROFILE))"
	@echo "make test     # .venv with test extras + the test suite"
	@echo "make notebooks        # sync each notebooks/*.ipynb with its paired percent-format .py (jupytext)"
	@echo "make clean-notebooks  # strip outputs from notebooks/*.ipynb before committing"

$(BIN)/python:
	@echo "==> creating virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing workbench (editable) and its dependencies into $(VENV); torch pinned to the 2.13.0 CPU wheel"
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e .
	@$(BIN)/python -c "import torch; assert '+cpu' in torch.__version__ or not torch.version.cuda, 'a CUDA torch was installed: see README, Installing'; print('    torch', torch.__version__)"
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	@echo "==> installing test extras into $(VENV)"
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e '.[test]'
	@touch $@

setup: $(VENV)/.installed
	@echo "==> environment ready: $(VENV) (skip: nothing to install)"

setup-test: $(VENV)/.installed-test
	@echo "==> test environment ready: $(VENV)"

report: setup
	@echo "==> rendering every notebook (profile=$(PROFILE)) into reports/"
	$(BIN)/workbench report --all --profile $(PROFILE) --output-dir reports $(if $(WORKERS),--workers $(WORKERS),)
	@echo "==> open reports/index.html"

test: setup-test
	@echo "==> running the test suite (pytest)"
	$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,) $(PYTEST_ARGS)

# Each notebook is paired with a jupytext percent-format .py (edit either, in JupyterLab or an editor); --sync
# updates whichever of the two is older, so an edit in one reaches the other.
notebooks: setup-test
	$(BIN)/jupytext --sync notebooks/*.ipynb

clean-notebooks: setup
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean-reports:
	rm -rf reports

benchmarks: setup
	@for f in benchmarks/bench_*.py; do echo "==> $$f"; $(BIN)/python $$f || exit 1; done
