"""Airflow notifiers: `webhook.BatchWebhookNotifier` posts signed job-completion events."""
