"""A persistent object at 0x81000001 is used as the storage key only when it is the standard SRK.

Anyone with the owner authorization (usually empty) can persist a key of their own there: an
imported storage key whose private half they know would receive every session's salt, and with
it every PIN, session key and sealed secret that crosses the TPM interface. Each test plants one
and checks that no session is salted to it, that keys go under the owner primary instead, and
that ``tpm init`` and key files naming it refuse typed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from entra_keys import (
    ForeignKey,
    KeyFileCorrupt,
    KeyStore,
    KeysUnusable,
    KeyType,
    KeyUsage,
    TPMError,
    open_provider,
)
from entra_keys.cli import main
from entra_keys.providers.tpm import SRK_HANDLE, persist_storage_key
from entra_keys.store import sealed, storage_parents
from entra_keys.tcg.model import TPM_RH_OWNER
from entra_keys.testing.pcap import tpm_packets
from entra_keys.testing.swtpm import Swtpm

from .helpers import open_pcap_provider, transient_handles
from .test_foreign_keys import _lockout_counter

PIN = b"4711"
OAEP = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
#: TPM2_StartAuthSession (TPM 2.0 Part 3, 11.1): its first handle is the salt key.
START_AUTH_SESSION = 0x176


def _plant(tcti: str, *, imported: bool) -> None:
    """Persist at 0x81000001 an ECC storage key the attacker knows (``imported``: TPM2_Import of
    their own key), or one the TPM made from another template (P-384)."""
    import tpm2_pytss as t
    from tpm2_pytss import utils

    attr = t.TPMA_OBJECT
    storage = attr.RESTRICTED | attr.DECRYPT | attr.USERWITHAUTH | attr.NODA
    made = storage | attr.FIXEDTPM | attr.FIXEDPARENT | attr.SENSITIVEDATAORIGIN
    esys = t.ESAPI(tcti)
    try:
        template = t.TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=made)
        if not imported:
            template = t.TPM2B_PUBLIC.parse("ecc384:aes256cfb", objectAttributes=made)
        parent, parent_public, *_ = esys.create_primary(
            t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER
        )
        handle = parent
        if imported:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            public = t.TPM2B_PUBLIC.from_pem(
                pem, objectAttributes=storage, symmetric=t.TPMT_SYM_DEF_OBJECT.parse("aes128cfb")
            )
            public.publicArea.parameters.eccDetail.scheme.scheme = t.TPM2_ALG.NULL
            public.publicArea.parameters.eccDetail.kdf.scheme = t.TPM2_ALG.NULL
            sensitive = t.TPM2B_SENSITIVE.from_pem(pem)
            sensitive.sensitiveArea.seedValue = t.TPM2B_DIGEST(os.urandom(32))
            null = t.TPMT_SYM_DEF_OBJECT(algorithm=t.TPM2_ALG.NULL)
            wrapped, dup, seed = utils.wrap(parent_public.publicArea, public, sensitive, b"", null)
            private = esys.import_(parent, wrapped, public, dup, seed, null)
            handle = esys.load(parent, private, public)
        esys.evict_control(t.ESYS_TR.OWNER, handle, SRK_HANDLE)
        if handle is not parent:
            esys.flush_context(handle)
        esys.flush_context(parent)
    finally:
        esys.close()


def _evict_srk(tcti: str) -> None:
    import tpm2_pytss as t

    esys = t.ESAPI(tcti)
    try:
        esys.evict_control(t.ESYS_TR.OWNER, esys.tr_from_tpmpublic(SRK_HANDLE), SRK_HANDLE)
    finally:
        esys.close()


def _salt_keys(capture: Path) -> list[int]:
    """The salt key of each TPM2_StartAuthSession in a capture."""
    keys = []
    for packet in tpm_packets(capture)[::2]:
        for start in range(len(packet) - 13):
            tag, size, code = struct.unpack_from(">HII", packet, start)
            if tag == 0x8001 and size == len(packet) - start:
                if code == START_AUTH_SESSION:
                    keys.append(struct.unpack_from(">I", packet, start + 10)[0])
                break
    return keys


@pytest.mark.parametrize("imported", [True, False], ids=["imported-key", "other-template"])
def test_no_session_is_salted_to_a_planted_srk(
    own_swtpm: Swtpm,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    imported: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store_dir = tmp_path / "store"
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        wrapped = transport.public_key().encrypt(b"S" * 32, OAEP)
        sealed.seal(store, "prt", b"a refresh token", pin=PIN)
    _plant(own_swtpm.tcti, imported=imported)

    capture = tmp_path / "victim.pcap"
    with open_pcap_provider(own_swtpm.tcti, capture, monkeypatch) as provider:
        store = KeyStore(provider, store_dir)
        assert store.load("transport").decrypt(wrapped, OAEP) == b"S" * 32
        assert sealed.unseal(store, "prt", pin=PIN) == b"a refresh token"
        store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=PIN)
        storage = provider.info().storage_key or ""
    assert storage.startswith(f"0x{TPM_RH_OWNER:08x} (primary"), storage
    assert "0x81000001 not used" in storage and "not" in storage
    assert "not the standard SRK" in caplog.text
    salts = _salt_keys(capture)
    assert salts, "no salted session in the capture"
    assert SRK_HANDLE not in salts
    assert storage_parents(store_dir)["ngc.pem"] == TPM_RH_OWNER  # not under the planted key
    assert transient_handles(own_swtpm.tcti) == []


def test_tpm_init_refuses_a_planted_srk_and_leaves_it(
    own_swtpm: Swtpm,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ENTRA_KEYS_STORE", str(tmp_path / "store"))
    _plant(own_swtpm.tcti, imported=True)
    with pytest.raises(TPMError, match="not the standard SRK"):
        persist_storage_key(own_swtpm.tcti)
    assert main(["--provider", "tpm", "--tcti", own_swtpm.tcti, "tpm", "init"]) == 1
    err = capsys.readouterr().err
    assert "not the standard SRK" in err and "already persistent" not in err


def test_a_key_made_under_the_srk_does_not_load_under_a_planted_one(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    assert persist_storage_key(own_swtpm.tcti) is True
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    assert storage_parents(tmp_path / "store")["device.pem"] == SRK_HANDLE
    _evict_srk(own_swtpm.tcti)
    _plant(own_swtpm.tcti, imported=True)
    with (
        open_provider("tpm", tcti=own_swtpm.tcti) as provider,
        pytest.raises(ForeignKey, match="not the standard SRK") as refused,
    ):
        KeyStore(provider, tmp_path / "store").load("device")
    assert not isinstance(refused.value, KeysUnusable)  # the join is intact: never "leave"
    assert transient_handles(own_swtpm.tcti) == []


def _swap_in_standard_shaped(tcti: str) -> None:
    """Evict the SRK and persist at 0x81000001 another key of a standard SRK's shape: the TCG
    ECC P-256 storage template, made by this TPM (owner authorization, nothing else)."""
    import tpm2_pytss as t

    _evict_srk(tcti)
    attr = t.TPMA_OBJECT
    made = (
        attr.RESTRICTED
        | attr.DECRYPT
        | attr.USERWITHAUTH
        | attr.NODA
        | attr.FIXEDTPM
        | attr.FIXEDPARENT
        | attr.SENSITIVEDATAORIGIN
    )
    esys = t.ESAPI(tcti)
    try:
        template = t.TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=made)
        handle = esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER)[0]
        esys.evict_control(t.ESYS_TR.OWNER, handle, SRK_HANDLE)
        esys.flush_context(handle)
    finally:
        esys.close()


def test_another_standard_shaped_srk_is_a_foreign_key_not_leave(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    assert persist_storage_key(own_swtpm.tcti) is True
    store_dir = tmp_path / "store"
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        wrapped = transport.public_key().encrypt(b"K" * 32, OAEP)
        store.save_session_key("prt", provider.import_session_key(transport, wrapped))
        srk_name = provider.storage_key_name(SRK_HANDLE)
        assert store.info("device").parent_name == srk_name
        assert store.info("prt").parent_name == srk_name
    _swap_in_standard_shaped(own_swtpm.tcti)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        assert provider.info().storage_key == "0x81000001 (persistent)"  # the shape passes
        for load in (lambda: store.load("device"), lambda: store.load_session_key("prt")):
            with pytest.raises(ForeignKey) as refused:
                load()
            assert not isinstance(refused.value, KeysUnusable)
            assert "now holds another storage key" in str(refused.value)
            assert "tpm init" in str(refused.value) and "leave" not in str(refused.value)
    assert transient_handles(own_swtpm.tcti) == []
    _evict_srk(own_swtpm.tcti)  # the way back the message names: the same SRK, the same keys
    assert persist_storage_key(own_swtpm.tcti) is True
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        key = KeyStore(provider, store_dir).load("device")
        signature = key.sign(b"x", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(signature, b"x", ec.ECDSA(hashes.SHA256()))
    assert transient_handles(own_swtpm.tcti) == []


def test_a_key_file_whose_srk_name_was_edited_is_refused_before_loading(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    assert persist_storage_key(own_swtpm.tcti) is True
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        path = tmp_path / "store" / "device.pem"
        recorded = provider.storage_key_name(SRK_HANDLE).hex()
        path.write_bytes(path.read_bytes().replace(recorded.encode(), b"000b" + b"00" * 32))
        with pytest.raises(ForeignKey, match="now holds another storage key"):
            store.load("device")
        path.write_bytes(path.read_bytes().replace(b"000b" + b"00" * 32, b"zz"))
        with pytest.raises(KeyFileCorrupt, match="Parent-Name"):
            store.load("device")
    assert transient_handles(own_swtpm.tcti) == []


def _plant_with_auth_value(tcti: str, *, no_da: bool) -> None:
    """Persist at 0x81000001 a primary of the standard SRK's template (noDA as given) made with
    an authorization value of the planter's: ReadPublic cannot show it."""
    import tpm2_pytss as t

    from entra_keys.providers.tpm._templates import storage_template

    esys = t.ESAPI(tcti)
    try:
        template = storage_template(t, ecc=False)
        if not no_da:
            template.publicArea.objectAttributes &= ~t.TPMA_OBJECT.NODA
        sensitive = t.TPM2B_SENSITIVE_CREATE(
            sensitive=t.TPMS_SENSITIVE_CREATE(userAuth=t.TPM2B_AUTH(b"attacker-chosen"))
        )
        handle = esys.create_primary(sensitive, template, t.ESYS_TR.OWNER)[0]
        esys.evict_control(t.ESYS_TR.OWNER, handle, SRK_HANDLE)
        esys.flush_context(handle)
    finally:
        esys.close()


@pytest.mark.parametrize("no_da", [True, False], ids=["noDA", "noDA-clear"])
def test_an_srk_with_an_auth_value_is_not_used_and_spends_no_try(
    own_swtpm: Swtpm, tmp_path: Path, no_da: bool
) -> None:
    assert persist_storage_key(own_swtpm.tcti) is True
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        KeyStore(provider, tmp_path / "store").create("old", KeyType.ECC256, KeyUsage.SIGN)
    old = tmp_path / "store" / "old.pem"  # as an earlier release wrote it: no SRK name recorded
    old.write_bytes(
        b"".join(
            line
            for line in old.read_bytes().splitlines(keepends=True)
            if not line.startswith(b"Entra-Keys-Parent-Name:")
        )
    )
    _evict_srk(own_swtpm.tcti)
    _plant_with_auth_value(own_swtpm.tcti, no_da=no_da)
    before = _lockout_counter(own_swtpm)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        with pytest.raises(ForeignKey, match="not the standard SRK") as refused:
            store.load("old")
        assert not isinstance(refused.value, KeysUnusable)
        for name in ("k0", "k1", "k2"):
            key = store.create(name, KeyType.ECC256, KeyUsage.SIGN)
            key.sign(b"x", ec.ECDSA(hashes.SHA256()))
        ngc = store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=PIN)
        ngc.sign(b"x", ec.ECDSA(hashes.SHA256()))
        storage = provider.info().storage_key or ""
    assert "0x81000001 not used" in storage, storage
    parents = storage_parents(tmp_path / "store")
    assert [parents[f"{n}.pem"] for n in ("k0", "k1", "k2", "ngc")] == [TPM_RH_OWNER] * 4
    assert _lockout_counter(own_swtpm) == before == 0
    assert transient_handles(own_swtpm.tcti) == []
