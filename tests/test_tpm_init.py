"""``entra-keys tpm init`` and the persistent SRK: idempotent, refused without the owner's
password, an open + sign + close in at most 5 TPM commands (counted in a pcap capture; 4 now:
tests/test_command_counts.py counts every flow), and a join made before it that keeps working
(each key under the parent its file names). Before it persists the SRK it reads the key store:
what would no longer load (a key file it cannot read) is named and the TPM left as it was unless
``--force``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import ForeignKey, KeyStore, KeyType, KeyUsage, PRTSession, open_provider
from entra_keys.cli import main
from entra_keys.providers.tpm import persist_storage_key
from entra_keys.store import sealed
from entra_keys.testing.pcap import command_codes, tpm_commands, tpm_packets
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService

from .helpers import join_keys, open_pcap_provider, transient_handles

#: TPM 2.0 Part 2, 6.5: the command codes the owner password authorizes, and the session's.
CREATE_PRIMARY, EVICT_CONTROL, START_AUTH_SESSION = 0x131, 0x120, 0x176
TPM_RH_NULL = 0x40000007

PIN = b"246810"
#: Every file of the join ``_join_before_init`` makes.
JOIN = ["ak.pem", "device.pem", "ngc.pem", "prt.pem", "refresh.sealed", "transport.pem"]


@pytest.fixture(autouse=True)
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default key store of these tests: their own (``tpm init`` reads it)."""
    monkeypatch.setenv("ENTRA_KEYS_STORE", str(tmp_path / "default-store"))
    return tmp_path / "default-store"


ECDSA = ec.ECDSA(hashes.SHA256())


def _init(tcti: str, *extra: str) -> int:
    return main(["--provider", "tpm", "--tcti", tcti, "tpm", "init", *extra])


def _has_srk(tpm: Swtpm) -> bool:
    """Whether tpm2-tools finds a persistent object at 0x81000001 (the EKs are elsewhere)."""
    return "0x81000001" in _persistent_handles(tpm)


def _persistent_handles(tpm: Swtpm) -> list[str]:
    out = subprocess.run(
        ["tpm2_getcap", "handles-persistent"],
        env={**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.strip("- ").strip() for line in out.splitlines() if line.strip()]


def _join_before_init(tpm: Swtpm, store_dir: Path) -> bytes:
    """A join made before ``tpm init`` (under the TCG key-file primary): device, transport,
    AK, the PRT session key, a Windows Hello key with a PIN and a sealed secret with a PIN, and
    the join state. What the session key derives, for the check after."""
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        join_keys(store)
        store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=PIN)
        sealed.seal(store, "refresh", b"a refresh token", pin=PIN)
        store.save_join_state({"device_id": "d-1", "session_key": "prt", "ak": "ak"})
        return store.load_session_key("prt").hmac_sha256(b"context")


def _works(store: KeyStore, derived: bytes) -> None:
    """Every key of the join loads and does its job; the sealed secret unseals."""
    device = store.load("device")
    assert isinstance(device, ec.EllipticCurvePrivateKey)
    device.public_key().verify(device.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m",
                               ec.ECDSA(hashes.SHA256()))  # fmt: skip
    transport = store.load("transport")
    assert isinstance(transport, rsa.RSAPrivateKey)
    sha1 = hashes.SHA1()
    oaep = padding.OAEP(padding.MGF1(sha1), sha1, None)
    assert transport.decrypt(transport.public_key().encrypt(b"k", oaep), oaep) == b"k"
    assert store.load("ak").usage is KeyUsage.ATTEST
    assert store.load_session_key("prt").hmac_sha256(b"context") == derived
    ngc = store.load("ngc", pin=PIN)
    assert isinstance(ngc, rsa.RSAPrivateKey)
    ngc.public_key().verify(ngc.sign(b"m", padding.PKCS1v15(), hashes.SHA256()), b"m",
                            padding.PKCS1v15(), hashes.SHA256())  # fmt: skip
    assert sealed.unseal(store, "refresh", pin=PIN) == b"a refresh token"


def test_tpm_init_persists_the_srk_once(
    own_swtpm: Swtpm, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_provider("tpm", tcti=own_swtpm.tcti) as before:
        assert "primary" in (before.info().storage_key or "")
    assert _init(own_swtpm.tcti) == 0
    assert "persisted" in capsys.readouterr().out
    assert _init(own_swtpm.tcti) == 0  # idempotent
    assert "already persistent" in capsys.readouterr().out
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        assert provider.info().storage_key == "0x81000001 (persistent)"
        assert transient_handles(own_swtpm.tcti) == []
    # tpm2-tools sees the standard SRK: an RSA-2048 restricted decryption key.
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    public = subprocess.run(
        ["tpm2_readpublic", "-c", "0x81000001"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "rsa" in public and "restricted" in public and "decrypt" in public


def test_tpm_init_needs_the_owner_password(
    own_swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    subprocess.run(["tpm2_changeauth", "-c", "owner", "ownerpw"], env=env, check=True)
    assert _init(own_swtpm.tcti) == 1
    err = capsys.readouterr().err
    assert "owner hierarchy has a password" in err and "--owner-auth-file" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    assert _init(own_swtpm.tcti, "--owner-auth-file", str(wrong)) == 1
    assert "the one given is wrong" in capsys.readouterr().err
    right = tmp_path / "owner"
    right.write_text("ownerpw\n")
    # The owner's password in a file others can read (or change) is refused, as a PIN file is.
    right.chmod(0o644)
    assert _init(own_swtpm.tcti, "--owner-auth-file", str(right)) == 1
    assert "open to other users" in capsys.readouterr().err
    assert not _has_srk(own_swtpm)
    right.chmod(0o600)
    assert _init(own_swtpm.tcti, "--owner-auth-file", str(right)) == 0
    assert transient_handles(own_swtpm.tcti) == []


def test_the_owner_password_never_crosses_the_tpm_interface(
    own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = b"Owner-Pa55word-xyzzy"
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    subprocess.run(["tpm2_changeauth", "-c", "owner", owner.decode()], env=env, check=True)
    capture = tmp_path / "init.pcap"
    monkeypatch.setenv("TCTI_PCAP_FILE", str(capture))
    assert persist_storage_key(f"pcap:{own_swtpm.tcti}", owner) is True
    assert _has_srk(own_swtpm)
    data = capture.read_bytes()
    assert owner not in data  # a password session would carry it twice (CreatePrimary, Evict)
    codes = command_codes(capture)
    # Both owner-authorized commands ran, after a session salted to a key (an unsalted HMAC
    # session would let a capture test guesses of the password offline).
    assert {CREATE_PRIMARY, EVICT_CONTROL} <= set(codes) and START_AUTH_SESSION in codes
    starts = [p for p in tpm_packets(capture)[::2] if _code(p) == START_AUTH_SESSION]
    assert starts and all(_salt_key(p) != TPM_RH_NULL for p in starts)
    assert transient_handles(own_swtpm.tcti) == []


def _code(packet: bytes) -> int | None:
    """The command code of a captured command (its TPM header found after the framing)."""
    for start in range(len(packet) - 9):
        tag, size, code = struct.unpack_from(">HII", packet, start)
        if tag in (0x8001, 0x8002) and size == len(packet) - start:
            return int(code)
    return None


def _salt_key(packet: bytes) -> int:
    """TPM2_StartAuthSession's first handle, tpmKey (TPM 2.0 Part 3, 11.1)."""
    for start in range(len(packet) - 13):
        tag, size, _ = struct.unpack_from(">HII", packet, start)
        if tag in (0x8001, 0x8002) and size == len(packet) - start:
            return int(struct.unpack_from(">I", packet, start + 10)[0])
    raise AssertionError("no TPM header")


def test_open_sign_close_takes_five_commands_with_a_persistent_srk(
    own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _init(own_swtpm.tcti) == 0
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        KeyStore(provider, tmp_path / "store").create("device", KeyType.ECC256, KeyUsage.SIGN)
    capture = tmp_path / "open.pcap"
    with open_pcap_provider(own_swtpm.tcti, capture, monkeypatch) as provider:
        key = provider.key_from_pem(
            KeyStore(provider, tmp_path / "store").info("device").path.read_bytes(),
            KeyUsage.SIGN,
        )
        opened = tpm_commands(capture)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        steady = tpm_commands(capture)
        key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        assert tpm_commands(capture) - steady == 1  # the key cache: one command a signature
    total = tpm_commands(capture)
    # Open: nothing; the key file's load check: ReadPublic(SRK), then Load (kept in the key
    # cache); then Sign three times and one FlushContext on close.
    assert opened == 2, opened
    assert total == opened + 3 + 1, total
    assert opened + 1 + 1 <= 5  # open, sign once, close
    assert transient_handles(own_swtpm.tcti) == []


def test_keys_made_before_tpm_init_still_work_after_it(
    own_swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys and a sealed secret made before ``tpm init`` all still load, sign, decrypt, derive
    and unseal after it, in a new provider; status is clean; nothing was refused."""
    store_dir = tmp_path / "store"
    derived = _join_before_init(own_swtpm, store_dir)
    args = ["--provider", "tpm", "--tcti", own_swtpm.tcti, "--store", str(store_dir)]
    assert main([*args, "tpm", "init"]) == 0
    assert "persisted" in capsys.readouterr().out
    assert _has_srk(own_swtpm)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        assert (provider.info().storage_key or "").startswith("0x81000001")
        _works(KeyStore(provider, store_dir), derived)
    assert main([*args, "--json", "status"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["keys_unusable"] is False and report["key_sign_test"]["result"] == "PASSED"
    assert {k["name"]: k["health"]["result"] for k in report["keys"]} == {
        "ak": "ok", "device": "ok", "ngc": "pin-protected", "prt": "ok", "transport": "ok"
    }  # fmt: skip
    assert transient_handles(own_swtpm.tcti) == []


def test_tpm_init_counts_a_key_file_it_cannot_read_as_lost(
    own_swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file the store refuses (open to others) may be a TPM key made under the key-file
    primary: its parent is unknown, so ``tpm init`` counts it and changes nothing."""
    store_dir = tmp_path / "store"
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        KeyStore(provider, store_dir).create("device", KeyType.ECC256, KeyUsage.SIGN)
    (store_dir / "device.pem").chmod(0o644)
    init = ["--provider", "tpm", "--tcti", own_swtpm.tcti, "--store", str(store_dir), "tpm", "init"]
    assert main(init) == 1
    assert "device.pem (parent unknown: it cannot be read)" in capsys.readouterr().err
    assert not _has_srk(own_swtpm)


def test_keys_and_secrets_made_before_tpm_init_keep_working(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    """``tpm init`` after a join: keys made under the owner hierarchy's primary (0x40000001 in
    their files) and a sealed secret keep loading, signing, deriving and unsealing, in the
    provider open across it and in a new one; new keys of a new provider go under the SRK."""
    service = TokenService()
    with open_provider("tpm", tcti=own_swtpm.tcti) as before:
        store = KeyStore(before, tmp_path / "store")
        device = store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(transport, rsa.RSAPrivateKey)
        jwe = service.session_key_jwe(transport.public_key())
        prt = PRTSession.create(store, "prt", transport, jwe)
        sealed.seal(store, "secret", b"refresh token", pin=b"2468")
        assert persist_storage_key(own_swtpm.tcti) is True
        assert isinstance(device, ec.EllipticCurvePrivateKey)
        device.public_key().verify(device.sign(b"m", ECDSA), b"m", ECDSA)
        assert prt.derive_key(b"c" * 24, kdf_version=1) == service.derived_key(
            b"c" * 24, kdf_version=1
        )
        assert sealed.unseal(store, "secret", pin=b"2468") == b"refresh token"
    with open_provider("tpm", tcti=own_swtpm.tcti) as after:
        assert after.info().storage_key == "0x81000001 (persistent)"
        store = KeyStore(after, tmp_path / "store")
        old = store.load("device")
        assert isinstance(old, ec.EllipticCurvePrivateKey)
        old.public_key().verify(old.sign(b"m", ECDSA), b"m", ECDSA)
        again = PRTSession.open(store, "prt")
        assert again.derive_key(b"c" * 24, kdf_version=1) == service.derived_key(
            b"c" * 24, kdf_version=1
        )
        assert sealed.unseal(store, "secret", pin=b"2468") == b"refresh token"
        store.create("new", KeyType.ECC256, KeyUsage.SIGN)
        assert tss2file_parent(store.info("new").path.read_bytes()) == 0x81000001
        assert tss2file_parent(store.info("device").path.read_bytes()) == 0x40000001
    assert transient_handles(own_swtpm.tcti) == []


def test_a_key_under_a_parent_this_tpm_does_not_offer_is_foreign(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    """A key file that names another parent (here 0x81000005) is a ForeignKey that says which
    parent the file names and which this TPM offers."""
    from tpm2_pytss.tsskey import TSSPrivKey

    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        pem = provider.key_to_pem(provider.create_key(KeyType.ECC256, KeyUsage.SIGN))
        blob = TSSPrivKey.from_pem(pem)
        moved = TSSPrivKey(blob.private, blob.public, empty_auth=True, parent=0x81000005)
        with pytest.raises(ForeignKey) as raised:
            provider.key_from_pem(bytes(moved.to_pem()), KeyUsage.SIGN)
        message = str(raised.value)
        assert "0x81000005" in message and "0x81000001" in message and "0x40000001" in message
    assert transient_handles(own_swtpm.tcti) == []


def tss2file_parent(data: bytes) -> int:
    """The parent a TSS2 PRIVATE KEY file names."""
    from tpm2_pytss.tsskey import TSSPrivKey

    return int(TSSPrivKey.from_pem(data[data.index(b"-----BEGIN") :]).parent)
