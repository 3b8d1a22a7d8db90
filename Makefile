# The two newcomer commands: `make demo` and `make test`. Each creates .venv on first use
# with torch pinned by constraints.txt (the 2.13.0 CPU wheel on our machines).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick browser docs

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,fast,s3,openvino,docs]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaffnet demo

# The operator page test drives Debian's Chromium (never a downloaded browser). Installed here
# when missing and apt-get may run (root, or sudo without a password); otherwise that test skips.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "note: chromium/chromium-driver missing and apt-get cannot run: the browser test will skip"; exit 0; fi; \
	  command -v apt-get >/dev/null || { echo "note: no apt-get: the browser test will skip"; exit 0; }; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver \
	    || echo "note: chromium could not be installed: the browser test will skip"; }

# The documentation site (mkdocs.yml): strict, so a broken link, a missing page or a page left out of
# the nav fails; the CLI and REST reference pages are generated from the code (docs/hooks/reference.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/docs-site

test: $(STAMP) browser docs
	$(PY) -m pytest --durations=10

# The quick loop while editing: unit tests only (no Ray, Serve, MLflow server, browser, S3 server or
# real INT8 quantisation; markers in pyproject.toml). CI runs `make test`, the whole suite.
test-quick: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow" -q
