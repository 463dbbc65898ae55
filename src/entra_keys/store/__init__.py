"""What a device keeps on disk: named key files, the join state, sealed secrets, and leave.

``KeyStore`` is the API (``keystore``); ``_files`` holds the file-system rules (a checked
directory, checked reads, atomic writes), ``tss2file`` reads TSS2 key files without a provider,
``_leave`` is the all-or-nothing leave, and ``sealed`` keeps small secrets sealed by the store's
provider. The store sits above the providers: it holds their key files and uses their keys.
"""

from __future__ import annotations

from .keystore import (
    KeyInfo,
    KeyStore,
    default_store_path,
    leave,
    list_keys,
    storage_parents,
    stored_kinds,
)

__all__ = [
    "KeyInfo",
    "KeyStore",
    "default_store_path",
    "leave",
    "list_keys",
    "storage_parents",
    "stored_kinds",
]
