"""The TPM provider's key cache and continued session: more keys than slots, pins beside cached
keys, threads, and what a capture of the TPM traffic shows of derived keys (TPM-only)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import KeyType, KeyUsage, Provider, open_provider
from entra_keys.providers.tpm._key_cache import KeyCache
from entra_keys.session import derive_key, import_session_key
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService
from entra_keys.testing.tpm import cached_keys, connection_handles

from .helpers import cached_key, kbkdf, open_pcap_provider, transient_handles

ECDSA = ec.ECDSA(hashes.SHA256())


def _sign(key: object, message: bytes) -> None:
    """Sign and verify with pyca: the cached handle must be this key's."""
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.public_key().verify(key.sign(message, ECDSA), message, ECDSA)


def test_more_keys_than_slots_take_turns_in_the_cache(tpm_provider: Provider) -> None:
    keys = [
        cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN),
        cached_key(tpm_provider, KeyType.ECC384, KeyUsage.SIGN),
        cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN),
    ]
    conn = tpm_provider.connection  # type: ignore[attr-defined]
    for round_ in range(3):
        for key in keys:
            _sign(key, f"{round_}".encode())
            assert cached_keys(tpm_provider) <= conn.keys.slots
    with keys[0].loaded():  # a pin beside the cache: the cache makes room, nothing fails
        for key in keys:
            _sign(key, b"pinned beside")
    handles = connection_handles(tpm_provider)
    assert len(handles) == 1 + cached_keys(tpm_provider)


def test_eight_threads_sign_unpinned_with_three_keys(tpm_provider: Provider) -> None:
    keys = [
        cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN),
        cached_key(tpm_provider, KeyType.ECC384, KeyUsage.SIGN),
        cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN),
    ]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for n in range(15):
                _sign(keys[(index + n) % 3], f"{index}-{n}".encode())
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_second_provider_in_this_process_gets_the_slots_the_first_caches(
    tpm_provider: Provider, swtpm: Swtpm
) -> None:
    first = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN)
    _sign(first, b"cached")  # the first provider now holds its one cache slot
    with open_provider("tpm", tcti=swtpm.tcti) as second:
        _sign(cached_key(second, KeyType.ECC256, KeyUsage.SIGN), b"second")
    _sign(first, b"again")


def test_close_leaves_no_transient_object(swtpm: Swtpm) -> None:
    provider = open_provider("tpm", tcti=swtpm.tcti)
    for key_type in (KeyType.ECC256, KeyType.RSA2048):
        _sign(cached_key(provider, key_type, KeyUsage.SIGN), b"m")
    assert len(transient_handles(swtpm.tcti)) >= 2  # storage key and a cached key
    provider.close()
    assert transient_handles(swtpm.tcti) == []


def test_derived_keys_cross_the_tpm_interface_only_encrypted(
    swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TPM2_HMAC runs in the continued salted session with response encryption: a capture
    holds no derived key. The control, the same HMAC in a password session on the same
    connection, does put its result in the capture: the check can fail."""
    service = TokenService()
    capture = tmp_path / "derive.pcap"
    with open_pcap_provider(swtpm.tcti, capture, monkeypatch) as provider:
        transport = cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(transport, rsa.RSAPrivateKey)
        key = import_session_key(
            provider, transport, service.session_key_jwe(transport.public_key())
        )
        derived = []
        for _ in range(3):
            ctx = os.urandom(24)
            derived.append(derive_key(key, ctx, kdf_version=1))
            assert derived[-1] == kbkdf(service.session_key, ctx)
        ours = capture.read_bytes()
        conn = provider.connection  # type: ignore[attr-defined]
        t = conn.tss
        with key.loaded(), conn.command("control HMAC") as esys:
            block = t.TPM2B_MAX_BUFFER(b"control block " + os.urandom(16))
            control = bytes(esys.hmac(key._handle, block, t.TPM2_ALG.SHA256))  # type: ignore[attr-defined]
    assert len(ours) > 1000
    for value in derived:
        assert value not in ours
    assert control in capture.read_bytes()


def test_the_cache_flushes_least_recently_used_keys_not_in_use() -> None:
    """The cache alone (its flush records handles, no TPM): least recently used first, never a
    key in use, and room for more than one when a command asks for it."""
    flushed: list[str] = []
    cache = KeyCache(flushed.append, slots=2)
    a, b, c = object(), object(), object()
    assert cache.put(a, "ha") and cache.put(b, "hb")
    assert cache.get(a) == "ha"  # a is now the most recently used
    with cache.in_use(b), cache.in_use(b):  # nested uses
        assert cache.put(c, "hc")  # b is in use: a goes although b is older
        assert flushed == ["ha"] and cache.get(a) is None
        with cache.in_use(c):
            assert not cache.put(a, "ha2")  # no key may go: the caller flushes its own
            assert flushed == ["ha"]
    cache.make_room(2)  # a command that needs two free slots
    assert flushed == ["ha", "hb", "hc"] and len(cache) == 0
    assert cache.load(a, lambda: "ha3") == ("ha3", True)
    assert cache.load(b, lambda: "hb3", keep=False) == ("hb3", False)
    assert cache.take(a) == "ha3" and len(cache) == 0
    assert not KeyCache(flushed.append).put(a, "h")  # no slots: nothing is kept
