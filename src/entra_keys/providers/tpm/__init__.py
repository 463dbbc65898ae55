"""The TPM provider: keys created and used inside a TPM 2.0 through tpm2-pytss (ESAPI).

This package is the only one that imports ``tpm2_pytss``, and only when a TPM provider is
opened, so entra_keys works where libtss2 is absent. Its modules, one job each:

- ``_connection``: the ESAPI connection, its lock and watchdog, the storage key and sessions;
- ``_errors``: the one translation of ``TSS2_Exception`` into entra_keys errors (keeps ``.rc``);
- ``_keys``: ``TPMRSAKey``, ``TPMECKey`` (``cryptography`` keys) and ``TPMSessionKey``;
- ``_endorsement``: EKs and their NV certificates, credential activation, quote, certify;
- ``_sealing``: sealed secrets (a data object bound to the storage key, a PIN and PCRs);
- ``_templates``: ``tcg.model``'s facts as tpm2-pytss templates;
- ``provider``: ``TPMProvider``, the provider over these;
- ``_signing``: TPM2_Sign, the only user of tpm2-pytss private internals (with a public fallback).
"""

from __future__ import annotations

from ._connection import SRK_HANDLE
from ._keys import TPMECKey, TPMRSAKey, TPMSessionKey
from .provider import TPMProvider, default_tcti, forget_saved_primary, persist_storage_key

__all__ = [
    "SRK_HANDLE",
    "TPMECKey",
    "TPMProvider",
    "TPMRSAKey",
    "TPMSessionKey",
    "default_tcti",
    "forget_saved_primary",
    "persist_storage_key",
]
