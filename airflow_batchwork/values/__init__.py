"""Plain values: requests, model references, statuses, errors, handles, prices. Imports nothing of ours above it."""
