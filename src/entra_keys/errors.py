"""The one exception tree of entra_keys.

Every error the library raises on purpose is an ``EntraKeysError``; lower-level errors
(``TSS2_Exception``, ``struct.error``, OS errors on key files) are translated at one boundary
and chained with ``raise ... from exc``. No message carries key material.

::

    EntraKeysError
    ├── HardwareUnavailable            hardware was required and there is none (says why)
    ├── TPMError                       the TPM answered with an error (keeps .rc)
    │   ├── TPMUnreachable             the TCTI could not talk to the TPM
    │   ├── TPMObjectMemory            no free transient object slot (TPM_RC_OBJECT_MEMORY)
    │   ├── TPMAuthFailure             a wrong authorization value (.tries_left)
    │   ├── TPMLockout                 dictionary-attack lockout is in force (.retry_after)
    │   └── PCRMismatch                the PCRs are not the values a secret was sealed to
    ├── KeyStoreError                  a key store problem (also a bad key name); names the key
    │   │                              (.key_name) and the file (.path)
    │   ├── KeyNotFound
    │   ├── KeyExists
    │   ├── StorePermissionError       the store or a key file is open to others, owned by
    │   │                              another user, a link or not a regular file (.path)
    │   ├── KeyFileCorrupt             truncated, garbage, wrong-format key file, or the other
    │   │                              provider's (a TPM key opened in software, or back)
    │   ├── WrongPassphrase            a passphrase (or a key's PIN) is missing or wrong
    │   ├── ForeignKey                 a TPM key blob made by another TPM or storage key
    │   │   └── KeysUnusable           the store's keys do not load on this TPM (cleared, another
    │   │                              TPM, a firmware reset): leave and join again
    │   └── ImportedKey                a TPM key whose private half was made outside the TPM
    ├── KeyUsageError                  the key may not do that (sign with a decrypt key, export
    │                                  the private half of a hardware key, ...)
    ├── DecryptionError                a ciphertext that does not decrypt (also a ValueError)
    ├── UnsupportedAlgorithm           an algorithm, padding, key type or provider not offered
    ├── InvalidData                    bytes that do not parse (formats, wire structures)
    │   └── ServiceError               the service answered with its error object (.error,
    │                                  .error_description: bounded, no control characters)
    ├── InvalidSignature               a signature that does not verify (also pyca's
    │                                  cryptography.exceptions.InvalidSignature)
    └── AttestationError               an attestation could not be made (a credential not made
        │                              for this EK and AK name), or did not verify
        └── AttestationCheckFailed     a verifier check failed; ``.check`` (a Check) says which
            └── MalformedAttestation   Check.STRUCTURE: bytes that do not parse (also an
                                       InvalidData)

Every failed check is an ``AttestationCheckFailed`` whose ``check`` names it: ``Check.TRUST``
(the policy does not trust the AK, or it is no AK: enroll it, or give its TPMT_PUBLIC),
``HASH``, ``SIGNATURE``, ``SOFTWARE``, ``MAGIC``, ``TYPE``, ``NONCE``, ``PCR_SELECTION``,
``PCR_DIGEST``, ``EVENT_LOG`` (the TCG event log does not replay to the quoted PCRs),
``BOOT_POLICY`` (what booted breaks the verifier's boot policy), ``NAME``, ``KEY``,
``KEY_ATTRIBUTES``, ``KEY_STRENGTH``, ``CERTIFICATE`` (an EK or AK certificate that does not
chain or is unfit; also raised by the certificate checks on their own), ``CREATION`` (a creation
attestation's creationHash) and ``STRUCTURE``. ``Check`` is a string enum: ``exc.check ==
"nonce"`` holds. A subclass is kept only where a caller acts differently: a parse error is also
an InvalidData.

Signatures: a key's own ``public_key().verify`` is pyca's and raises pyca's
``cryptography.exceptions.InvalidSignature``; entra_keys' own checks (compact JWS, the stand-in
services) raise ``entra_keys.InvalidSignature``, a subclass of that pyca class (and an
``EntraKeysError``). So ``except cryptography.exceptions.InvalidSignature`` catches every bad
signature, whoever checked it; ``except entra_keys.InvalidSignature`` catches entra_keys' checks.
A TPM attestation whose signature does not verify is an ``AttestationCheckFailed`` with
``Check.SIGNATURE`` (a verifier check, like the others).
"""

from __future__ import annotations

import enum
import unicodedata

from cryptography import exceptions as _pyca

__all__ = [
    "AttestationCheckFailed",
    "AttestationError",
    "Check",
    "DecryptionError",
    "EntraKeysError",
    "ForeignKey",
    "HardwareUnavailable",
    "ImportedKey",
    "InvalidData",
    "InvalidSignature",
    "KeyExists",
    "KeyFileCorrupt",
    "KeyNotFound",
    "KeyStoreError",
    "KeyUsageError",
    "KeysUnusable",
    "MalformedAttestation",
    "PCRMismatch",
    "ServiceError",
    "StorePermissionError",
    "TPMAuthFailure",
    "TPMError",
    "TPMLockout",
    "TPMObjectMemory",
    "TPMUnreachable",
    "UnsupportedAlgorithm",
    "WrongPassphrase",
]


class EntraKeysError(Exception):
    """Base of every error entra_keys raises on purpose."""


class HardwareUnavailable(EntraKeysError):
    """Hardware-backed keys were required but no usable TPM was found; the message says why."""


class TPMError(EntraKeysError):
    """The TPM (or the TSS below it) returned an error; ``rc`` keeps the response code."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


class TPMUnreachable(TPMError):
    """The TCTI could not reach the TPM (no device, simulator stopped, I/O failed)."""


class TPMObjectMemory(TPMError):
    """The TPM has no free transient object slot (TPM_RC_OBJECT_MEMORY, 0x902)."""


class TPMAuthFailure(TPMError):
    """A wrong authorization value (PIN); ``tries_left`` before dictionary-attack lockout."""

    def __init__(self, message: str, rc: int | None = None, tries_left: int | None = None) -> None:
        super().__init__(message, rc)
        self.tries_left = tries_left


class TPMLockout(TPMError):
    """The TPM is in dictionary-attack lockout; ``retry_after`` seconds until one more try."""

    def __init__(self, message: str, rc: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, rc)
        self.retry_after = retry_after


class PCRMismatch(TPMError):
    """The TPM refused to unseal: the PCR values are not the ones the secret was sealed to
    (the boot chain or a PCR changed since); seal it again once the new state is trusted."""


class KeyStoreError(EntraKeysError):
    """A problem with the key store (a key name that is not a safe file name, too);
    ``key_name`` names the key and ``path`` the file or directory when there is one."""

    def __init__(
        self, message: str, key_name: str | None = None, *, path: str | None = None
    ) -> None:
        super().__init__(message)
        self.key_name = key_name
        self.path = path


class KeyNotFound(KeyStoreError):
    """No key of that name is in the store."""


class KeyExists(KeyStoreError):
    """A key of that name is already in the store and replacing it was not asked for."""


class StorePermissionError(KeyStoreError):
    """The store directory or a key file is open to other users, owned by another user, a
    symbolic link, or not a regular file: anyone who could swap it could swap the keys."""


class KeyFileCorrupt(KeyStoreError):
    """A key file is truncated, garbage, or not in a format this provider reads (the other
    provider's: a TPM key opened with the software provider, or back)."""


class WrongPassphrase(KeyStoreError):
    """A key was opened without its passphrase (or, for a TPM key made with one, its PIN), or
    an encrypted software key with a wrong passphrase; a wrong TPM PIN is TPMAuthFailure."""


class ForeignKey(KeyStoreError):
    """A TPM key blob that this TPM cannot load: made by another TPM or another storage key."""


class KeysUnusable(ForeignKey):
    """A stored key this TPM no longer loads: the storage hierarchy it was made under is gone (the
    TPM was cleared, replaced, or reset by a firmware update). Leave and join again."""


class ImportedKey(KeyStoreError):
    """A TPM key file whose key is not fixedTPM, fixedParent and sensitiveDataOrigin: it was
    brought in with TPM2_Import (its private half known outside) or may be duplicated."""


class KeyUsageError(EntraKeysError):
    """The key may not do that: it was created for another use (signing versus decryption), or
    its private half lives in hardware and cannot be exported."""


class DecryptionError(EntraKeysError, ValueError):
    """A ciphertext that does not decrypt with this key; a ValueError, as pyca's decrypt raises."""


class UnsupportedAlgorithm(EntraKeysError):
    """An algorithm, padding, hash, key type or provider kind that entra_keys does not offer."""


class InvalidData(EntraKeysError):
    """Bytes that do not parse as the structure they claim to be."""


class ServiceError(InvalidData):
    """The service answered with its error object (RFC 6749 §5.2: ``error``,
    ``error_description``) instead of what was asked for.

    Both come from whoever wrote the reply: ``error`` and ``error_description`` are kept at most
    ``SHOWN`` characters, every control or format character (CR, LF, ESC, bidi overrides) made
    a space, so that neither a log line nor a terminal can be forged through them.
    """

    #: The most characters of ``error`` and of ``error_description`` kept.
    SHOWN = 300

    def __init__(self, what: str, error: str, description: str | None = None) -> None:
        self.error = _sanitised(error)
        self.error_description = None if description is None else _sanitised(description)
        detail = f": {self.error_description}" if self.error_description else ""
        super().__init__(f"{what} is the service's error {self.error!r}{detail}")
        self._what = what

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self._what, self.error, self.error_description))


def _sanitised(text: str) -> str:
    """The text cut to at most ``ServiceError.SHOWN`` characters, "..." included where it is
    cut, controls and format characters (and line or paragraph separators) as single spaces."""
    longer = len(text) > ServiceError.SHOWN
    kept = text[: ServiceError.SHOWN - 3] if longer else text
    clean = " ".join(
        "".join(" " if unicodedata.category(c) in _UNSHOWN else c for c in kept).split()
    )
    return clean + ("..." if longer else "")


# Cc controls, Cf format (bidi overrides, zero-width), Zl / Zp separators, Cs lone surrogates.
_UNSHOWN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


class InvalidSignature(EntraKeysError, _pyca.InvalidSignature):
    """A signature that does not verify; a subclass of pyca's ``InvalidSignature`` too, so that
    ``except cryptography.exceptions.InvalidSignature`` catches it and what a key's
    ``public_key().verify`` raises alike."""


class AttestationError(EntraKeysError):
    """An attestation could not be produced (a credential blob not made for this EK and AK
    name), or it failed verification (an ``AttestationCheckFailed``: ``check`` says which)."""


# --- attestation: one error for a failed check, the check an enum -------------------------


class Check(enum.StrEnum):
    """The check an ``AttestationCheckFailed`` names, each equal to its string
    (``Check.NONCE == "nonce"``). The verifier makes them in this order, as go-tpm-tools'
    ``quote.Verify`` does: trust (the AK), hash, signature, software, magic, type, then nonce,
    PCR selection, PCR digest, event log and boot policy for a quote, or name, nonce, key
    attributes, key strength and key for a certification, or name, creation and nonce for a
    creation attestation."""

    #: The trust policy does not trust the attestation key, or it is no restricted signing key.
    TRUST = "trust"
    #: A hash the policy refuses: SHA-1 unless allowed, or one that is not SHA-2.
    HASH = "hash"
    #: The signature scheme does not fit the key, or the signature does not verify.
    SIGNATURE = "signature"
    #: A software provider's attestation, refused because the policy does not allow software.
    SOFTWARE = "software"
    #: The attestation does not begin with TPM_GENERATED_VALUE: no TPM made it.
    MAGIC = "magic"
    #: The attestation is of another type (a certification given as a quote, or back).
    TYPE = "type"
    #: The extraData is not the verifier's nonce (a replay, another request), or the nonce is
    #: too short to be one.
    NONCE = "nonce"
    #: The quote covers other PCRs or banks than the verifier expected.
    PCR_SELECTION = "pcr-selection"
    #: The quoted PCR digest is not the hash of the expected PCR values (or, where the caller
    #: gave none, of the event log's replay).
    PCR_DIGEST = "pcr-digest"
    #: The event log does not replay to the quoted PCR values (it names the first PCR that
    #: differs), lacks a quoted bank, or extends none of the quoted PCRs.
    EVENT_LOG = "event-log"
    #: The boot facts of the quoted events break the verifier's boot policy (it names the fact).
    BOOT_POLICY = "boot-policy"
    #: The name in the certification is not the name of the TPMT_PUBLIC given with it.
    NAME = "name"
    #: The certified key is not the public key the verifier expected.
    KEY = "key"
    #: The certified key is not fixedTPM, fixedParent, sensitiveDataOrigin and unrestricted.
    KEY_ATTRIBUTES = "key-attributes"
    #: The certified key is weaker than RSA-2048, or on a curve other than P-256/384/521.
    KEY_STRENGTH = "key-strength"
    #: An EK or AK certificate that does not chain, is out of date or is unfit.
    CERTIFICATE = "certificate"
    #: A creation attestation's creationHash is not the digest of the creation data given.
    CREATION = "creation"
    #: Bytes that do not parse as the structure they claim to be.
    STRUCTURE = "structure"


class AttestationCheckFailed(AttestationError):
    """A check of an attestation failed; ``check`` (a ``Check``) says which.

    ``AttestationCheckFailed(message, Check.NONCE)``; the subclasses below fix their check.
    """

    #: Which check failed; a ``Check``, equal to its string ("nonce", "pcr-digest", ...).
    check: Check

    def __init__(self, message: str, check: Check | str | None = None) -> None:
        super().__init__(message)
        if check is not None:
            self.check = Check(check)
        elif not isinstance(getattr(self, "check", None), Check):
            raise TypeError(f"{type(self).__name__} needs the Check that failed")

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (*self.args, self.check), self.__dict__


class MalformedAttestation(AttestationCheckFailed, InvalidData):
    """An attestation whose bytes do not parse: also an InvalidData."""

    check = Check.STRUCTURE
