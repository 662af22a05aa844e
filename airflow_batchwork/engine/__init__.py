"""The engine: submission, polling, results collection and writing, caches, resubmission (above the adapters)."""
