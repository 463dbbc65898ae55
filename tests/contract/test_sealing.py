"""Sealed secrets: round trips through the store, nothing in the clear in its files, the PIN,
a wrong PIN, altered blobs and the other provider's blobs refused typed."""

from __future__ import annotations

import base64
import os

import pytest

from entra_keys import (
    ForeignKey,
    InvalidData,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    PCRMismatch,
    Provider,
    TPMAuthFailure,
    WrongPassphrase,
)
from entra_keys.store import sealed

from ..helpers import flip_byte, reframe_sealed, sealed_fields

SMALL = b"a refresh token's secret part \x00\xff"
LARGE = os.urandom(6000)  # a PRT and its refresh tokens: several KB
PIN = b"246810"


def _pin_for(provider: Provider) -> bytes | None:
    """Software seals only under a passphrase; the TPM seals with or without a PIN."""
    return None if provider.hardware_backed else PIN


@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_a_sealed_secret_unseals_to_the_same_bytes(store: KeyStore, secret: bytes) -> None:
    pin = _pin_for(store.provider)
    sealed.seal(store, "prt", secret, pin=pin)
    assert sealed.unseal(store, "prt", pin=pin) == secret
    assert sealed.names(store) == ["prt"]
    path = store.path / "prt.sealed"
    assert path.stat().st_mode & 0o777 == 0o600
    kind = store.provider.kind.upper()
    assert path.read_bytes().startswith(f"-----BEGIN ENTRA KEYS SEALED {kind} DATA-----".encode())


def test_the_secret_is_in_no_file_of_the_store(store: KeyStore) -> None:
    pin = _pin_for(store.provider)
    store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    sealed.seal(store, "small", SMALL, pin=pin)
    sealed.seal(store, "large", LARGE, pin=pin)
    files = [p for p in store.path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"small.sealed", "large.sealed", "device.pem"}
    for path in files:
        data = path.read_bytes()
        for secret in (SMALL, LARGE[:64], LARGE[-64:], PIN):
            assert secret not in data, path
            assert base64.b64encode(secret) not in data, path


def test_the_store_keeps_replaces_and_deletes_sealed_secrets(store: KeyStore) -> None:
    pin = _pin_for(store.provider)
    sealed.seal(store, "a", b"one", pin=pin)
    with pytest.raises(KeyExists, match="'a'"):
        sealed.seal(store, "a", b"two", pin=pin)
    sealed.seal(store, "a", b"two", pin=pin, replace=True)
    assert sealed.unseal(store, "a", pin=pin) == b"two"
    sealed.seal(store, "b", b"three", pin=pin)
    with pytest.raises(KeyStoreError, match="invalid key name"):
        sealed.seal(store, "../escape", b"x", pin=pin)
    assert sealed.names(store) == ["a", "b"]
    assert store.list() == []  # sealed secrets are not keys
    sealed.delete(store, "a")
    assert sealed.names(store) == ["b"]
    with pytest.raises(KeyNotFound):
        sealed.unseal(store, "a", pin=pin)
    with pytest.raises(KeyNotFound):
        sealed.delete(store, "a")
    assert not [p for p in store.path.iterdir() if p.name.startswith(".tmp-")]


def test_nothing_or_too_much_is_not_sealed(provider: Provider) -> None:
    pin = _pin_for(provider)
    for data in (b"", os.urandom(sealed.MAX_SECRET + 1)):
        with pytest.raises(InvalidData):
            provider.seal(data, pin=pin)


def test_an_altered_blob_fails_typed(provider: Provider) -> None:
    pin = _pin_for(provider)
    for secret in (SMALL, LARGE):
        blob = provider.seal(secret, pin=pin)
        fields, begin, end = sealed_fields(blob)
        for index in range(1, len(fields)):
            if not fields[index]:
                continue
            changed = list(fields)
            changed[index] = flip_byte(changed[index], len(changed[index]) // 2)
            with pytest.raises((KeyFileCorrupt, ForeignKey, WrongPassphrase, PCRMismatch)):
                provider.unseal(reframe_sealed(changed, begin, end), pin=pin)
        with pytest.raises(KeyFileCorrupt, match="truncated"):
            provider.unseal(reframe_sealed(fields, begin, end, cut=10), pin=pin)
    with pytest.raises(KeyFileCorrupt):
        provider.unseal(b"not a blob", pin=pin)


@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_a_secret_with_a_pin_unseals_only_with_it(provider: Provider, secret: bytes) -> None:
    blob = provider.seal(secret, pin=PIN)
    assert provider.unseal(blob, pin=PIN) == secret
    with pytest.raises(WrongPassphrase, match=r"(?i)PIN"):
        provider.unseal(blob)


def test_a_wrong_pin_does_not_unseal(provider: Provider, pin_tries: None) -> None:
    """Software: the PIN is the passphrase, a wrong one does not decrypt. TPM: the TPM counts the
    wrong PIN toward lockout (test_sealed.py: the count down on a swtpm of its own)."""
    blob = provider.seal(SMALL, pin=PIN)
    if provider.hardware_backed:
        with pytest.raises(TPMAuthFailure, match="tries left"):
            provider.unseal(blob, pin=b"wrong")
    else:
        with pytest.raises(WrongPassphrase):
            provider.unseal(blob, pin=b"wrong")
    assert provider.unseal(blob, pin=PIN) == SMALL


def test_a_blob_of_another_provider_is_refused(
    provider: Provider, other_provider: Provider
) -> None:
    blob = other_provider.seal(SMALL, pin=PIN)
    with pytest.raises(KeyFileCorrupt, match=f"{other_provider.kind} provider"):
        provider.unseal(blob, pin=PIN)
    assert other_provider.unseal(blob, pin=PIN) == SMALL
