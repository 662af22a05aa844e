"""Webhooks: Standard Webhooks signing (`signing`) and the provider batch events we accept (`events`).

Nothing here imports Airflow; the Airflow intake lives in `airflow_batchwork.plugins.webhooks`.
"""
