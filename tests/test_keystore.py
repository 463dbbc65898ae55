"""The key store where the providers differ by nature: a software key file under a passphrase, TPM
keys that take none, no software key beside TPM keys; and the default path."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from entra_keys import (
    HardwareUnavailable,
    InvalidData,
    KeyStore,
    KeyType,
    KeyUsage,
    Provider,
    UnsupportedAlgorithm,
    WrongPassphrase,
    default_store_path,
    open_provider,
)
from entra_keys.store import sealed


def test_software_key_is_encrypted_with_a_passphrase(tmp_path: Path) -> None:
    store = KeyStore(open_provider("software"), tmp_path / "store")
    key = store.create("device", KeyType.ECC256, KeyUsage.SIGN, passphrase=b"correct horse")
    data = (store.path / "device.pem").read_bytes()
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    secret = key.private_numbers().private_value.to_bytes(32, "big")
    der = serialization.load_pem_private_key(data[data.index(b"-----") :], b"correct horse")
    assert der.public_key() == key.public_key()
    assert secret not in data
    assert store.info("device").encrypted
    with pytest.raises(WrongPassphrase, match="'device'"):
        store.load("device")
    with pytest.raises(WrongPassphrase, match="'device'"):
        store.load("device", passphrase=b"wrong")
    assert store.load("device", passphrase=b"correct horse").public_key() == key.public_key()


def test_tpm_keys_take_no_passphrase(tpm_provider: Provider, tmp_path: Path) -> None:
    store = KeyStore(tpm_provider, tmp_path / "store")
    with pytest.raises(UnsupportedAlgorithm, match="bound to this TPM"):
        store.create("device", KeyType.ECC256, KeyUsage.SIGN, passphrase=b"x")
    assert "device" not in store


def test_no_software_key_joins_tpm_keys(tpm_provider: Provider, tmp_path: Path) -> None:
    """A store holding TPM keys gets no software key, nor a software-sealed secret: that would
    downgrade the join."""
    KeyStore(tpm_provider, tmp_path / "store").create("device", KeyType.ECC256, KeyUsage.SIGN)
    software = KeyStore(open_provider("software"), tmp_path / "store")
    for make in (
        lambda: software.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT),
        lambda: software.save(
            "transport", software.provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
        ),
        lambda: software.create("device", KeyType.ECC256, KeyUsage.SIGN, replace=True),
        lambda: sealed.seal(software, "refresh-token", b"a PRT", pin=b"123456"),
    ):
        with pytest.raises(HardwareUnavailable, match=r"holds TPM keys \(device\)"):
            make()
    assert sorted(os.listdir(tmp_path / "store")) == ["device.pem"]


def test_default_path_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENTRA_KEYS_STORE", str(tmp_path / "env-store"))
    assert default_store_path() == tmp_path / "env-store"
    monkeypatch.delenv("ENTRA_KEYS_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "entra-keys"
    store = KeyStore(open_provider("software"))
    store.create("k", KeyType.ECC256, KeyUsage.SIGN)
    assert (tmp_path / "xdg" / "entra-keys" / "k.pem").is_file()


@pytest.mark.parametrize(
    "state",
    [
        {"device_id": math.nan},
        {"device_id": math.inf},
        {"certificate": "a" * (1024 * 1024 + 10)},
        {1: "a", "1": "b"},
        {(1, 2): "x"},
        {"device_id": b"raw"},
        {"display_name": "\ud800"},
        {"x": functools.reduce(lambda inner, _: [inner], range(100_000), [])},
        "abc",
        [("device_id", "d")],
    ],
    ids=[
        "nan",
        "infinity",
        "over-1-MiB",
        "colliding-names",
        "tuple-name",
        "bytes",
        "lone-surrogate",
        "100000-deep",
        "str",
        "pairs",
    ],
)
def test_a_join_state_the_reader_would_refuse_is_never_written(
    provider: Provider, tmp_path: Path, state: Any
) -> None:
    store = KeyStore(provider, tmp_path / "store")
    store.save_join_state({"device_id": "d-1", "session_key": "prt"})
    with pytest.raises(InvalidData):
        store.save_join_state(state)
    assert store.load_join_state() == {"device_id": "d-1", "session_key": "prt"}
