"""Provider metadata for Airflow's provider discovery (entry point `apache_airflow_provider`)."""

from __future__ import annotations

from typing import Any

PROVIDERS = ["openai", "anthropic", "google", "groq", "mistral", "together", "xai"]


def get_provider_info() -> dict[str, Any]:
    # No "plugins" key: Airflow loads provider-info plugins only with [core] lazy_discover_providers=False,
    # so the webhook intake is registered through the `airflow.plugins` entry point instead (pyproject.toml);
    # listing it in both places would register it twice on an eagerly discovering deployment.
    return {
        "package-name": "airflow-batchwork",
        "name": "Batchwork",
        "description": "One batch-inference API over the asynchronous batch endpoints of seven LLM providers.",
        "versions": ["0.1.0"],
        "integrations": [{"integration-name": "Batchwork", "tags": ["ai"]}],
        "hooks": [{"integration-name": "Batchwork", "python-modules": ["airflow_batchwork.hooks.batchwork"]}],
        "operators": [{"integration-name": "Batchwork", "python-modules": ["airflow_batchwork.operators.batch"]}],
        "triggers": [{"integration-name": "Batchwork", "python-modules": ["airflow_batchwork.triggers.batch",
                                                                           "airflow_batchwork.triggers.webhook"]}],
        "extra-links": ["airflow_batchwork.links.BatchConsoleLink"],
        "notifications": ["airflow_batchwork.notifications.webhook.BatchWebhookNotifier"],
        "connection-types": [
            {
                "connection-type": "batchwork",
                "hook-class-name": "airflow_batchwork.hooks.batchwork.BatchworkHook",
                "hook-name": "Batchwork (LLM batch APIs)",
                "conn-fields": {
                    "provider": {
                        "label": "Provider",
                        "description": "Which provider this key belongs to.",
                        "schema": {"type": ["string", "null"], "enum": [*PROVIDERS, None]},
                    },
                    "headers": {
                        "label": "Extra headers",
                        "description": "JSON object of headers sent with every call, "
                        'e.g. {"OpenAI-Project": "proj_x"}.',
                        "schema": {"type": ["object", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "host": "optional, e.g. https://api.openai.com/v1 (the provider's default when empty)",
                        "password": "the provider API key",
                    },
                },
            }
        ],
    }
