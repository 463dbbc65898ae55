"""The same misuse is the same typed error from every provider.

Each case performs one misuse (a key used against its use, an algorithm not offered, the other
provider's key, file or blob, a bad name, a missing PIN, a bad nonce) and expects one error class
of ``entra_keys.errors``, whichever provider it runs on. A missing PIN is ``WrongPassphrase``
from both, when the key loads, whatever store passphrase is given. A wrong PIN differs by
nature, and ``test_a_wrong_pin_is_refused_before_any_signature`` pins down the decision: the TPM
checks a PIN only at a use (so loading never spends a dictionary-attack try) and answers
``TPMAuthFailure`` with the tries left; software checks it when the key file opens (scrypt
under the PIN and the passphrase) and answers ``WrongPassphrase``. Neither signs with it.
"""

from __future__ import annotations

import dataclasses
import os
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
    TPMAuthFailure,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from entra_keys.provider import EntraPrivateKey
from entra_keys.store import sealed

from ..helpers import cached_key, reframe_sealed, sealed_fields, stranger_endorsement_key

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


def _written_under(provider: Provider, passphrase: bytes) -> bytes | None:
    """The passphrase a key file is written under: software's; a TPM key file takes none (it is
    bound to its TPM), and a passphrase given to load it is ignored."""
    return None if provider.hardware_backed else passphrase


def _without_pin_given_the_passphrase(parts: Parts) -> None:
    passphrase = b"the store passphrase"
    written = _written_under(parts.provider, passphrase)
    parts.store.create("hello", KeyType.ECC256, KeyUsage.SIGN, passphrase=written, pin=PIN)
    parts.store.load("hello", passphrase=passphrase)


def _under_another_name(parts: Parts) -> bytes:
    sealed.seal(parts.store, "a", b"secret", pin=PIN)
    os.replace(parts.store.path / "a.sealed", parts.store.path / "b.sealed")
    return sealed.unseal(parts.store, "b", pin=PIN)


def _unbound(parts: Parts) -> bytes:
    """A blob whose version says it was sealed before names were bound (version 1)."""
    fields, begin, end = sealed_fields(parts.provider.seal(b"secret", pin=PIN, name="a"))
    return parts.provider.unseal(reframe_sealed([b"\x01", *fields[1:]], begin, end), pin=PIN)


def _import_with_trailing_data(parts: Parts) -> object:
    tss2 = b"-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n"
    return parts.store.import_key_file("imported", tss2 + b"trailing")


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
    "a sealed blob under another name": (KeyFileCorrupt, _under_another_name),
    "a sealed blob of an earlier release, not bound to its name": (KeyFileCorrupt, _unbound),
    "a PIN-protected key loaded with the store passphrase but no PIN": (
        WrongPassphrase,
        _without_pin_given_the_passphrase,
    ),
    "a key file with data after its PEM block imported": (
        KeyFileCorrupt,
        _import_with_trailing_data,
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


def test_a_wrong_pin_is_refused_before_any_signature(
    provider: Provider, tmp_path: Path, pin_tries: None
) -> None:
    """The decided split, by nature: a TPM checks a PIN only when the key is used (loading asks
    for none, so it never spends a dictionary-attack try) and counts a wrong one toward lockout;
    software checks it when the key file opens. Either way nothing is signed with a wrong PIN,
    whatever store passphrase is given (the passphrase once replaced the PIN in software)."""
    store = KeyStore(provider, tmp_path / "store")
    passphrase = b"the store passphrase"
    written = _written_under(provider, passphrase)
    store.create("hello", KeyType.ECC256, KeyUsage.SIGN, passphrase=written, pin=PIN)
    wrong = PIN + b"0"
    if provider.hardware_backed:
        key = store.load("hello", passphrase=passphrase, pin=wrong)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        with pytest.raises(TPMAuthFailure) as caught:
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        assert caught.value.tries_left is not None
    else:
        with pytest.raises(WrongPassphrase, match="PIN is wrong"):
            store.load("hello", passphrase=passphrase, pin=wrong)
    good = store.load("hello", passphrase=passphrase, pin=PIN)
    assert isinstance(good, ec.EllipticCurvePrivateKey)
    good.public_key().verify(good.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m",
                             ec.ECDSA(hashes.SHA256()))  # fmt: skip
