"""One module per emulated provider (its routes and quirks) over the shared parts in :mod:`.base` and :mod:`.files`.

This package imports nothing: the registry (:mod:`airflow_batchwork.testing.registry`) imports the provider
modules, never the reverse.
"""
