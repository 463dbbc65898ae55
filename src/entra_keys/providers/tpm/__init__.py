"""The TPM provider: keys created and used inside a TPM 2.0 through tpm2-pytss's public ESAPI.

This package is the only one that imports ``tpm2_pytss``, and only when a TPM provider is
opened, so entra_keys works where libtss2 is absent. Its modules, one job each:

- ``provider``: ``TPMProvider``, the provider over these;
- ``tcti``: a TCTI string parsed once (``Tcti``), the default TPM and why there is none;
- ``_connection``: the ESAPI connection: its lock, ``command()``, the storage key, the session;
- ``_key_cache``: the keys kept loaded between uses (``KeyCache``);
- ``_watchdog``: ends a simulator command that waits too long;
- ``_errors``: the one translation of ``TSS2_Exception`` into entra_keys errors (keeps ``.rc``);
- ``_keys``: ``TPMRSAKey``, ``TPMECKey`` (``cryptography`` keys) and ``TPMSessionKey``;
- ``_endorsement``: EKs and their NV certificates, credential activation, quote, certify;
- ``_sealing``: sealed secrets (a data object bound to the storage key, a PIN and PCRs);
- ``_templates``: ``tcg.model``'s facts as tpm2-pytss templates;
- ``_primary_cache``: the saved context of the storage primary.
"""

from __future__ import annotations

from ._connection import SRK_HANDLE
from ._keys import TPMECKey, TPMRSAKey, TPMSessionKey
from .provider import TPMProvider, forget_saved_primary, persist_storage_key
from .tcti import Tcti, default_tcti

__all__ = [
    "SRK_HANDLE",
    "TPMECKey",
    "TPMProvider",
    "TPMRSAKey",
    "TPMSessionKey",
    "Tcti",
    "default_tcti",
    "forget_saved_primary",
    "persist_storage_key",
]
