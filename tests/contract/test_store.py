"""The key store: named keys, owner-only files written atomically, typed failures that name
the key, and the other provider's key files refused by name."""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from entra_keys import (
    EntraPrivateKey,
    InvalidData,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    Provider,
    StorePermissionError,
)
from entra_keys.provider import oaep_padding

PEM_LABEL = {"tpm": b"-----BEGIN TSS2 PRIVATE KEY-----", "software": b"-----BEGIN PRIVATE KEY-----"}


def test_create_load_list_delete(store: KeyStore, provider: Provider) -> None:
    device = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)

    again = store.load("device")
    assert again.public_key() == device.public_key()
    assert isinstance(again, ec.EllipticCurvePrivateKey)
    again.public_key().verify(again.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m",
                              ec.ECDSA(hashes.SHA256()))  # fmt: skip
    assert store.load("transport").public_key() == transport.public_key()

    listed = {info.name: info for info in store.list()}
    assert sorted(listed) == ["device", "transport"]
    assert listed["transport"].key_type is KeyType.RSA2048
    assert listed["transport"].usage is KeyUsage.DECRYPT
    assert listed["device"].kind == provider.kind
    assert listed["device"].hardware_backed is (provider.kind == "tpm")
    assert "device" in store and "nothing" not in store

    store.delete("device")
    assert [info.name for info in store.list()] == ["transport"]
    with pytest.raises(KeyNotFound, match="'device'"):
        store.load("device")
    with pytest.raises(KeyNotFound):
        store.delete("device")


def test_files_are_owner_only_and_in_the_providers_format(
    store: KeyStore, provider: Provider
) -> None:
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    path = store.path / "device.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"Entra-Keys-Type: ecc256\nEntra-Keys-Usage: sign\n")
    assert PEM_LABEL[provider.kind] in data
    assert os.listdir(store.path) == ["device.pem"]  # no temp file left behind


def test_existing_key_is_kept_unless_replace_is_asked(store: KeyStore) -> None:
    first = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    with pytest.raises(KeyExists, match="'device'"):
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    assert store.load("device").public_key() == first.public_key()
    second = store.create("device", KeyType.ECC256, KeyUsage.SIGN, replace=True)
    assert second.public_key() != first.public_key()
    assert store.load("device").public_key() == second.public_key()
    assert os.listdir(store.path) == ["device.pem"]


@pytest.mark.parametrize("name", ["", ".hidden", "../escape", "a/b", "x" * 65, "sp ace", "-x"])
def test_unsafe_names_are_refused(store: KeyStore, name: str) -> None:
    with pytest.raises(KeyStoreError):
        store.create(name, KeyType.ECC256, KeyUsage.SIGN)
    with pytest.raises(KeyStoreError):
        store.load(name)
    assert not store.path.exists() or os.listdir(store.path) == []


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "garbage", "no-header", "wrong-label", "bad-base64"],
)
def test_damaged_file_is_a_typed_error_naming_the_key_and_others_still_load(
    store: KeyStore, damage: str
) -> None:
    good = store.create("good", KeyType.ECC256, KeyUsage.SIGN)
    store.create("bad", KeyType.ECC256, KeyUsage.SIGN)
    path = store.path / "bad.pem"
    data = path.read_bytes()
    body = data[data.index(b"-----BEGIN") :]
    damaged = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": os.urandom(300),
        "no-header": body,
        "wrong-label": data.replace(b"PRIVATE KEY-----", b"CERTIFICATE-----"),
        "bad-base64": data.replace(body[40:80], b"!" * 40),
    }[damage]
    path.write_bytes(damaged)
    if damage == "no-header" and store.provider.kind == "tpm":
        # a bare TSS2 PRIVATE KEY is another tool's key file: its public area says what it is
        assert store.info("bad").key_type is KeyType.ECC256
        assert store.load("bad").key_type is KeyType.ECC256
        return
    with pytest.raises(KeyFileCorrupt, match="'bad'") as info:
        store.load("bad")
    assert info.value.key_name == "bad"
    assert [i.name for i in store.list()] == ["good"]  # the damaged key is not listed
    assert [name for name, _ in store.broken()] == ["bad"]
    assert store.load("good").public_key() == good.public_key()


def test_store_open_to_others_is_refused(store: KeyStore) -> None:
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    (store.path / "device.pem").chmod(0o644)
    with pytest.raises(StorePermissionError, match="chmod 600"):
        store.load("device")
    (store.path / "device.pem").chmod(0o600)
    store.path.chmod(0o755)
    with pytest.raises(StorePermissionError, match="chmod 700"):
        store.load("device")
    with pytest.raises(StorePermissionError):
        store.create("other", KeyType.ECC256, KeyUsage.SIGN)
    store.path.chmod(0o700)
    store.load("device")


def test_header_that_lies_about_the_key_is_refused(store: KeyStore) -> None:
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    path = store.path / "device.pem"
    path.write_bytes(path.read_bytes().replace(b"ecc256", b"ecc384", 1))
    with pytest.raises(KeyFileCorrupt, match="says ecc384/sign but holds a ecc256/sign"):
        store.load("device")


def test_a_key_of_another_provider_is_refused_by_name(
    store: KeyStore, other_provider: Provider
) -> None:
    """Another provider's key file found in the store (copied in) loads in neither direction
    by mistake: a KeyFileCorrupt that names the key and the provider that made it."""
    store.create("ours", KeyType.ECC256, KeyUsage.SIGN)
    theirs = KeyStore(other_provider, store.path.parent / "theirs")
    theirs.create("theirs", KeyType.ECC256, KeyUsage.SIGN)
    shutil.copy2(theirs.path / "theirs.pem", store.path / "theirs.pem")
    with pytest.raises(KeyFileCorrupt, match=f"'theirs' is a {other_provider.kind} key"):
        store.load("theirs")
    shutil.copy2(store.path / "ours.pem", theirs.path / "ours.pem")
    with pytest.raises(KeyFileCorrupt, match=f"'ours' is a {store.provider.kind} key"):
        theirs.load("ours")
    assert store.load("ours").key_type is KeyType.ECC256


@pytest.mark.parametrize(
    "passphrase",
    ["secret", 6, 0, False, 1.5, [b"x"]],
    ids=["str", "int", "zero", "False", "float", "list"],
)
def test_a_passphrase_that_is_not_bytes_is_invalid_data(
    store: KeyStore, provider: Provider, transport_key: EntraPrivateKey, passphrase: object
) -> None:
    """A str passphrase was an untyped TypeError, 6 encrypted under six NUL bytes, and 0 or
    False wrote the key unencrypted without a word: each is InvalidData, nothing written."""
    device = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    session = provider.import_session_key(
        transport_key, transport_key.public_key().encrypt(os.urandom(32), oaep_padding("sha1"))
    )
    store.save_session_key("prt", session)
    bad: Any = passphrase
    for attempt in (
        lambda: store.create("other", KeyType.ECC256, KeyUsage.SIGN, passphrase=bad),
        lambda: store.create("other", KeyType.ECC256, KeyUsage.SIGN, passphrase=bad, pin=b"1234"),
        lambda: store.save("other", device, passphrase=bad),
        lambda: store.save_session_key("other", session, passphrase=bad),
        lambda: store.load("device", passphrase=bad),
        lambda: store.load_session_key("prt", passphrase=bad),
        # the providers themselves, outside a store, refuse it alike
        lambda: provider.key_to_pem(device, passphrase=bad),
        lambda: provider.session_key_to_pem(session, passphrase=bad),
    ):
        with pytest.raises(InvalidData, match="a passphrase is bytes"):
            attempt()
    assert "other" not in store
    assert sorted(info.name for info in store.list()) == ["device", "prt"]
