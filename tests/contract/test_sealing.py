"""Sealed secrets: round trips through the store, nothing in the clear in its files, the PIN,
a wrong PIN, altered blobs and the other provider's blobs refused typed; a blob bound to its
name (another name refused, earlier releases' unbound blobs only when vouched for), and the
rollback limit."""

from __future__ import annotations

import base64
import os
import shutil
import time

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


def test_a_blob_of_repeated_begin_lines_is_refused_in_linear_time(provider: Provider) -> None:
    """A blob of repeated BEGIN lines made the block search rescan to the end from each one:
    1 MiB took about 4 minutes. A blob over the store's limit is refused before any parsing, and
    one under it (60 KB of BEGIN lines with no END) in well under a second."""
    pin = _pin_for(provider)
    kind = provider.kind.upper().encode()
    line = b"-----BEGIN ENTRA KEYS SEALED " + kind + b" DATA-----\nAAAA\n"
    for size, match in ((60_000, "no end"), (1 << 20, "at most")):
        blob = line * (size // len(line))
        started = time.perf_counter()
        with pytest.raises(KeyFileCorrupt, match=match):
            provider.unseal(blob, pin=pin, name="a")
        assert time.perf_counter() - started < 0.5


def test_a_name_that_is_not_utf8_is_invalid_data(provider: Provider) -> None:
    """A lone surrogate in a name raised UnicodeEncodeError from both providers."""
    pin = _pin_for(provider)
    with pytest.raises(InvalidData, match="UTF-8"):
        provider.seal(b"secret", pin=pin, name="\ud800")
    blob = provider.seal(b"secret", pin=pin, name="a")
    with pytest.raises(InvalidData, match="UTF-8"):
        provider.unseal(blob, pin=pin, name="\ud800")


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


# -- a blob is bound to its name ----------------------------------------------------------------


def test_a_blob_copied_under_another_name_is_refused(store: KeyStore) -> None:
    """An attacker with write access to the store copies (or renames) one secret's blob to
    another name: it does not unseal there, before anything is decrypted; a name field edited
    to match fails the AES-GCM tag that covers it. The original still unseals."""
    pin = _pin_for(store.provider)
    sealed.seal(store, "refresh-token", SMALL, pin=pin)
    sealed.seal(store, "disk-key", b"another secret", pin=pin)
    blob = (store.path / "refresh-token.sealed").read_bytes()
    target = store.path / "disk-key.sealed"
    target.write_bytes(blob)  # the copy, over the other secret
    with pytest.raises(KeyFileCorrupt, match="sealed as 'refresh-token', not 'disk-key'"):
        sealed.unseal(store, "disk-key", pin=pin)
    os.rename(store.path / "refresh-token.sealed", store.path / "moved.sealed")
    with pytest.raises(KeyFileCorrupt, match="sealed as 'refresh-token', not 'moved'"):
        sealed.unseal(store, "moved", pin=pin)
    fields, begin, end = sealed_fields(blob)
    edited = [b"disk-key" if field == b"refresh-token" else field for field in fields]
    assert edited != fields
    target.write_bytes(reframe_sealed(edited, begin, end))
    with pytest.raises((KeyFileCorrupt, WrongPassphrase)):  # the GCM tag fails
        sealed.unseal(store, "disk-key", pin=pin)
    os.rename(store.path / "moved.sealed", store.path / "refresh-token.sealed")
    assert sealed.unseal(store, "refresh-token", pin=pin) == SMALL


def test_the_provider_binds_the_name_too(provider: Provider) -> None:
    pin = _pin_for(provider)
    blob = provider.seal(SMALL, pin=pin, name="a")
    assert provider.unseal(blob, pin=pin, name="a") == SMALL
    for other in ("b", "", "A"):
        with pytest.raises(KeyFileCorrupt, match="sealed as 'a'"):
            provider.unseal(blob, pin=pin, name=other)
    with pytest.raises(InvalidData):
        provider.seal(SMALL, pin=pin, name="x" * 256)


def test_an_older_blob_put_back_still_unseals_rollback_is_a_limit(store: KeyStore) -> None:
    """Rollback is not detected (SECURITY.md): an older blob of the same name, put back by
    someone who can write the store, unseals to the older secret. This test pins the limit
    down so that a counter, once added, changes it on purpose."""
    pin = _pin_for(store.provider)
    sealed.seal(store, "prt", b"old token", pin=pin)
    older = (store.path / "prt.sealed").read_bytes()
    sealed.seal(store, "prt", b"new token", pin=pin, replace=True)
    assert sealed.unseal(store, "prt", pin=pin) == b"new token"
    (store.path / "prt.sealed").write_bytes(older)
    assert sealed.unseal(store, "prt", pin=pin) == b"old token"


def _unbound_blob(provider: Provider, secret: bytes, pin: bytes | None) -> bytes:
    """A blob as entra_keys sealed it before blobs were bound to names (version 1), made here
    independently: software, scrypt + AES-GCM whose associated data is the framed
    (version, salt, nonce); TPM, the secret itself in a sealed data object."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kind = provider.kind.upper()
    begin = f"-----BEGIN ENTRA KEYS SEALED {kind} DATA-----\n".encode()
    end = f"-----END ENTRA KEYS SEALED {kind} DATA-----\n".encode()
    if not provider.hardware_backed:
        assert pin is not None
        salt, nonce = os.urandom(16), os.urandom(12)
        aad = reframe_sealed([b"\x01", salt, nonce], begin, end)
        key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(pin)
        sealed_data = AESGCM(key).encrypt(nonce, secret, aad)
        return reframe_sealed([b"\x01", salt, nonce, sealed_data], begin, end)
    conn = provider.connection  # type: ignore[attr-defined]
    t = conn.tss
    sensitive = t.TPM2B_SENSITIVE_CREATE(
        sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(secret))
    )
    public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
    public.objectAttributes = t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT
    public.objectAttributes |= t.TPMA_OBJECT.USERWITHAUTH | t.TPMA_OBJECT.NODA
    public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.NULL
    with conn.command("seal as version 1 did") as esys:
        private, created, _, _, _ = esys.create(
            conn.storage_key, sensitive, t.TPM2B_PUBLIC(publicArea=public)
        )
    fields = [
        b"\x01",
        conn.storage_parent.to_bytes(4, "big"),
        b"\x00",  # no PIN, no envelope
        b"",  # no PCRs
        bytes(created.marshal()),
        bytes(private.marshal()),
    ]
    return reframe_sealed(fields, begin, end)


def test_a_blob_of_an_earlier_release_is_refused_unless_vouched_for(store: KeyStore) -> None:
    """Blobs sealed before names were bound are refused by name (they could be any other
    name's): the caller who vouches for one unseals it with allow_unbound and seals it again,
    bound from then on."""
    provider = store.provider
    pin = _pin_for(provider)
    store.write_sealed("prt", _unbound_blob(provider, SMALL, pin))
    with pytest.raises(KeyFileCorrupt, match="earlier entra_keys, without its name bound"):
        sealed.unseal(store, "prt", pin=pin)
    secret = sealed.unseal(store, "prt", pin=pin, allow_unbound=True)
    assert secret == SMALL
    sealed.seal(store, "prt", secret, pin=pin, replace=True)
    assert sealed.unseal(store, "prt", pin=pin) == SMALL
    shutil.copy(store.path / "prt.sealed", store.path / "other.sealed")
    with pytest.raises(KeyFileCorrupt, match="sealed as 'prt'"):
        sealed.unseal(store, "other", pin=pin, allow_unbound=True)  # a bound blob stays bound
