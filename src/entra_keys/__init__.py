"""entra_keys: the keys of a Microsoft Entra joined device, kept in a TPM 2.0 or in software.

Open a provider (``open_provider``), keep named keys in a ``KeyStore``, and use them as
``cryptography`` private keys; every key says whether it is ``hardware_backed``.
"""

from .errors import (
    DecryptionError,
    EntraKeysError,
    ForeignKey,
    HardwareUnavailable,
    InvalidData,
    InvalidKeyName,
    InvalidSignature,
    KeyExists,
    KeyFileCorrupt,
    KeyNotExportable,
    KeyNotFound,
    KeyStoreError,
    KeyUsageError,
    ProviderError,
    StorePermissionError,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    UnsupportedAlgorithm,
    WrongPassphrase,
    WrongProvider,
)
from .keystore import KeyInfo, KeyStore, default_store_path
from .provider import (
    EntraECKey,
    EntraKey,
    EntraPrivateKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
)
from .providers import open_provider

__version__ = "0.1.0.dev0"

__all__ = [
    "DecryptionError",
    "EntraECKey",
    "EntraKey",
    "EntraKeysError",
    "EntraPrivateKey",
    "EntraRSAKey",
    "ForeignKey",
    "HardwareUnavailable",
    "InvalidData",
    "InvalidKeyName",
    "InvalidSignature",
    "KeyExists",
    "KeyFileCorrupt",
    "KeyInfo",
    "KeyNotExportable",
    "KeyNotFound",
    "KeyStore",
    "KeyStoreError",
    "KeyType",
    "KeyUsage",
    "KeyUsageError",
    "Provider",
    "ProviderError",
    "ProviderInfo",
    "StorePermissionError",
    "TPMAuthFailure",
    "TPMError",
    "TPMLockout",
    "TPMObjectMemory",
    "TPMUnreachable",
    "UnsupportedAlgorithm",
    "WrongPassphrase",
    "WrongProvider",
    "__version__",
    "default_store_path",
    "open_provider",
]
