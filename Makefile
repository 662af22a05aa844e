# Every target creates and uses .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test conformance lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m airflow_batchwork.testing.demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

conformance: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/conformance

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy airflow_batchwork/core airflow_batchwork/adapters

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
