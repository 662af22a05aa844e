# Every target creates and uses .venv by itself. `make demo` installs the runtime dependencies only;
# `make test` (and lint, bench, conformance) add the test extras. .ci/install.sh uses uv when it can
# (USE_UV=0: plain pip).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test conformance schemas sdk-updates integration lint bench clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(PY)
	sh .ci/install.sh $(VENV)
	@touch $(RUNTIME)

$(STAMP): pyproject.toml | $(PY)
	sh .ci/install.sh $(VENV) test
	@touch $(RUNTIME) $(STAMP)

# The real-deployment test's extras (PostgreSQL drivers, Celery provider) on top of the test install.
INTEGRATION_STAMP := $(VENV)/.integration-stamp
$(INTEGRATION_STAMP): pyproject.toml $(STAMP)
	sh .ci/install.sh $(VENV) test,integration
	@touch $(INTEGRATION_STAMP)

# The other engines of the collect bench (polars, duckdb) on top of the test install.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): pyproject.toml $(STAMP)
	sh .ci/install.sh $(VENV) test,bench
	@touch $(BENCH_STAMP)

install: $(RUNTIME)

demo: $(RUNTIME)
	$(PY) -m airflow_batchwork.testing.demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

conformance: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/conformance

# Regenerate the conformance data (airflow_batchwork/testing/schemas/*.json) from the providers' SDKs and specs with
# the build scripts in tests/conformance/generators/. OpenAI's spec is read from $$OPENAI_OPENAPI_REPO (a clone of
# openai/openai-openapi) when set, else downloaded at the pinned commit.
GENERATORS := anthropic google groq mistral openai together xai
schemas: $(STAMP)
	for p in $(GENERATORS); do $(PY) -m tests.conformance.generators.$$p || exit 1; done

# The pinned provider SDKs (pyproject.toml, test extra) that have a newer release on the index (needs the network).
sdk-updates: $(STAMP)
	$(PY) -m tests.conformance.generators.updates

# Real Airflow components (api-server, scheduler, dag-processor, triggerers, Celery workers) as processes on
# PostgreSQL and Redis from the OS packages (apt-get as root when missing); docs/deployment.md.
integration: $(INTEGRATION_STAMP)
	BATCHWORK_INTEGRATION=1 $(PY) -m pytest -q -p no:cacheprovider tests/integration

# ruff; mypy over the Airflow-free layers and the emulator; the import contracts of pyproject.toml (docs/architecture.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy airflow_batchwork/values airflow_batchwork/adapters airflow_batchwork/engine airflow_batchwork/core \
		airflow_batchwork/testing
	$(VENV)/bin/lint-imports --no-cache

bench: $(BENCH_STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
