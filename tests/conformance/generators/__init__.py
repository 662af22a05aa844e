"""The build scripts of the conformance data: each ``<provider>.py`` generates
``airflow_batchwork/testing/schemas/<provider>.json`` from that provider's official spec or SDK types.

Run one from the repository root with ``.venv/bin/python -m tests.conformance.generators.<provider>``, or all
of them with ``make schemas``. They are not part of the installed package and nothing at runtime imports them.
"""

from pathlib import Path

# airflow_batchwork/testing/schemas/, where the generated documents live (package data).
SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "airflow_batchwork" / "testing" / "schemas"
