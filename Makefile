# The two newcomer commands: `make demo` and `make test`. Each creates .venv on first use
# with torch pinned by constraints.txt (the 2.13.0 CPU wheel on our machines).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,fast]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaffnet demo

test: $(STAMP)
	$(PY) -m pytest
