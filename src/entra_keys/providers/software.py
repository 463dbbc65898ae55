"""The software provider: keys held by pyca ``cryptography`` in this process's memory.

It behaves like the TPM provider (same key types, same accepted and refused calls, same errors)
so that code written against one runs on the other, but its keys are never ``hardware_backed``.
"""

from __future__ import annotations

from typing import ClassVar

from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer

from ..errors import DecryptionError, KeyFileCorrupt, UnsupportedAlgorithm, WrongPassphrase
from ..provider import (
    EntraECKey,
    EntraPrivateKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
    SignatureScheme,
)

__all__ = ["SoftwareECKey", "SoftwareProvider", "SoftwareRSAKey"]


class SoftwareRSAKey(EntraRSAKey):
    """An RSA key in process memory, checked like a TPM key before pyca does the work."""

    @property
    def hardware_backed(self) -> bool:
        """Always False: the private half is in this process's memory."""
        return False

    def __init__(self, key: rsa.RSAPrivateKey, usage: KeyUsage) -> None:
        self._key = key
        self.key_type = KeyType.of(key.public_key())
        self.usage = usage

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        """Signs the data (PKCS#1 v1.5 or PSS with a digest-length salt)."""
        scheme, hash_alg, digest = self.rsa_sign_args(data, padding, algorithm)
        pad = _pss(hash_alg) if scheme is SignatureScheme.RSAPSS else padding
        return self._key.sign(digest, pad, utils.Prehashed(hash_alg))

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Decrypts an RSA-OAEP ciphertext (SHA-1 or SHA-256, empty label)."""
        self.rsa_decrypt_args(padding)
        try:
            return self._key.decrypt(ciphertext, padding)
        except ValueError as exc:
            raise DecryptionError("the ciphertext does not decrypt with this key") from exc

    @property
    def key_size(self) -> int:
        """The modulus size in bits."""
        return self._key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half."""
        return self._key.public_key()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """The private numbers (software keys only)."""
        return self._key.private_numbers()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """The serialized private key (software keys only)."""
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> SoftwareRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SoftwareRSAKey:
        return self


class SoftwareECKey(EntraECKey):
    """An elliptic-curve key in process memory, checked like a TPM key."""

    @property
    def hardware_backed(self) -> bool:
        """Always False: the private half is in this process's memory."""
        return False

    def __init__(self, key: ec.EllipticCurvePrivateKey, usage: KeyUsage) -> None:
        self._key = key
        self.key_type = KeyType.of(key.public_key())
        self.usage = usage

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Signs the data with ECDSA; the signature is DER, as from ``cryptography``."""
        hash_alg, digest = self.ecdsa_sign_args(data, signature_algorithm)
        return self._key.sign(digest, ec.ECDSA(utils.Prehashed(hash_alg)))

    @property
    def curve(self) -> ec.EllipticCurve:
        """The curve."""
        return self._key.curve

    @property
    def key_size(self) -> int:
        """The curve size in bits."""
        return self._key.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half."""
        return self._key.public_key()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """The private numbers (software keys only)."""
        return self._key.private_numbers()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """The serialized private key (software keys only)."""
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> SoftwareECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SoftwareECKey:
        return self


def _pss(hash_alg: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.DIGEST_LENGTH)


class SoftwareProvider(Provider):
    """Keys made and used by pyca ``cryptography``; stored as PKCS#8 (encrypted on request)."""

    kind: ClassVar[str] = "software"
    hardware_backed: ClassVar[bool] = False
    pem_labels: ClassVar[frozenset[str]] = frozenset({"PRIVATE KEY", "ENCRYPTED PRIVATE KEY"})

    def create_key(self, key_type: KeyType, usage: KeyUsage) -> EntraPrivateKey:
        """Creates a key in memory."""
        if key_type.is_rsa:
            return SoftwareRSAKey(rsa.generate_private_key(65537, key_type.bits), usage)
        if usage is not KeyUsage.SIGN:
            raise UnsupportedAlgorithm("elliptic-curve keys sign; decryption keys are RSA")
        return SoftwareECKey(ec.generate_private_key(key_type.curve), usage)

    def key_to_pem(self, key: EntraPrivateKey, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
        if not isinstance(key, SoftwareRSAKey | SoftwareECKey):
            raise UnsupportedAlgorithm(f"{type(key).__name__} is not a software key")
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return key._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def key_from_pem(
        self, data: bytes, usage: KeyUsage, passphrase: bytes | None = None
    ) -> EntraPrivateKey:
        """Loads a PKCS#8 PEM key; a missing or wrong passphrase is WrongPassphrase."""
        encrypted = b"ENCRYPTED PRIVATE KEY" in data
        if encrypted and not passphrase:
            raise WrongPassphrase("the key is encrypted and no passphrase was given")
        try:
            # A passphrase given for an unencrypted key is ignored, as for a TPM key's file.
            key = serialization.load_pem_private_key(
                data, password=passphrase if encrypted else None
            )
        except (ValueError, TypeError, _PycaUnsupported) as exc:
            if encrypted:
                raise WrongPassphrase("the passphrase is wrong or the key is damaged") from exc
            raise KeyFileCorrupt(f"not a readable PKCS#8 key ({exc})") from exc
        try:
            if isinstance(key, rsa.RSAPrivateKey):
                return SoftwareRSAKey(key, usage)
            if isinstance(key, ec.EllipticCurvePrivateKey) and usage is KeyUsage.SIGN:
                return SoftwareECKey(key, usage)
        except UnsupportedAlgorithm as exc:
            raise KeyFileCorrupt(f"a key entra_keys does not make: {exc}") from exc
        raise KeyFileCorrupt(
            f"a {type(key).__name__} for {usage.value} is not a key entra_keys makes"
        )

    def info(self) -> ProviderInfo:
        """The software provider has no chip to describe."""
        return ProviderInfo(kind=self.kind, hardware_backed=False)
