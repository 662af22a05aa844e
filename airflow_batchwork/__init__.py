"""airflow-batchwork: one batch-inference API over seven LLM providers, for Airflow and plain scripts.

Importing this package does not import Airflow. Layers, bottom up (docs/architecture.md): `values/`
(plain values), `adapters/` (one module per provider), `engine/`, then the script API facade `core/` and
the Airflow layer (`hooks/`, `operators/`, `triggers/`, ...); the emulator `testing/` beside the adapters.
"""

# The adapters register their providers in `values.catalog` (model strings and handles look them up there);
# importing them here makes the catalog complete before any module of the package is used.
import airflow_batchwork.adapters  # noqa: F401
from airflow_batchwork.values.refs import ModelRef, ProviderFactory, parse_model

__version__ = "0.1.0"

openai = ProviderFactory("openai")
anthropic = ProviderFactory("anthropic")
google = ProviderFactory("google")
groq = ProviderFactory("groq")
mistral = ProviderFactory("mistral")
together = ProviderFactory("together")
xai = ProviderFactory("xai")

__all__ = [
    "ModelRef", "__version__", "anthropic", "google", "groq", "mistral", "openai", "parse_model", "together", "xai",
]
