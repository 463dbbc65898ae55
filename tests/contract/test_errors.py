"""The same misuse is the same typed error from every provider.

Each case performs one misuse (a key used against its use, an algorithm not offered, the other
provider's key, file or blob, a bad name, a missing PIN, a bad nonce) and expects one error class
of ``entra_keys.errors``, whichever provider it runs on. Wrong PINs differ by nature (software:
``WrongPassphrase`` when the key file opens; TPM: ``TPMAuthFailure`` counted toward lockout) and
are in test_keys and test_sealing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from entra_keys import (
    AttestationError,
    DecryptionError,
    EntraKeysError,
    InvalidData,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    KeyUsageError,
    Provider,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from entra_keys.provider import EntraPrivateKey

from ..helpers import cached_key, stranger_endorsement_key

PIN = b"2468"
NONCE = bytes(16)
SHA1 = hashes.SHA1()
OAEP = padding.OAEP(padding.MGF1(SHA1), SHA1, None)


@dataclasses.dataclass
class Parts:
    """What a misuse works with: the provider under test, another provider, an empty store."""

    provider: Provider
    other: Provider
    store: KeyStore

    def key(self, key_type: KeyType, usage: KeyUsage) -> EntraPrivateKey:
        return cached_key(self.provider, key_type, usage)

    def others(self, key_type: KeyType, usage: KeyUsage) -> EntraPrivateKey:
        return cached_key(self.other, key_type, usage)


def _rsa(parts: Parts, usage: KeyUsage) -> EntraPrivateKey:
    return parts.key(KeyType.RSA2048, usage)


def _ec(parts: Parts) -> ec.EllipticCurvePrivateKey:
    key = parts.key(KeyType.ECC256, KeyUsage.SIGN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _twice(parts: Parts) -> None:
    parts.store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    parts.store.create("device", KeyType.ECC256, KeyUsage.SIGN)


def _without_pin(parts: Parts) -> None:
    parts.store.create("hello", KeyType.ECC256, KeyUsage.SIGN, pin=PIN)
    parts.store.load("hello")


def _others_session_key(parts: Parts) -> object:
    transport = parts.others(KeyType.RSA2048, KeyUsage.DECRYPT)
    session = parts.other.import_session_key(
        transport, transport.public_key().encrypt(bytes(32), OAEP)
    )
    return parts.provider.session_key_from_pem(parts.other.session_key_to_pem(session))


def _quote(key: EntraPrivateKey, parts: Parts, pcrs: list[int], nonce: bytes) -> object:
    return parts.provider.quote(key, pcrs, nonce)


Misuse = Callable[[Parts], object]
#: Each misuse, the error every provider raises for it, and how it is performed.
MISUSES: dict[str, tuple[type[EntraKeysError], Misuse]] = {
    "sign with a decryption key": (
        KeyUsageError,
        lambda p: _rsa(p, KeyUsage.DECRYPT).sign(b"m", padding.PKCS1v15(), hashes.SHA256()),  # type: ignore[union-attr]
    ),
    "decrypt with a signing key": (
        KeyUsageError,
        lambda p: _rsa(p, KeyUsage.SIGN).decrypt(bytes(256), OAEP),  # type: ignore[union-attr]
    ),
    "sign with SHA-1": (UnsupportedAlgorithm, lambda p: _ec(p).sign(b"m", ec.ECDSA(SHA1))),
    "ECDH": (
        UnsupportedAlgorithm,
        lambda p: _ec(p).exchange(ec.ECDH(), _ec(p).public_key()),
    ),
    "an elliptic-curve decryption key": (
        UnsupportedAlgorithm,
        lambda p: p.provider.create_key(KeyType.ECC256, KeyUsage.DECRYPT),
    ),
    "a session key created": (
        UnsupportedAlgorithm,
        lambda p: p.provider.create_key(KeyType.HMAC_SHA256, KeyUsage.DERIVE),
    ),
    "a P-384 attestation key": (
        UnsupportedAlgorithm,
        lambda p: p.provider.create_key(KeyType.ECC384, KeyUsage.ATTEST),
    ),
    "a ciphertext that does not decrypt": (
        DecryptionError,
        lambda p: _rsa(p, KeyUsage.DECRYPT).decrypt(bytes(256), OAEP),  # type: ignore[union-attr]
    ),
    "a key that is not there": (KeyNotFound, lambda p: p.store.load("nothing")),
    "a key made twice": (KeyExists, _twice),
    "a name that escapes the store": (
        KeyStoreError,
        lambda p: p.store.create("../escape", KeyType.ECC256, KeyUsage.SIGN),
    ),
    "a PIN-protected key loaded without its PIN": (WrongPassphrase, _without_pin),
    "the other provider's key file": (
        KeyFileCorrupt,
        lambda p: p.provider.key_from_pem(
            p.other.key_to_pem(p.others(KeyType.ECC256, KeyUsage.SIGN)), KeyUsage.SIGN
        ),
    ),
    "the other provider's key written out": (
        UnsupportedAlgorithm,
        lambda p: p.provider.key_to_pem(p.others(KeyType.ECC256, KeyUsage.SIGN)),
    ),
    "the other provider's session key file": (KeyFileCorrupt, _others_session_key),
    "the other provider's sealed blob": (
        KeyFileCorrupt,
        lambda p: p.provider.unseal(p.other.seal(b"secret", pin=PIN), pin=PIN),
    ),
    "a sealed blob that is no blob": (
        KeyFileCorrupt,
        lambda p: p.provider.unseal(b"not a blob", pin=PIN),
    ),
    "nothing to seal": (InvalidData, lambda p: p.provider.seal(b"", pin=PIN)),
    "a session key imported by a signing key": (
        KeyUsageError,
        lambda p: p.provider.import_session_key(_rsa(p, KeyUsage.SIGN), bytes(256)),
    ),
    "a session key imported by the other provider's key": (
        UnsupportedAlgorithm,
        lambda p: p.provider.import_session_key(
            p.others(KeyType.RSA2048, KeyUsage.DECRYPT), bytes(256)
        ),
    ),
    "a quote by a signing key": (
        KeyUsageError,
        lambda p: _quote(_rsa(p, KeyUsage.SIGN), p, [0], NONCE),
    ),
    "a quote by the other provider's AK": (
        UnsupportedAlgorithm,
        lambda p: _quote(p.others(KeyType.ECC256, KeyUsage.ATTEST), p, [0], NONCE),
    ),
    "a quote of PCR 24": (
        InvalidData,
        lambda p: _quote(p.key(KeyType.ECC256, KeyUsage.ATTEST), p, [24], NONCE),
    ),
    "a quote of one PCR twice": (
        InvalidData,
        lambda p: _quote(p.key(KeyType.ECC256, KeyUsage.ATTEST), p, [7, 7], NONCE),
    ),
    "a quote of an unknown bank": (
        UnsupportedAlgorithm,
        lambda p: p.provider.quote(p.key(KeyType.ECC256, KeyUsage.ATTEST), [0], NONCE, "md5"),
    ),
    "a quote over a 7-byte nonce": (
        AttestationError,
        lambda p: _quote(p.key(KeyType.ECC256, KeyUsage.ATTEST), p, [0], bytes(7)),
    ),
    "a certification of the other provider's key": (
        UnsupportedAlgorithm,
        lambda p: p.provider.certify(
            p.others(KeyType.ECC256, KeyUsage.SIGN), p.key(KeyType.ECC256, KeyUsage.ATTEST), NONCE
        ),
    ),
    "a credential for an endorsement key not the provider's": (
        AttestationError,
        lambda p: p.provider.activate_credential(
            p.key(KeyType.ECC256, KeyUsage.ATTEST),
            stranger_endorsement_key(),
            b"\x00\x00",
            b"\x00\x00",
        ),
    ),
}


@pytest.mark.parametrize("misuse", MISUSES)
def test_the_same_misuse_is_the_same_typed_error(
    misuse: str, provider: Provider, other_provider: Provider, tmp_path: Path
) -> None:
    expected, perform = MISUSES[misuse]
    parts = Parts(provider, other_provider, KeyStore(provider, tmp_path / "store"))
    with pytest.raises(expected) as caught:
        perform(parts)
    assert type(caught.value) is expected  # the class itself, not a subclass of it
