# Two commands on a fresh machine:
#   make report   set up .venv and run the whole chain on the built-in synthetic faces
#   make test     set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
RUN ?= quick

.PHONY: setup report test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,peers,export]'
	touch $@

report: setup
	$(VENV)/bin/lmkit run params/$(RUN).yaml

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf reports/*/ .pytest_cache
