# Two entry points, each making or reusing its own environment (README):
#   make demo   the dashboard on the bundled sample runs, http://127.0.0.1:8501
#   make test   the whole test suite (CPU torch pinned in constraints.txt)
PYTHON ?= python3
APP_VENV := .venv-app
DEV_VENV := .venv
PYTEST_ARGS ?=

.PHONY: demo test clean-venvs

# The dashboard needs no torch: this environment proves it.
$(APP_VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(APP_VENV)
	$(APP_VENV)/bin/python -m pip install -q --upgrade pip
	$(APP_VENV)/bin/python -m pip install -q -e .
	touch $@

$(DEV_VENV)/.ready: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEV_VENV)/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(DEV_VENV)/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: $(APP_VENV)/.ready
	$(APP_VENV)/bin/traindoctor demo

# One torch thread per xdist worker: two workers already fill two cores.
test: $(DEV_VENV)/.ready
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(DEV_VENV)/bin/python -m pytest -n 2 --dist loadgroup -q -rs --durations=30 $(PYTEST_ARGS)

clean-venvs:
	rm -rf $(APP_VENV) $(DEV_VENV)
