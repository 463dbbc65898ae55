"""What only a TPM provider does: object attributes, slots, storage keys, blobs bound to one TPM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    ForeignKey,
    KeyStore,
    KeyType,
    KeyUsage,
    Provider,
    TPMAuthFailure,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    WrongPassphrase,
    open_provider,
)
from entra_keys.providers.tpm import TPMProvider
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.tpm import cached_keys, connection_handles

from .helpers import cached_key, transient_handles


def as_tpm(provider: Provider) -> TPMProvider:
    assert isinstance(provider, TPMProvider)
    return provider


@pytest.mark.parametrize(
    ("key_type", "usage"),
    [(KeyType.RSA2048, KeyUsage.SIGN), (KeyType.RSA2048, KeyUsage.DECRYPT),
     (KeyType.ECC256, KeyUsage.SIGN)],
)  # fmt: skip
def test_keys_are_made_inside_the_tpm_and_cannot_leave_it(
    tpm_provider: Provider, key_type: KeyType, usage: KeyUsage
) -> None:
    from tpm2_pytss import TPMA_OBJECT, TPMT_PUBLIC

    key = cached_key(tpm_provider, key_type, usage)
    public, _ = TPMT_PUBLIC.unmarshal(key.tpm_public)  # type: ignore[union-attr]
    attrs = public.objectAttributes
    for required in (TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.FIXEDPARENT,
                     TPMA_OBJECT.SENSITIVEDATAORIGIN):  # fmt: skip
        assert attrs & required, f"missing {required!r}"
    assert not attrs & TPMA_OBJECT.RESTRICTED
    assert bool(attrs & TPMA_OBJECT.SIGN_ENCRYPT) is (usage is KeyUsage.SIGN)
    assert bool(attrs & TPMA_OBJECT.DECRYPT) is (usage is KeyUsage.DECRYPT)


def test_used_keys_stay_cached_and_flush_on_demand(tpm_provider: Provider) -> None:
    """The key cache keeps a used key loaded, a pin reuses that slot; the connection counts
    every object it holds against its budget of three (what /dev/tpmrm0 lets a process hold)."""
    tpm = as_tpm(tpm_provider)
    key = cached_key(tpm, KeyType.ECC256, KeyUsage.SIGN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    tpm.connection.flush_cache()
    baseline = connection_handles(tpm)
    assert len(baseline) == 1  # the storage key this provider created
    assert tpm.connection.objects == 1 and tpm.connection.OBJECTS == 3
    key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert tpm.connection.objects == 2
    assert len(connection_handles(tpm)) == 2  # kept for the next signature
    with key.loaded():
        with key.loaded():  # nested pins share one slot, the one the cache held
            assert len(connection_handles(tpm)) == 2
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        assert len(connection_handles(tpm)) == 2
    assert len(connection_handles(tpm)) == 2  # back in the cache
    tpm.connection.flush_cache()
    assert connection_handles(tpm) == baseline


def test_full_object_memory_is_a_typed_error_and_recovers(
    tpm_provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """swtpm has three object slots: storage key + two pinned keys fill them."""
    monkeypatch.setattr(tpm_provider, "OBJECT_MEMORY_WAIT", 0.2)  # our own pins never free up
    a = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN)
    b = cached_key(tpm_provider, KeyType.ECC384, KeyUsage.SIGN)
    c = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    assert isinstance(a, ec.EllipticCurvePrivateKey)
    assert isinstance(b, ec.EllipticCurvePrivateKey)
    assert isinstance(c, rsa.RSAPrivateKey)
    with a.loaded(), b.loaded():
        c.public_key()  # the public half needs no slot, loading does:
        with pytest.raises(TPMObjectMemory, match="no free object slot") as info:
            c.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
        assert info.value.rc is not None and info.value.rc & 0xFFF == 0x902
    tpm = as_tpm(tpm_provider)
    assert len(connection_handles(tpm)) == 1 + cached_keys(tpm)
    a.sign(b"m", ec.ECDSA(hashes.SHA256()))
    c.sign(b"m", padding.PKCS1v15(), hashes.SHA256())  # the cache makes room for it


def test_key_file_is_a_tss2_private_key_other_tools_read(
    tpm_provider: Provider, tmp_path: Path
) -> None:
    from tpm2_pytss.tsskey import TSSPrivKey

    store = KeyStore(tpm_provider, tmp_path / "store")
    key = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    path = store.info("device").path
    blob = TSSPrivKey.from_pem(path.read_bytes())
    assert blob.empty_auth and blob.parent == 0x40000001
    assert bytes(blob.public.publicArea.marshal()) == key.tpm_public  # type: ignore[union-attr]
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "2.23.133.10.1.3" in parsed  # the TCG loadable-key OID


def test_blob_from_another_tpm_is_a_foreign_key(
    tpm_provider: Provider, own_swtpm: Swtpm, tmp_path: Path
) -> None:
    store = KeyStore(tpm_provider, tmp_path / "store")
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    with open_provider("tpm", tcti=own_swtpm.tcti) as other:
        with pytest.raises(ForeignKey, match=r"'device'.*another TPM") as info:
            KeyStore(other, tmp_path / "store").load("device")
        assert info.value.key_name == "device"
    assert transient_handles(own_swtpm.tcti) == []
    assert store.load("device").hardware_backed  # the original TPM still loads it


def test_persistent_srk_is_used_where_provisioned(own_swtpm: Swtpm, tmp_path: Path) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    with open_provider("tpm", tcti=own_swtpm.tcti) as before:
        KeyStore(before, tmp_path / "store").create("old", KeyType.ECC256, KeyUsage.SIGN)
    ctx = tmp_path / "srk.ctx"
    # The TCG SRK template: tpm2-tools' default attributes and noDA (without it, an object there
    # is not the standard SRK: test_trust_srk.py).
    attributes = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"
    subprocess.run(["tpm2_createprimary", "-C", "o", "-G", "rsa2048", "-a", attributes,
                    "-c", str(ctx)], env=env, check=True, capture_output=True)  # fmt: skip
    subprocess.run(["tpm2_evictcontrol", "-C", "o", "-c", str(ctx), "0x81000001"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    # tpm2-tools without a resource manager leave their objects loaded: flush them.
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        assert provider.info().storage_key == "0x81000001 (persistent)"
        assert transient_handles(own_swtpm.tcti) == []  # a persistent SRK takes no slot
        store = KeyStore(provider, tmp_path / "store")
        key = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        loaded = store.load("device")
        assert loaded.public_key() == key.public_key()
        assert b"Entra" in store.info("device").path.read_bytes()
        # A key made before the SRK keeps loading under the parent its file names.
        old = store.load("old")
        assert isinstance(old, ec.EllipticCurvePrivateKey)
        old.public_key().verify(
            old.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256())
        )
    assert transient_handles(own_swtpm.tcti) == []


def test_unreachable_tpm_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TPMUnreachable, match="cannot open the TPM"):
        open_provider("tpm", tcti=f"swtpm:path={tmp_path / 'nothing'}")


def test_stopped_tpm_is_unreachable_not_a_hang(own_swtpm: Swtpm) -> None:
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        key = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        own_swtpm.kill()
        with pytest.raises(TPMUnreachable):
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))


def test_tpm_that_stops_answering_fails_in_bounded_time(own_swtpm: Swtpm, tmp_path: Path) -> None:
    """A frozen simulator (SIGSTOP) must not hang the caller: the call fails as unreachable."""
    provider = TPMProvider(own_swtpm.tcti, timeout=1.0)
    store = KeyStore(provider, tmp_path / "store")
    key = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pid = own_swtpm.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TPMUnreachable, match="did not answer within 1 s"):
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        assert time.monotonic() - started < 5
        with pytest.raises(TPMUnreachable, match="closed"):
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))  # fails fast from now on
    finally:
        os.kill(pid, signal.SIGCONT)
        provider.close()
    own_swtpm.stop()  # a restart clears what the frozen call left loaded
    own_swtpm.start()
    with open_provider("tpm", tcti=own_swtpm.tcti) as again:
        reloaded = KeyStore(again, tmp_path / "store").load("device")
        assert isinstance(reloaded, ec.EllipticCurvePrivateKey)
        reloaded.public_key().verify(
            reloaded.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256())
        )
    assert transient_handles(own_swtpm.tcti) == []


@pytest.fixture
def strict_swtpm(own_swtpm: Swtpm) -> Swtpm:
    """The second swtpm with a short dictionary-attack policy: 3 tries, one forgiven per 2 s."""
    subprocess.run(
        ["tpm2_dictionarylockout", "-s", "-n", "3", "-t", "2", "-l", "2"],
        env={**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti},
        check=True,
        capture_output=True,
    )
    return own_swtpm


def test_pin_guards_a_key_and_wrong_pins_lead_to_lockout(
    strict_swtpm: Swtpm, tmp_path: Path
) -> None:
    from tpm2_pytss import TPMA_OBJECT, TPMT_PUBLIC

    with open_provider("tpm", tcti=strict_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        made = store.create("device", KeyType.ECC256, KeyUsage.SIGN, pin=b"1234")
        plain = store.create("plain", KeyType.ECC256, KeyUsage.SIGN)
        public, _ = TPMT_PUBLIC.unmarshal(made.tpm_public)  # type: ignore[union-attr]
        assert not public.objectAttributes & TPMA_OBJECT.NODA  # wrong PINs are counted
        public, _ = TPMT_PUBLIC.unmarshal(plain.tpm_public)  # type: ignore[union-attr]
        assert public.objectAttributes & TPMA_OBJECT.NODA  # no PIN: nothing to count

        with pytest.raises(WrongPassphrase, match="'device'"):
            store.load("device")
        good = store.load("device", pin=b"1234")
        wrong = store.load("device", pin=b"0000")
        assert isinstance(good, ec.EllipticCurvePrivateKey)
        assert isinstance(wrong, ec.EllipticCurvePrivateKey)
        good.public_key().verify(
            good.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256())
        )
        for left in (2, 1, 0):
            with pytest.raises(TPMAuthFailure, match=f"wrong PIN; {left} tries left") as info:
                wrong.sign(b"m", ec.ECDSA(hashes.SHA256()))
            assert info.value.tries_left == left
        with pytest.raises(TPMLockout, match="forgives one every 2 s") as locked:
            good.sign(b"m", ec.ECDSA(hashes.SHA256()))  # even the right PIN, while locked out
        assert locked.value.retry_after == 2
        assert isinstance(plain, ec.EllipticCurvePrivateKey)
        plain.sign(b"m", ec.ECDSA(hashes.SHA256()))  # a noDA key works through the lockout
        time.sleep(2.5)  # one failure forgiven
        good.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert transient_handles(strict_swtpm.tcti) == []
