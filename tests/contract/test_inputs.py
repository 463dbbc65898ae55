"""Inputs of the wrong type or out of range are the same typed error from both providers.

Each case was an untyped exception (TypeError, AttributeError, IndexError, ValueError,
UnicodeEncodeError) from one provider or both, or was taken as another value: a TPM drops
trailing zero bytes from an authorization value, so ``b"1234\\0"`` was the PIN ``b"1234"``
and ``b"\\0\\0\\0\\0"`` no PIN at all, while software kept the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from entra_keys import (
    InvalidData,
    KeyFileCorrupt,
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    Provider,
    UnsupportedAlgorithm,
)
from entra_keys.store import leave, list_keys, sealed

PIN = b"246810"
#: What is not a PIN: another type, longer than a TPM2B_AUTH, or ending in NUL bytes.
BAD_PINS: list[Any] = ["1234", 1234, b"1" * 65, b"1234\0", b"\0\0\0\0", bytearray(b"12\0")]


@pytest.mark.parametrize("pin", BAD_PINS, ids=repr)
def test_a_key_pin_that_is_not_one_is_invalid_data(store: KeyStore, pin: Any) -> None:
    with pytest.raises(InvalidData):
        store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=pin)
    assert store.list() == []
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=PIN)
    with pytest.raises(InvalidData):
        store.load("ngc", pin=pin)


@pytest.mark.parametrize("pin", ["1234", 1234, b"1234\0", b"\0\0\0\0"], ids=repr)
def test_a_sealing_pin_that_is_not_one_is_invalid_data(provider: Provider, pin: Any) -> None:
    with pytest.raises(InvalidData):
        provider.seal(b"secret", pin=pin, name="a")
    blob = provider.seal(b"secret", pin=PIN, name="a")
    with pytest.raises(InvalidData):
        provider.unseal(blob, pin=pin, name="a")
    assert provider.unseal(blob, pin=PIN, name="a") == b"secret"


def test_key_types_and_usages_are_their_enums(provider: Provider) -> None:
    bad: list[Callable[[], object]] = [
        lambda: provider.create_key("ecc256", KeyUsage.SIGN),  # type: ignore[arg-type]
        lambda: provider.create_key(KeyType.ECC256, "sign"),  # type: ignore[arg-type]
        lambda: provider.create_key(None, None),  # type: ignore[arg-type]
    ]
    for call in bad:
        with pytest.raises(InvalidData):
            call()


def test_key_files_that_are_not_bytes_are_corrupt(provider: Provider) -> None:
    with pytest.raises(KeyFileCorrupt):
        provider.key_from_pem("text", KeyUsage.SIGN)  # type: ignore[arg-type]
    with pytest.raises(KeyFileCorrupt):
        provider.session_key_from_pem("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("pcrs", [[True], ["7"], 7, [7, 7], [24], [], "7"], ids=repr)
def test_pcr_lists_that_are_not_ones_are_invalid_data(provider: Provider, pcrs: Any) -> None:
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    with pytest.raises(InvalidData):
        provider.quote(ak, pcrs, b"n" * 16)
    if provider.hardware_backed:
        with pytest.raises(InvalidData):
            provider.seal(b"secret", pin=PIN, pcrs=pcrs, name="a")
    else:  # software has no PCRs to seal to, whatever the list
        with pytest.raises((InvalidData, UnsupportedAlgorithm)):
            provider.seal(b"secret", pin=PIN, pcrs=pcrs, name="a")


def test_a_pcr_generator_is_read_once(provider: Provider) -> None:
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    quote = provider.quote(ak, (p for p in [0, 7]), b"n" * 16)
    assert sorted(quote.pcr_values) == [0, 7]


def test_a_store_path_with_a_nul_byte_is_a_store_error(provider: Provider, tmp_path: Path) -> None:
    path = f"{tmp_path}/a\0b"
    with pytest.raises(KeyStoreError, match="NUL"):
        KeyStore(provider, path).list()
    with pytest.raises(KeyStoreError, match="NUL"):
        leave(path)
    with pytest.raises(KeyStoreError, match="NUL"):
        list_keys(path)  # the files alone, no provider: the same check
    assert sealed.names(KeyStore(provider, tmp_path / "store")) == []
