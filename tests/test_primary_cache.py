"""Opening without a persistent SRK: the storage primary comes from its saved context of this TPM
boot (no TPM2_CreatePrimary in the capture), checked by the TPM, and is created again after a
reboot, from a tampered file or one open to others; plus the owner-password and cleared-TPM
errors of the open and use paths. Each test runs on a swtpm of its own (restarted, cleared).

The attacks on the saved context: a point of the attacker's planted in ESYS's copy of the public
area (the capture of the TPM traffic must not give them the PIN or the sealed secret; the control
shows that ESYS trusting the file would), the RSA primary's context where the ECC one is made,
and a cache directory that is a link, another owner's, or in another user's runtime directory."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from entra_keys import KeyStore, KeysUnusable, KeyType, KeyUsage, TPMAuthFailure, open_provider
from entra_keys.providers.tpm import _primary_cache, forget_saved_primary
from entra_keys.testing.pcap import command_codes, tpm_packets
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
    name_at = data.index(b"\n") + 1 + 2  # after the magic line and the name's length
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
    with (
        open_provider("tpm", tcti=own_swtpm.tcti) as provider,
        pytest.raises(TPMAuthFailure) as raised,
    ):
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


# -- what is planted in the saved context or its directory ---------------------------------------

PIN = b"271828"
SECRET = b"the sealed refresh token"
_CC_START_AUTH_SESSION, _CC_CREATE = 0x176, 0x153
_DECRYPT = 0x20  # TPMA_SESSION.DECRYPT: the command's first parameter is encrypted


def _kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa with HMAC-SHA256 (TPM 2.0 Part 1, 11.4.10.2), written here from the spec."""
    out, counter = b"", 1
    while len(out) * 8 < bits:
        block = struct.pack(">I", counter) + label + b"\0" + context_u + context_v
        out += hmac.new(key, block + struct.pack(">I", bits), hashlib.sha256).digest()
        counter += 1
    return out[: bits // 8]


def _kdfe(z: bytes, use: bytes, party_u: bytes, party_v: bytes) -> bytes:
    """KDFe with SHA-256, one block (Part 1, 11.4.10.3): the salt of an ECC-salted session."""
    return hashlib.sha256(struct.pack(">I", 1) + z + use + b"\0" + party_u + party_v).digest()


class _Reader:
    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data, self.at = data, at

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def tpm2b(self) -> bytes:
        return self.take(self.u16())


def _tpm_bytes(packet: bytes) -> bytes:
    """The TPM command or response in a captured packet (after the TCTI's framing)."""
    for start in range(len(packet) - 9):
        tag, size = struct.unpack_from(">HI", packet, start)
        if tag in (0x8001, 0x8002) and size == len(packet) - start:
            return packet[start:]
    raise AssertionError("no TPM header in the packet")


def _attack(capture: Path, attacker: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """What the holder of ``attacker`` reads from a capture: for each session whose salt was
    encrypted to the planted point, the session key (ECDH, KDFe, KDFa "ATH"), and with it the
    first parameter of the TPM2_Create that followed it (AES-128-CFB, KDFa "CFB")."""
    packets = [_tpm_bytes(p) for p in tpm_packets(capture)]
    planted_x = attacker.public_key().public_numbers().x.to_bytes(32, "big")
    read: list[bytes] = []
    sessions: dict[int, tuple[bytes, bytes]] = {}  # handle -> (session key, last nonceTPM)
    for command, response in zip(packets[::2], packets[1::2], strict=False):
        code = struct.unpack_from(">I", command, 6)[0]
        answer = struct.unpack_from(">I", response, 6)[0]
        if code == _CC_START_AUTH_SESSION and answer == 0:
            r = _Reader(command, 10 + 8)  # after the header, tpmKey and bind
            nonce_caller = r.tpm2b()
            point = _Reader(r.tpm2b())
            ephemeral_x, ephemeral_y = point.tpm2b(), point.tpm2b()
            ephemeral = ec.EllipticCurvePublicNumbers(
                int.from_bytes(ephemeral_x, "big"), int.from_bytes(ephemeral_y, "big"),
                ec.SECP256R1(),
            ).public_key()  # fmt: skip
            z = attacker.exchange(ec.ECDH(), ephemeral)
            salt = _kdfe(z, b"SECRET", ephemeral_x, planted_x)
            out = _Reader(response, 10)
            handle, nonce_tpm = out.u32(), out.tpm2b()
            key = _kdfa(salt, b"ATH", nonce_tpm, nonce_caller, 256)
            sessions[handle] = (key, nonce_tpm)
        elif code == _CC_CREATE and command[:2] == b"\x80\x02":
            r = _Reader(command, 10 + 4)  # after the header and the parent handle
            end = r.u32() + r.at
            handle, nonce_caller, attributes = r.u32(), r.tpm2b(), r.take(1)[0]
            r.at = end
            sealed_area = r.tpm2b()
            if handle in sessions and attributes & _DECRYPT:
                key, nonce_tpm = sessions[handle]
                stream = _kdfa(key, b"CFB", nonce_caller, nonce_tpm, 256)
                decryptor = Cipher(algorithms.AES(stream[:16]), CFB(stream[16:])).decryptor()
                read.append(decryptor.update(sealed_area) + decryptor.finalize())
    return read


def _plant(
    context: bytes, real: ec.EllipticCurvePublicKey, point: ec.EllipticCurvePublicKey
) -> bytes:
    """The saved context with ESYS's copy of the primary's public key replaced by ``point``:
    the TPM's own part (encrypted, under its integrity HMAC) is untouched, so it still loads,
    and ESYS's copy of the name is still right."""

    def xy(key: ec.EllipticCurvePublicKey) -> bytes:
        numbers = key.public_numbers()
        return b"\0\x20" + numbers.x.to_bytes(32, "big") + b"\0\x20" + numbers.y.to_bytes(32, "big")

    assert context.count(xy(real)) == 1  # ESYS's copy; the TPM's is encrypted
    return context.replace(xy(real), xy(point))


def _primary_public(tcti: str, context: bytes) -> ec.EllipticCurvePublicKey:
    """The saved primary's public key, as the TPM answers for the loaded context."""
    import tpm2_pytss

    esys = tpm2_pytss.ESAPI(tcti)
    try:
        handle = esys.context_load(tpm2_pytss.TPMS_CONTEXT.unmarshal(context)[0])
        try:
            public, _, _ = esys.read_public(handle)
        finally:
            esys.flush_context(handle)
    finally:
        esys.close()
    key = serialization.load_der_public_key(bytes(public.to_der()))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_a_planted_point_in_the_saved_context_reads_no_pin_and_no_secret(
    own_swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker replaces ESYS's copy of the primary's public area in the saved context with
    a point of their own and captures the TPM traffic. The provider binds its salt to the
    TPM's ReadPublic answer, refuses that context, and seals over a session whose salt only
    the TPM can read: nothing in the capture decrypts to the PIN or the secret. The control:
    ESYS trusting the same file salts to the attacker, who reads both."""
    tcti = own_swtpm.tcti
    _storage(tcti)  # creates the primary and saves its context
    recorded, context = _primary_cache.read(tcti) or (b"", b"")
    attacker = ec.generate_private_key(ec.SECP256R1())
    planted = _plant(context, _primary_public(tcti, context), attacker.public_key())
    _primary_cache.write(tcti, recorded, planted)

    capture = tmp_path / "provider.pcap"
    with open_pcap_provider(tcti, capture, monkeypatch) as provider:
        provider.seal(SECRET, pin=PIN)
        assert SAVED not in (provider.info().storage_key or "")  # refused, created again
    monkeypatch.delenv("TCTI_PCAP_FILE")
    read = _attack(capture, attacker)
    assert len(read) == 1  # the sealed object's TPM2_Create, in a salted session
    assert PIN not in read[0] and SECRET not in read[0]  # salted to the TPM's key: noise
    wire = capture.read_bytes()
    assert SECRET not in wire and PIN not in wire
    assert transient_handles(tcti) == []

    # The control, with the same planted file: ESYS's metadata decides the salt.
    import tpm2_pytss as t

    control = tmp_path / "control.pcap"
    monkeypatch.setenv("TCTI_PCAP_FILE", str(control))
    esys = t.ESAPI(f"pcap:{tcti}")
    try:
        handle = esys.context_load(t.TPMS_CONTEXT.unmarshal(planted)[0])
        session = esys.start_auth_session(
            tpm_key=handle, bind=t.ESYS_TR.NONE, session_type=t.TPM2_SE.HMAC,
            symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"), auth_hash=t.TPM2_ALG.SHA256,
        )  # fmt: skip
        esys.trsess_set_attributes(session, t.TPMA_SESSION.CONTINUESESSION | t.TPMA_SESSION.DECRYPT)
        sensitive = t.TPM2B_SENSITIVE_CREATE(
            t.TPMS_SENSITIVE_CREATE(userAuth=t.TPM2B_AUTH(PIN), data=t.TPM2B_SENSITIVE_DATA(SECRET))
        )
        template = t.TPM2B_PUBLIC(
            publicArea=t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
        )
        template.publicArea.objectAttributes = t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT
        template.publicArea.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.NULL
        with pytest.raises(t.TSS2_Exception):  # the TPM's session key is not the attacker's
            esys.create(handle, sensitive, template, session1=session)
        esys.flush_context(session)
        esys.flush_context(handle)
    finally:
        esys.close()
    leaked = _attack(control, attacker)
    assert len(leaked) == 1 and PIN in leaked[0] and SECRET in leaked[0]
    assert transient_handles(tcti) == []


def test_a_saved_rsa_primary_is_not_used(own_swtpm: Swtpm, tmp_path: Path) -> None:
    """A saved context of the owner hierarchy's RSA primary (right name, right parent) where
    the library makes the ECC one is refused: keys made in this boot hang under the ECC
    primary, and load after the next reboot."""
    import tpm2_pytss as t

    esys = t.ESAPI(own_swtpm.tcti)
    try:
        template = t.TPM2B_PUBLIC.parse(
            "rsa2048:aes128cfb", nameAlg=t.TPM2_ALG.SHA256,
            objectAttributes=t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT
            | t.TPMA_OBJECT.SENSITIVEDATAORIGIN | t.TPMA_OBJECT.USERWITHAUTH
            | t.TPMA_OBJECT.NODA | t.TPMA_OBJECT.RESTRICTED | t.TPMA_OBJECT.DECRYPT,
        )  # fmt: skip
        handle = esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER)[0]
        name = bytes(esys.tr_get_name(handle))
        context = bytes(esys.context_save(handle).marshal())
        esys.flush_context(handle)
    finally:
        esys.close()
    _primary_cache.write(own_swtpm.tcti, name, context)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        assert SAVED not in (provider.info().storage_key or "")
    own_swtpm.restart()
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        key = KeyStore(provider, tmp_path / "store").load("device")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.public_key().verify(
            key.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256())
        )
    assert transient_handles(own_swtpm.tcti) == []


@pytest.mark.parametrize("planted", ["a link", "another owner", "another user's runtime dir"])
def test_a_cache_directory_this_user_does_not_own_is_not_used(
    own_swtpm: Swtpm, tmp_path: Path, planted: str
) -> None:
    """Root with another user's XDG_RUNTIME_DIR: a link where the cache directory goes, a
    directory of another owner, a runtime directory of another user. Nothing is written where
    they chose, nothing is read from there, and the provider works (creating its primary)."""
    run = tmp_path / "run"
    chosen = tmp_path / "chosen"
    chosen.mkdir(mode=0o777)
    if planted == "a link":
        (run / "entra-keys").symlink_to(chosen)
    elif planted == "another owner":
        if os.geteuid() != 0:
            pytest.skip("only root can make a directory of another owner")
        (run / "entra-keys").mkdir(mode=0o700)
        os.chown(run / "entra-keys", 65534, 65534)
        chosen = run / "entra-keys"
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can use another user's runtime directory")
        os.chown(run, 65534, 65534)
        chosen = run
    for _ in range(2):
        assert SAVED not in _storage(own_swtpm.tcti)
    assert [p.name for p in chosen.iterdir() if p.name.startswith("primary")] == []
    assert not list(chosen.rglob("primary-*.ctx"))
    assert transient_handles(own_swtpm.tcti) == []
