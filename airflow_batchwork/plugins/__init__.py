"""Airflow plugins shipped with the provider: `webhooks.BatchworkWebhooksPlugin` (the webhook intake)."""
