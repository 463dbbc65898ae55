"""entra_keys: the keys of a Microsoft Entra joined device, kept in a TPM 2.0 or in software.

Open a provider (``open_provider``), keep named keys in a ``KeyStore``, and use them as
``cryptography`` private keys; every key says whether it is ``hardware_backed``.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AttestationCheckFailed,
    AttestationError,
    Check,
    DecryptionError,
    EntraKeysError,
    ForeignKey,
    HardwareUnavailable,
    ImportedKey,
    InvalidData,
    InvalidSignature,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStoreError,
    KeysUnusable,
    KeyUsageError,
    MalformedAttestation,
    PCRMismatch,
    ServiceError,
    StorePermissionError,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from .provider import (
    Certification,
    EndorsementKey,
    EntraECKey,
    EntraKey,
    EntraPrivateKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
    Quote,
    SessionKey,
)
from .providers import open_provider
from .store.keystore import KeyInfo, KeyStore, default_store_path

if TYPE_CHECKING:
    from .session import PRTSession

__version__ = "0.1.0.dev0"

__all__ = [
    "AttestationCheckFailed",
    "AttestationError",
    "Certification",
    "Check",
    "DecryptionError",
    "EndorsementKey",
    "EntraECKey",
    "EntraKey",
    "EntraKeysError",
    "EntraPrivateKey",
    "EntraRSAKey",
    "ForeignKey",
    "HardwareUnavailable",
    "ImportedKey",
    "InvalidData",
    "InvalidSignature",
    "KeyExists",
    "KeyFileCorrupt",
    "KeyInfo",
    "KeyNotFound",
    "KeyStore",
    "KeyStoreError",
    "KeyType",
    "KeyUsage",
    "KeyUsageError",
    "KeysUnusable",
    "MalformedAttestation",
    "PCRMismatch",
    "PRTSession",
    "Provider",
    "ProviderInfo",
    "Quote",
    "ServiceError",
    "SessionKey",
    "StorePermissionError",
    "TPMAuthFailure",
    "TPMError",
    "TPMLockout",
    "TPMObjectMemory",
    "TPMUnreachable",
    "UnsupportedAlgorithm",
    "WrongPassphrase",
    "__version__",
    "default_store_path",
    "open_provider",
]


def __getattr__(name: str) -> Any:
    """``PRTSession`` on first use: the sign path of a new process does not import the session
    module (json, the JWT formats), which keeps a cold start near ``import tpm2_pytss``."""
    if name == "PRTSession":
        from .session import PRTSession

        return PRTSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
