"""Opening without a persistent SRK: the storage primary comes from its saved context of this TPM
boot (no TPM2_CreatePrimary in the capture), checked by the TPM, and is created again after a
reboot, from a tampered file or one open to others; plus the owner-password and cleared-TPM
errors of the open and use paths. Each test runs on a swtpm of its own (restarted, cleared)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from entra_keys import KeyStore, KeysUnusable, KeyType, KeyUsage, TPMAuthFailure, open_provider
from entra_keys.providers.tpm import forget_saved_primary
from entra_keys.testing.pcap import command_codes
from entra_keys.testing.swtpm import Swtpm

from .helpers import open_pcap_provider, transient_handles, unavailable

CREATE_PRIMARY = 0x131
SAVED = "saved primary context"


@pytest.fixture
def own_swtpm(own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Swtpm:
    """A swtpm of this test's own, and a runtime directory of its own for the cache file."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    return own_swtpm


def _cache_file(tmp_path: Path) -> Path:
    files = list((tmp_path / "run" / "entra-keys").glob("primary-*.ctx"))
    assert len(files) == 1, files
    return files[0]


def _storage(tcti: str) -> str:
    with open_provider("tpm", tcti=tcti) as provider:
        return provider.info().storage_key or ""


def _open_sign_close(tcti: str, pem: bytes, capture: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with open_pcap_provider(tcti, capture, monkeypatch) as provider:
        key = provider.key_from_pem(pem, KeyUsage.SIGN)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA256()))
        storage = provider.info().storage_key or ""
    monkeypatch.delenv("TCTI_PCAP_FILE")
    return storage


def test_second_open_uses_the_saved_primary_context(
    own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        pem = KeyStore(provider, tmp_path / "store").create("device", KeyType.ECC256, KeyUsage.SIGN)
        pem_bytes = KeyStore(provider, tmp_path / "store").info("device").path.read_bytes()
    del pem
    path = _cache_file(tmp_path)
    path.unlink()  # the first open below creates the primary and saves it
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    assert SAVED not in _open_sign_close(own_swtpm.tcti, pem_bytes, first, monkeypatch)
    assert SAVED in _open_sign_close(own_swtpm.tcti, pem_bytes, second, monkeypatch)
    first_codes, second_codes = command_codes(first), command_codes(second)
    assert CREATE_PRIMARY in first_codes
    assert CREATE_PRIMARY not in second_codes
    # The first open of the boot saves what it created (CreatePrimary, ContextSave); the next
    # loads and checks it (ContextLoad, ReadPublic): as many commands, none of them a slow
    # key generation. info() adds a GetCapability and the SRK probe to each.
    assert len(second_codes) <= len(first_codes), (first_codes, second_codes)
    assert transient_handles(own_swtpm.tcti) == []
    # The file is the user's alone.
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_open_load_sign_close_sends_these_commands(
    own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process's one signature without a persistent SRK, command by command, with the
    primary created and from its saved context (the SRK case: test_tpm_init)."""
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        pem = provider.key_to_pem(provider.create_key(KeyType.ECC256, KeyUsage.SIGN))
    forget_saved_primary(own_swtpm.tcti)
    codes = []
    for name in ("created", "saved"):
        capture = tmp_path / f"{name}.pcap"
        with open_pcap_provider(own_swtpm.tcti, capture, monkeypatch) as provider:
            key = provider.key_from_pem(pem, KeyUsage.SIGN)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        monkeypatch.delenv("TCTI_PCAP_FILE")
        codes.append(command_codes(capture))
    read_public, context_save, context_load = 0x173, 0x162, 0x161
    load, sign, flush = 0x157, 0x15D, 0x165
    # The key file names the owner primary (0x40000001): no SRK probe. Created (ECC tried
    # first, no capability probe) and saved for the next opens of this boot; or loaded from
    # that context and checked by the TPM's ReadPublic.
    opened = [CREATE_PRIMARY, context_save]
    # The load check keeps the key in the key cache for the signature; close flushes both.
    used = [load, sign, flush, flush]
    assert codes[0] == opened + used
    assert codes[1] == [context_load, read_public, *used]
    assert transient_handles(own_swtpm.tcti) == []


def test_a_restarted_tpm_creates_the_primary_again(own_swtpm: Swtpm, tmp_path: Path) -> None:
    assert SAVED not in _storage(own_swtpm.tcti)
    assert SAVED in _storage(own_swtpm.tcti)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    own_swtpm.stop()  # a new boot: TPM2_Startup(CLEAR) after no Shutdown, resetCount + 1
    own_swtpm.start()
    assert SAVED not in _storage(own_swtpm.tcti)  # the old boot's context is refused
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        assert SAVED in (provider.info().storage_key or "")  # saved again, for this boot
        key = KeyStore(provider, tmp_path / "store").load("device")  # same primary, same seed
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert transient_handles(own_swtpm.tcti) == []


@pytest.mark.parametrize("damage", ["context byte", "recorded name", "truncated", "open to group"])
def test_a_tampered_cache_file_creates_the_primary_again(
    own_swtpm: Swtpm, tmp_path: Path, damage: str
) -> None:
    _storage(own_swtpm.tcti)
    path = _cache_file(tmp_path)
    data = bytearray(path.read_bytes())
    name_at = data.index(b"\n") + 1 + 4
    if damage == "context byte":  # in the TPM's context data, under its integrity HMAC
        data[name_at + 34 + 8 + 4 + 4 + 2 + 4 + 2 + 20] ^= 1
    elif damage == "recorded name":
        data[name_at + 10] ^= 1
    elif damage == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    if damage == "open to group":
        path.chmod(0o640)
    assert SAVED not in _storage(own_swtpm.tcti)
    assert transient_handles(own_swtpm.tcti) == []
    assert stat.S_IMODE(_cache_file(tmp_path).stat().st_mode) == 0o600  # rewritten
    assert SAVED in _storage(own_swtpm.tcti)


def test_owner_password_is_a_typed_error_not_a_wrong_pin(own_swtpm: Swtpm, tmp_path: Path) -> None:
    """Opening sends no command; the first that needs the storage primary says why it fails."""
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    subprocess.run(["tpm2_changeauth", "-c", "o", "ownerpw"], env=env, check=True)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        with pytest.raises(TPMAuthFailure) as raised:
            provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
    message = str(raised.value)
    assert "owner hierarchy has a password" in message
    assert "entra-keys tpm init --owner-auth-file" in message
    assert "PIN" not in message
    assert transient_handles(own_swtpm.tcti) == []


def test_a_key_used_after_a_tpm_clear_is_unusable(own_swtpm: Swtpm, tmp_path: Path) -> None:
    if shutil.which("tpm2_clear") is None:
        unavailable("tpm2_clear (tpm2-tools) is not installed")
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        key = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.sign(b"m", ec.ECDSA(hashes.SHA256()))  # loaded, kept in the key cache
        subprocess.run(["tpm2_clear", "-c", "l"], env=env, check=True)
        for _ in range(2):  # the cached handle and then the reload under the gone primary
            with pytest.raises(KeysUnusable, match="leave and join again"):
                key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert transient_handles(own_swtpm.tcti) == []
    # After the clear, the saved context is refused and a new primary is made.
    assert SAVED not in _storage(own_swtpm.tcti)


def test_forget_saved_primary_makes_the_next_open_create_it(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    """The public way to drop the saved context (what benchmarks/opening.py uses): True where
    there was one, the next open creates the primary (TPM2_CreatePrimary) and saves it again;
    a ``pcap:`` wrapper names the same file; False with nothing saved."""
    assert forget_saved_primary(own_swtpm.tcti) is False
    assert SAVED not in _storage(own_swtpm.tcti)
    path = _cache_file(tmp_path)
    assert SAVED in _storage(own_swtpm.tcti)
    assert forget_saved_primary(f"pcap:{own_swtpm.tcti}") is True
    assert not path.exists()
    assert forget_saved_primary(own_swtpm.tcti) is False
    assert SAVED not in _storage(own_swtpm.tcti)  # created again, and saved
    assert path.exists() and SAVED in _storage(own_swtpm.tcti)
    assert transient_handles(own_swtpm.tcti) == []
