"""airflow-batchwork: one batch-inference API over seven LLM providers, for Airflow and plain scripts.

Importing this package does not import Airflow; the Airflow layer lives in `hooks/`, `operators/`
and `triggers/`, the provider-neutral core in `core/` and `adapters/`.
"""

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
