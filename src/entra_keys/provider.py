"""The provider interface and the key objects both providers hand out.

A provider makes and loads keys; a key is a ``cryptography`` private key (``RSAPrivateKey`` or
``EllipticCurvePrivateKey``) that also says what it is (``key_type``, ``usage``) and whether it
lives in hardware (``hardware_backed``). The argument checks that decide what a key accepts live
here, once, so that both providers accept and refuse exactly the same calls.

What a key is (``KeyType``, ``KeyUsage``, the nonce limits) comes from ``tcg.model``, and the
records a provider hands out for attestation (``Quote``, ``Certification``, ``EndorsementKey``)
from ``tcg.records``: below the keys, so that a verifier reads them without a provider.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer

from .errors import AttestationError, InvalidData, KeyUsageError, UnsupportedAlgorithm
from .tcg.model import MAX_NONCE, MIN_NONCE, KeyType, KeyUsage
from .tcg.records import Certification, EndorsementKey, Quote

__all__ = [
    "MAX_NONCE",
    "MIN_NONCE",
    "Certification",
    "EndorsementKey",
    "EntraECKey",
    "EntraKey",
    "EntraPrivateKey",
    "EntraRSAKey",
    "KeyType",
    "KeyUsage",
    "Provider",
    "ProviderInfo",
    "Quote",
    "SessionKey",
    "SignatureScheme",
    "check_creatable",
    "check_nonce",
]


def check_nonce(nonce: bytes) -> None:
    """Refuse, in both providers, a nonce the TPM would reject with TPM_RC_SIZE, and one too
    short to be a verifier's fresh random nonce (an empty one matches any replay)."""
    if not isinstance(nonce, bytes | bytearray | memoryview):
        raise AttestationError(f"the nonce is bytes, not {type(nonce).__name__}")
    if len(nonce) > MAX_NONCE:
        raise AttestationError(f"the nonce is {len(nonce)} bytes; a TPM takes at most {MAX_NONCE}")
    if len(nonce) < MIN_NONCE:
        raise AttestationError(
            f"the nonce is {len(nonce)} bytes; a verifier's nonce is at least {MIN_NONCE}"
        )


def check_creatable(key_type: KeyType, usage: KeyUsage) -> None:
    """Refuse, the same way in both providers, what ``create_key`` cannot make."""
    if not isinstance(key_type, KeyType) or not isinstance(usage, KeyUsage):
        raise InvalidData(
            f"a key type is a KeyType and a usage a KeyUsage, not {type(key_type).__name__} "
            f"and {type(usage).__name__}"
        )
    if key_type is KeyType.HMAC_SHA256 or usage is KeyUsage.DERIVE:
        raise UnsupportedAlgorithm("session keys are imported (import_session_key), not created")
    if usage is KeyUsage.DECRYPT and not key_type.is_rsa:
        raise UnsupportedAlgorithm("elliptic-curve keys sign; decryption keys are RSA")
    if usage is KeyUsage.ATTEST and key_type not in (KeyType.RSA2048, KeyType.ECC256):
        raise UnsupportedAlgorithm("attestation keys are RSA-2048 or ECC P-256")


class SignatureScheme(enum.Enum):
    """The signature schemes keys offer (RSA PKCS#1 v1.5, RSA-PSS, ECDSA)."""

    RSASSA = "rsassa"
    RSAPSS = "rsapss"
    ECDSA = "ecdsa"


# Hashes a key signs with, and the ones RSA-OAEP decrypts with (SHA-1 is the Entra transport key's).
_SIGN_HASHES: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}
#: The offered hashes' own classes and their hashlib constructors: the signing hot path hashes
#: with these after one dict lookup (isinstance on pyca's ABCs and hashlib.new cost more).
_HASHERS: dict[type, Callable[[Buffer], Any]] = {
    hashes.SHA256: hashlib.sha256,
    hashes.SHA384: hashlib.sha384,
    hashes.SHA512: hashlib.sha512,
}
_OAEP_HASHES = ("sha1", "sha256")


def oaep_padding(hash_name: str) -> padding.OAEP:
    """RSA-OAEP with ``hash_name`` ("sha1" or "sha256") for both OAEP and MGF1, empty label:
    the two paddings a session key comes wrapped in (JWE RSA-OAEP and RSA-OAEP-256, RFC 7518
    §4.3); UnsupportedAlgorithm for any other."""
    chosen = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}.get(hash_name)
    if chosen is None:
        raise UnsupportedAlgorithm(f"RSA-OAEP with {hash_name!r}: sha1 and sha256 are offered")
    return padding.OAEP(padding.MGF1(chosen()), chosen(), None)


@dataclass(frozen=True)
class ProviderInfo:
    """What a provider is: its kind and, for a TPM, the chip's maker and versions."""

    kind: str
    hardware_backed: bool
    manufacturer: str | None = None
    vendor: str | None = None
    firmware_version: str | None = None
    spec_version: str | None = None
    tcti: str | None = None
    storage_key: str | None = None


class SessionKey(abc.ABC):
    """The PRT session key bound to a provider: it computes HMAC-SHA256 and never shows itself."""

    #: The longest input ``hmac_sha256`` takes from every provider: one TPM2_HMAC's buffer
    #: (TPM2B_MAX_BUFFER); every KDF input fits.
    MAX_INPUT: ClassVar[int] = 1024

    @property
    @abc.abstractmethod
    def hardware_backed(self) -> bool:
        """True only when the key lives in a TPM (a keyed-hash object under the storage key)."""

    @abc.abstractmethod
    def hmac_sha256(self, data: bytes) -> bytes:
        """HMAC-SHA256 of the data under the session key (one TPM2_HMAC in a TPM); data over
        ``MAX_INPUT`` bytes is UnsupportedAlgorithm from every provider."""

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        """Keep the key ready for a run of derivations (a TPM object stays loaded until exit)."""
        yield

    def __repr__(self) -> str:
        backing = "hardware" if self.hardware_backed else "software"
        return f"<{type(self).__name__} {backing}>"


class EntraKey(abc.ABC):
    """What every entra_keys key says about itself, beyond the ``cryptography`` interface."""

    key_type: KeyType
    usage: KeyUsage

    @property
    @abc.abstractmethod
    def hardware_backed(self) -> bool:
        """True only when the private half lives in a TPM and was never outside it."""

    @property
    @abc.abstractmethod
    def hardware_reason(self) -> str:
        """Why the key is or is not hardware-backed, in words (e.g. "imported into the TPM
        (TPM2_Import): ..."), for status reports and logs."""

    @property
    @abc.abstractmethod
    def tpm_public(self) -> bytes:
        """The key's TPMT_PUBLIC: what a TPM names and certifies (built alike for software)."""

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        """Keep the key ready for a run of operations (a TPM key stays loaded until exit)."""
        yield

    def __repr__(self) -> str:
        backing = "hardware" if self.hardware_backed else "software"
        return f"<{type(self).__name__} {self.key_type.value} {self.usage.value} {backing}>"

    def _require(self, usage: KeyUsage) -> None:
        """Refuse an operation the key was not created for, the same way in both providers."""
        if self.usage is not usage:
            raise KeyUsageError(
                f"this {self.key_type.value} key was created to {self.usage.value}, "
                f"not to {usage.value}"
            )


class EntraRSAKey(EntraKey, rsa.RSAPrivateKey):
    """An RSA key from either provider; a ``cryptography`` ``RSAPrivateKey``."""

    def rsa_sign_args(
        self,
        data: bytes,
        pad: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
        *,
        digest: bool = True,
    ) -> tuple[SignatureScheme, hashes.HashAlgorithm, bytes]:
        """Check a sign call and return (scheme, hash, digest); refuse what is not offered.
        With ``digest=False`` only check (the digest is then b"")."""
        if self.usage is not KeyUsage.SIGN:
            self._require(KeyUsage.SIGN)
        hash_alg, value = _digest(data, algorithm, compute=digest)
        if type(pad) is padding.PKCS1v15 or isinstance(pad, padding.PKCS1v15):
            return SignatureScheme.RSASSA, hash_alg, value
        if isinstance(pad, padding.PSS):
            mgf = pad.mgf
            if not isinstance(mgf, padding.MGF1) or mgf._algorithm.name != hash_alg.name:
                raise UnsupportedAlgorithm("RSA-PSS needs MGF1 with the signature's own hash")
            salt = pad._salt_length
            if salt is not padding.PSS.DIGEST_LENGTH and salt != hash_alg.digest_size:
                raise UnsupportedAlgorithm(
                    "RSA-PSS salt length must be the digest length (PSS.DIGEST_LENGTH): "
                    "that is the length a TPM signs with"
                )
            return SignatureScheme.RSAPSS, hash_alg, value
        raise UnsupportedAlgorithm(f"RSA signature padding {pad.name}")

    def rsa_decrypt_args(self, pad: AsymmetricPadding) -> hashes.HashAlgorithm:
        """Check a decrypt call and return the OAEP hash; only RSA-OAEP, empty label."""
        self._require(KeyUsage.DECRYPT)
        if not isinstance(pad, padding.OAEP):
            raise UnsupportedAlgorithm(f"RSA decryption padding {pad.name}: only OAEP is offered")
        alg = pad.algorithm
        if alg.name not in _OAEP_HASHES:
            raise UnsupportedAlgorithm(f"RSA-OAEP with {alg.name}: SHA-1 and SHA-256 are offered")
        mgf = pad.mgf
        if not isinstance(mgf, padding.MGF1) or mgf._algorithm.name != alg.name:
            raise UnsupportedAlgorithm("RSA-OAEP needs MGF1 with the same hash as OAEP")
        if pad._label:
            raise UnsupportedAlgorithm("RSA-OAEP with a label is not offered")
        return alg


class EntraECKey(EntraKey, ec.EllipticCurvePrivateKey):
    """An elliptic-curve key from either provider; a ``cryptography`` EC private key."""

    def ecdsa_sign_args(
        self,
        data: Buffer,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
        *,
        digest: bool = True,
    ) -> tuple[hashes.HashAlgorithm, bytes]:
        """Check an ECDSA sign call and return (hash, digest); ``digest=False`` only checks."""
        if self.usage is not KeyUsage.SIGN:
            self._require(KeyUsage.SIGN)
        if type(signature_algorithm) is not ec.ECDSA and not isinstance(
            signature_algorithm, ec.ECDSA
        ):
            raise UnsupportedAlgorithm("only ECDSA signatures are offered")
        if signature_algorithm.deterministic_signing:
            raise UnsupportedAlgorithm("deterministic ECDSA (RFC 6979) is not offered")
        return _digest(data, signature_algorithm.algorithm, compute=digest)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """Refused: entra_keys keys sign; ECDH is not offered."""
        raise UnsupportedAlgorithm("ECDH key exchange is not offered")


EntraPrivateKey = EntraRSAKey | EntraECKey


def _digest(
    data: Buffer,
    algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    *,
    compute: bool = True,
) -> tuple[hashes.HashAlgorithm, bytes]:
    """Hash the data (or take a prehashed digest) with an offered hash; with ``compute=False``
    only check, for a caller that hands the data to pyca to hash."""
    hasher = _HASHERS.get(type(algorithm))
    if hasher is not None:  # SHA-256, -384 or -512 itself: offered, not prehashed
        return cast(hashes.HashAlgorithm, algorithm), hasher(data).digest() if compute else b""
    if not isinstance(algorithm, hashes.HashAlgorithm | utils.Prehashed):
        raise UnsupportedAlgorithm("a signature without a hash (NoDigestInfo) is not offered")
    if isinstance(algorithm, utils.Prehashed):
        hash_alg = algorithm._algorithm
        _check_sign_hash(hash_alg)
        data = bytes(data)
        if len(data) != hash_alg.digest_size:
            raise UnsupportedAlgorithm(
                f"a prehashed {hash_alg.name} digest is {hash_alg.digest_size} bytes, "
                f"not {len(data)}"
            )
        return hash_alg, data
    _check_sign_hash(algorithm)
    if not compute:
        return algorithm, b""
    return algorithm, hashlib.new(algorithm.name, data).digest()


def _check_sign_hash(algorithm: hashes.HashAlgorithm) -> None:
    if algorithm.name not in _SIGN_HASHES:
        raise UnsupportedAlgorithm(
            f"signing with {algorithm.name}: SHA-256, SHA-384 and SHA-512 are offered"
        )


class Provider(abc.ABC):
    """Makes, stores and loads keys; one implementation per place keys can live."""

    kind: ClassVar[str]
    hardware_backed: ClassVar[bool]
    #: PEM labels of the key files this provider writes and reads.
    pem_labels: ClassVar[frozenset[str]]

    @abc.abstractmethod
    def create_key(
        self, key_type: KeyType, usage: KeyUsage, *, pin: bytes | None = None
    ) -> EntraPrivateKey:
        """Creates a new key of that type for that use, guarded by a PIN if one is given."""

    @abc.abstractmethod
    def key_to_pem(self, key: EntraPrivateKey, passphrase: bytes | None = None) -> bytes:
        """Serializes a key of this provider to the PEM form kept in the key store."""

    @abc.abstractmethod
    def key_from_pem(
        self,
        data: bytes,
        usage: KeyUsage,
        passphrase: bytes | None = None,
        *,
        pin: bytes | None = None,
        allow_imported: bool = False,
    ) -> EntraPrivateKey:
        """Loads a key from its stored PEM form; raises KeyStoreError subclasses on bad input.

        A TPM key whose private half was ever outside the TPM (imported, or duplicable) is
        ``ImportedKey`` unless ``allow_imported``; it then loads with ``hardware_backed=False``.
        """

    @abc.abstractmethod
    def info(self) -> ProviderInfo:
        """Describes the provider (and, for a TPM, the chip)."""

    # -- attestation ----------------------------------------------------------------------------

    @abc.abstractmethod
    def endorsement_keys(self, key_type: KeyType | None = None) -> list[EndorsementKey]:
        """The endorsement keys (RSA and ECC) with their certificates where provisioned; with
        ``key_type``, only the one of that type (none where there is none), read alone."""

    @abc.abstractmethod
    def activate_credential(
        self,
        ak: EntraPrivateKey,
        ek: EndorsementKey,
        credential_blob: bytes,
        encrypted_secret: bytes,
    ) -> bytes:
        """Recovers the secret a verifier bound to this EK and this AK's name (enrollment)."""

    @abc.abstractmethod
    def quote(
        self,
        ak: EntraPrivateKey,
        pcrs: Sequence[int],
        nonce: bytes,
        bank: str = "sha256",
        *,
        event_log: bool | str | os.PathLike[str] = False,
    ) -> Quote:
        """A PCR quote signed by the AK over the caller's nonce (at most 32 bytes). With
        ``event_log``, the quote carries the TCG event log read after it: True, the kernel's
        (``tcg.eventlog.KERNEL_EVENT_LOG``: a TPM's own boot, which the software provider has
        none of: ``HardwareUnavailable``); a path, that file (a swtpm's log, a copy)."""

    @abc.abstractmethod
    def certify(self, key: EntraPrivateKey, ak: EntraPrivateKey, nonce: bytes) -> Certification:
        """The AK's signed statement that the key lives here, with its attributes."""

    # -- the PRT session key ------------------------------------------------------------------

    @abc.abstractmethod
    def import_session_key(
        self, transport_key: EntraPrivateKey, encrypted_key: bytes, *, oaep_hash: str = "sha1"
    ) -> SessionKey:
        """Decrypts a session key (RSA-OAEP to the transport key, with SHA-1 or, for
        RSA-OAEP-256, ``oaep_hash="sha256"``) and binds it here."""

    @abc.abstractmethod
    def session_key_to_pem(self, key: SessionKey, passphrase: bytes | None = None) -> bytes:
        """Serializes a session key of this provider to the PEM form kept in the key store."""

    @abc.abstractmethod
    def session_key_from_pem(self, data: bytes, passphrase: bytes | None = None) -> SessionKey:
        """Loads a session key from its stored PEM form."""

    # -- sealed secrets -----------------------------------------------------------------------

    @abc.abstractmethod
    def seal(
        self,
        data: bytes,
        *,
        pin: bytes | None = None,
        pcrs: Sequence[int] | None = None,
        name: str = "",
    ) -> bytes:
        """Seals a small secret (up to 32 KB) to this provider, under a PIN and to PCR values if
        given, bound to ``name`` (authenticated: it unseals under that name only); returns an
        opaque text blob whose label says which provider sealed it."""

    @abc.abstractmethod
    def unseal(
        self,
        blob: bytes,
        *,
        pin: bytes | None = None,
        name: str = "",
        allow_unbound: bool = False,
    ) -> bytes:
        """The secret of a blob this provider sealed as ``name``; raises typed errors for a
        wrong PIN, another name, a blob of another TPM or provider, changed PCRs, or an altered
        blob. A blob sealed before blobs were bound to names is refused (``KeyFileCorrupt``)
        unless ``allow_unbound``: the caller vouches that it is the secret of that name."""

    def close(self) -> None:  # noqa: B027 - a provider with nothing to release keeps this
        """Releases what the provider holds (TPM connection, storage key)."""

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
