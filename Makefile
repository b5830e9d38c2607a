# Two commands on a fresh machine:
#   make report   set up .venv and run the whole chain on the built-in synthetic faces
#   make test     set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
RUN ?= quick

.PHONY: setup report test lab clean clean-all

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[report,test,peers,export]'
	touch $@

report: setup
	$(VENV)/bin/lmkit run params/$(RUN).yaml

test: setup
	$(VENV)/bin/python -m pytest -q

# JupyterLab at the repository root: notebooks/, params/ and reports/ all reachable
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

# the quick run only (seconds to make again); real-data runs are kept
clean:
	rm -rf reports/quick .pytest_cache

# every run folder under reports/, real-data runs included: asked for by name
clean-all:
	rm -rf reports/*/ .pytest_cache
