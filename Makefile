# Two commands on a fresh machine:
#   make report   set up .venv and run the whole chain on the built-in synthetic faces
#   make test     set up .venv and run the tests (all of them: what CI runs)
# While you work: make test-fast (everything but the chain-level tests); make results (RESULTS.md)
PYTHON ?= python3
VENV ?= .venv
RUN ?= quick

.PHONY: setup report test test-fast lint results lab lines clean clean-all

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[report,test,peers,export]'
	touch $@

report: setup
	$(VENV)/bin/lmkit run params/$(RUN).yaml

test: lint
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check

# the edit loop: every test but those marked slow (whole chains, several trainings)
test-fast: lint
	$(VENV)/bin/python -m pytest -q -m "not slow"

# the results page and the README's headline table from docs/results/ (the same bytes from any clean
# checkout); a run folder's row
# to add there: lmkit results --rows reports/NAME; a preview with your run folders: lmkit results reports/*/
results: setup
	$(VENV)/bin/lmkit results --out RESULTS.md --readme README.md

# lmkit's lines, then those every epoch of 03's training cell runs through beyond the study's own
# modules (lmkit/study): the loop, its settings and device plan, the checkpoints
lines:
	@find lmkit -name '*.py' | xargs cat | wc -l | sed 's/$$/ lines in lmkit/'
	@wc -l lmkit/train/loop.py lmkit/train/config.py lmkit/train/checkpoints.py

# JupyterLab at the repository root: notebooks/, params/ and reports/ all reachable
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

# the quick run only (seconds to make again); real-data runs are kept
clean:
	rm -rf reports/quick .pytest_cache

# every run folder under reports/, real-data runs included: asked for by name
clean-all:
	rm -rf reports/*/ .pytest_cache
