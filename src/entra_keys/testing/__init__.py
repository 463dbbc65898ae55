"""Helpers for testing join agents built on entra_keys (``entra_keys.testing.swtpm``: a software
TPM to run against)."""
