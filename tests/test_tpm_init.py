"""``entra-keys tpm init`` and the persistent SRK: idempotent, refused without the owner's
password, an open + sign + close in at most 5 TPM commands (counted in a pcap capture; 4 now:
tests/test_command_counts.py counts every flow), and a join made before it that keeps working
(each key under the parent its file names)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from entra_keys import ForeignKey, KeyStore, KeyType, KeyUsage, PRTSession, open_provider
from entra_keys.cli import main
from entra_keys.providers.tpm import persist_storage_key
from entra_keys.store import sealed
from entra_keys.testing.pcap import tpm_commands
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService

from .helpers import open_pcap_provider, transient_handles

ECDSA = ec.ECDSA(hashes.SHA256())


def _init(tcti: str, *extra: str) -> int:
    return main(["--provider", "tpm", "--tcti", tcti, "tpm", "init", *extra])


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
    assert _init(own_swtpm.tcti, "--owner-auth-file", str(wrong)) == 1
    assert "the one given is wrong" in capsys.readouterr().err
    right = tmp_path / "owner"
    right.write_text("ownerpw\n")
    assert _init(own_swtpm.tcti, "--owner-auth-file", str(right)) == 0
    assert transient_handles(own_swtpm.tcti) == []


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
