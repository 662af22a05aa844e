# Every target creates and uses .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test conformance integration lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# The real-deployment test's extras (PostgreSQL drivers, Celery provider) on top of the test install.
INTEGRATION_STAMP := $(VENV)/.integration-stamp
$(INTEGRATION_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,integration]'
	@touch $(INTEGRATION_STAMP)

demo: $(STAMP)
	$(PY) -m airflow_batchwork.testing.demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

conformance: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/conformance

# Real Airflow components (api-server, scheduler, dag-processor, triggerers, Celery workers) as processes on
# PostgreSQL and Redis from the OS packages (apt-get as root when missing); docs/deployment.md.
integration: $(INTEGRATION_STAMP)
	BATCHWORK_INTEGRATION=1 $(PY) -m pytest -q -p no:cacheprovider tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy airflow_batchwork/core airflow_batchwork/adapters

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
