"""Keys from other tools: TSS2 PRIVATE KEY files of tpm2-openssl and tpm2-tools, imported into
the store with their type and usage read from the public area, and used like any other key; an
imported key that may have a PIN never used unasked (the TPM's lockout counter does not move),
files with more than their key refused at import, and a key naming another storage parent
refused as foreign, not blamed on a cleared TPM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    ForeignKey,
    ImportedKey,
    KeyFileCorrupt,
    KeyStore,
    KeyType,
    KeyUsage,
    Provider,
    TPMAuthFailure,
    WrongPassphrase,
    open_provider,
)
from entra_keys.cli import main
from entra_keys.cli.status import LOCKOUT_LOADS
from entra_keys.store import sealed
from entra_keys.testing.swtpm import Swtpm

from .helpers import transient_handles, unavailable

TPM2_OPENSSL = Path("/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so")
#: tpm2-tools' storage primary with the attributes of the TCG key-file primary (tpm2-openssl's
#: and ours); tpm2_createprimary's default lacks noDA, so keys under it are another parent's.
_KEYFILE_ATTRIBUTES = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
KEYFILE_PRIMARY = ["-G", "ecc256:aes128cfb", "-a", _KEYFILE_ATTRIBUTES + "|noda"]
MESSAGE = b"signed by a key another tool made"


@pytest.fixture
def tpm(own_swtpm: Swtpm) -> Iterator[Swtpm]:
    """A swtpm of the test's own: tpm2-tools without a resource manager leaves objects loaded."""
    yield own_swtpm
    assert transient_handles(own_swtpm.tcti) == []


def _run(tpm: Swtpm, *argv: str, cwd: Path) -> None:
    """A tpm2-tools or openssl command on the test's TPM; tpm2-tools' leftovers flushed after."""
    if shutil.which(argv[0]) is None:
        unavailable(f"{argv[0]} is not installed")
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti, "TPM2OPENSSL_TCTI": tpm.tcti}
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    if argv[0].startswith("tpm2_"):
        subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)


def _openssl_key(tpm: Swtpm, tmp_path: Path, algorithm: str) -> Path:
    if not TPM2_OPENSSL.exists():
        unavailable("tpm2-openssl is not installed")
    out = tmp_path / f"{algorithm}.pem"
    opt = "group:P-256" if algorithm == "EC" else "bits:2048"
    _run(tpm, "openssl", "genpkey", "-provider", "tpm2", "-algorithm", algorithm,
         "-pkeyopt", opt, "-out", str(out), cwd=tmp_path)  # fmt: skip
    return out


def _verify(public: object, signature: bytes) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())


def _sign(key: object) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("algorithm", "key_type"), [("EC", KeyType.ECC256), ("RSA", KeyType.RSA2048)]
)
def test_tpm2_openssl_key_imports_and_signs(
    tpm: Swtpm,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
    key_type: KeyType,
) -> None:
    pem = _openssl_key(tpm, tmp_path, algorithm)
    store_dir = tmp_path / "store"
    args = ["--provider", "tpm", "--tcti", tpm.tcti, "--store", str(store_dir), "--json"]
    assert main([*args, "keys", "import", "device", "--in", str(pem)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["type"], shown["usage"], shown["hardware_backed"]) == (
        key_type.value,
        "sign",
        True,
    )
    # openssl's own reading of the public key: the independent check of every signature.
    public_pem = subprocess.run(
        ["openssl", "pkey", "-provider", "tpm2", "-provider", "default", "-in", str(pem),
         "-pubout"],
        env={**os.environ, "TPM2OPENSSL_TCTI": tpm.tcti}, check=True, capture_output=True,
    ).stdout  # fmt: skip
    public = serialization.load_pem_public_key(public_pem)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        key = KeyStore(provider, store_dir).load("device")
        assert key.key_type is key_type and key.hardware_backed
        _verify(public, _sign(key))
    assert main([*args, "status"]) == 0
    assert json.loads(capsys.readouterr().out)["keys"][0]["health"]["result"] == "ok"


def _tools_key(tpm: Swtpm, tmp_path: Path, primary: list[str], *, imported: bool) -> Path:
    """A key made (or, with ``imported``, brought in with TPM2_Import) by tpm2-tools under a
    primary made with ``primary``, with the PIN 'secret', encoded by tpm2_encodeobject."""
    _run(tpm, "tpm2_createprimary", "-C", "o", *primary, "-c", "primary.ctx", cwd=tmp_path)
    if imported:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "soft.pem").write_bytes(ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip
        _run(tpm, "tpm2_import", "-p", "secret", "-C", "primary.ctx", "-G", "ecc",
             "-i", "soft.pem", "-u", "k.pub", "-r", "k.priv", cwd=tmp_path)  # fmt: skip
    else:
        _run(tpm, "tpm2_create", "-p", "secret", "-C", "primary.ctx", "-G", "ecc256",
             "-u", "k.pub", "-r", "k.priv", cwd=tmp_path)  # fmt: skip
    _run(tpm, "tpm2_encodeobject", "-C", "primary.ctx", "-u", "k.pub", "-r", "k.priv", "-p",
         "-o", "k.pem", cwd=tmp_path)  # fmt: skip
    return tmp_path / "k.pem"


def test_tpm2_tools_key_with_a_pin_imports(tpm: Swtpm, tmp_path: Path) -> None:
    """A tpm2-tools key with a PIN: type and usage from its public area, loaded by this TPM."""
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=False)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        key = store.import_key_file("device", pem.read_bytes(), pin=b"secret")
        assert (key.key_type, key.usage) == (KeyType.ECC256, KeyUsage.SIGN)
        assert key.hardware_backed and store.info("device").hardware_backed
        assert store.load("device", pin=b"secret").public_key() == key.public_key()


def test_tpm2_tools_key_with_a_pin_signs(tpm: Swtpm, tmp_path: Path) -> None:
    """tpm2_encodeobject 5.4 writes emptyAuth inverted: the PIN given is used, and a wrong one
    is refused by the TPM."""
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=False)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        key = store.import_key_file("device", pem.read_bytes(), pin=b"secret")
        _verify(key.public_key(), _sign(store.load("device", pin=b"secret")))
        with pytest.raises(TPMAuthFailure):
            _sign(store.load("device", pin=b"wrong"))


def test_key_under_another_primary_is_refused_clearly(tpm: Swtpm, tmp_path: Path) -> None:
    """tpm2_createprimary's default ECC primary is not the key-file primary: the TPM refuses the
    key under ours, and the error says which parent entra_keys uses."""
    pem = _tools_key(tpm, tmp_path, ["-G", "ecc"], imported=False)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        with pytest.raises(ForeignKey, match="TCG key-file primary") as info:
            store.import_key_file("device", pem.read_bytes(), pin=b"secret")
        assert info.value.key_name == "device" and "device" not in store


def test_tpm2_imported_key_keeps_the_trust_rules(tpm: Swtpm, tmp_path: Path) -> None:
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=True)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        with pytest.raises(ImportedKey, match="sensitiveDataOrigin"):
            store.import_key_file("device", pem.read_bytes(), pin=b"secret")
        assert "device" not in store
        key = store.import_key_file("device", pem.read_bytes(), pin=b"secret", allow_imported=True)
        assert not key.hardware_backed and not store.info("device").hardware_backed


def test_tss2_file_needs_the_tpm_provider(provider: Provider, tmp_path: Path) -> None:
    store = KeyStore(open_provider("software"), tmp_path / "store")
    pem = b"-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n"
    with pytest.raises(KeyFileCorrupt, match="import it with the TPM provider"):
        store.import_key_file("device", pem)
    with pytest.raises(KeyFileCorrupt, match="holds no TSS2 PRIVATE KEY"):
        KeyStore(provider, tmp_path / "other").import_key_file("device", b"not a key")


# -- a key that may have a PIN is never used unasked ----------------------------------------------


def _lockout_counter(tpm: Swtpm) -> int:
    """TPM2_PT_LOCKOUT_COUNTER, as tpm2-tools reads it on its own connection."""
    out = subprocess.run(
        ["tpm2_getcap", "properties-variable"],
        env={**os.environ, "TPM2TOOLS_TCTI": tpm.tcti},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"TPM2_PT_LOCKOUT_COUNTER:\s*(0x[0-9a-fA-F]+)", out)
    assert found, out
    return int(found.group(1), 16)


def test_status_never_spends_a_try_of_an_imported_key_with_a_pin(
    tpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tpm2-tools key with an authorization value whose file says emptyAuth TRUE (as
    tpm2_encodeobject 5.4 writes it) is imported without a PIN. Its public area lacks noDA, so
    status, keys list and keys show only load it: the TPM's lockout counter does not move over
    more runs than the swtpm allows wrong tries (3), and an unrelated sealed secret with a PIN
    still unseals. The control: one use without the PIN moves the counter."""
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=False)
    store_dir = tmp_path / "store"
    args = ["--provider", "tpm", "--tcti", tpm.tcti, "--store", str(store_dir), "--json"]
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        sealed.seal(KeyStore(provider, store_dir), "secret", b"unrelated", pin=b"2468")
    before = _lockout_counter(tpm)
    assert main([*args, "keys", "import", "hello", "--in", str(pem)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lockout"] is True and shown["pin"] is False  # the file says no PIN
    for _ in range(4):
        assert main([*args, "status"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["keys"][0]["health"] == {
            "result": "ok", "test": "load", "note": LOCKOUT_LOADS
        }  # fmt: skip
        assert report["key_sign_test"]["result"] == "SKIPPED"
        assert main([*args, "keys", "list"]) == 0
        assert main([*args, "keys", "show", "hello"]) == 0
        capsys.readouterr()
    assert _lockout_counter(tpm) == before == 0
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        assert sealed.unseal(store, "secret", pin=b"2468") == b"unrelated"
        with pytest.raises(TPMAuthFailure):
            _sign(store.load("hello"))  # asked for, without its PIN: one try spent
        assert _lockout_counter(tpm) == 1
        _verify(store.load("hello", pin=b"secret").public_key(),
                _sign(store.load("hello", pin=b"secret")))  # fmt: skip
        conn = provider.connection  # type: ignore[attr-defined]
        with conn.command("forgive the control's try") as esys:
            esys.dictionary_attack_lock_reset(conn.tss.ESYS_TR.LOCKOUT)


def test_an_imported_key_with_a_pin_is_listed_with_it(tpm: Swtpm, tmp_path: Path) -> None:
    """Imported with its PIN: the store writes that it has one, whatever emptyAuth says."""
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=False)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.import_key_file("hello", pem.read_bytes(), pin=b"secret")
        info = store.info("hello")
        assert info.pin and info.lockout


# -- a key file with more than its key is refused at import ------------------------------------


def test_a_key_file_with_trailing_data_is_refused_at_import(
    tpm_provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """70 KB after the PEM block made a file the store kept and could never load again (larger
    than any key file); now any data after the block, a second block, or a file over the store's
    limit is refused at import, by the API and the CLI, and nothing is stored."""
    pem = tpm_provider.key_to_pem(tpm_provider.create_key(KeyType.ECC256, KeyUsage.SIGN))
    store = KeyStore(tpm_provider, tmp_path / "store")
    refused = {
        "70 KB of trailing data": (pem + os.urandom(70 * 1024), "more than a key file"),
        "a line of trailing text": (pem + b"not a key\n", "data after its TSS2 PRIVATE KEY"),
        "a second PEM block": (pem + pem, "a second PEM block"),
        "text, then a second block": (pem + b"x\n" + pem, "a second PEM block"),
    }
    for what, (data, message) in refused.items():
        with pytest.raises(KeyFileCorrupt, match=message):
            store.import_key_file("device", data)
        assert "device" not in store, what
    path = tmp_path / "key.pem"
    path.write_bytes(pem + b"A" * 100)
    args = ["--provider", "tpm", "--tcti", tpm_provider.info().tcti or "", "--store",
            str(store.path)]  # fmt: skip
    tpm_provider.close()  # the command opens its own connection
    assert main([*args, "keys", "import", "device", "--in", str(path)]) == 1
    assert "data after its TSS2 PRIVATE KEY" in capsys.readouterr().err
    path.write_bytes(pem + os.urandom(70 * 1024))
    assert main([*args, "keys", "import", "device", "--in", str(path)]) == 1
    assert "more than" in capsys.readouterr().err
    assert not store.path.exists() or not list(store.path.iterdir())
    path.write_bytes(b"explanatory text\n" + pem + b"\n  \n")  # whitespace after it is fine
    assert main([*args, "keys", "import", "device", "--in", str(path)]) == 0
    capsys.readouterr()
    with open_provider("tpm", tcti=args[3]) as provider:
        key = KeyStore(provider, store.path).load("device")
        _verify(key.public_key(), _sign(key))


# -- a key file naming another storage parent ----------------------------------------------------


def test_a_key_naming_another_parent_is_foreign_not_a_cleared_tpm(
    tpm_provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file whose parent is a handle this TPM does not use as its storage key: the error
    names the parent the file names and the TPM's own, and does not blame a cleared TPM (that
    advice, leave and join again, would destroy an intact join); status says it failed, not
    that the keys are unusable."""
    import tpm2_pytss.tsskey

    store = KeyStore(tpm_provider, tmp_path / "store")
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    path = store.path / "device.pem"
    data = path.read_bytes()
    begin = data.index(b"-----BEGIN ")
    blob = tpm2_pytss.tsskey.TSSPrivKey.from_pem(data[begin:])
    moved = tpm2_pytss.tsskey.TSSPrivKey(
        blob.private, blob.public, empty_auth=blob.empty_auth, parent=0x81000005
    )
    path.write_bytes(data[:begin] + bytes(moved.to_pem()))
    ours = (tpm_provider.info().storage_key or "").split()[0]
    with pytest.raises(ForeignKey) as caught:
        store.load("device")
    assert type(caught.value) is ForeignKey  # not KeysUnusable
    message = str(caught.value)
    assert "0x81000005" in message and ours in message, message
    assert "not cleared" in message and "cleared or replaced" not in message, message
    args = ["--provider", "tpm", "--tcti", tpm_provider.info().tcti or "", "--store",
            str(store.path), "--json"]  # fmt: skip
    tpm_provider.close()
    assert main([*args, "status"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["keys_unusable"] is False
    assert report["keys"][0]["health"]["result"] == "failed"


def test_an_imported_key_with_a_pin_needs_it_to_load(tpm: Swtpm, tmp_path: Path) -> None:
    """Imported with its PIN from a file that says emptyAuth TRUE: loading it without the PIN is
    WrongPassphrase (the store's header says it has one), and no dictionary-attack try is spent;
    with the PIN it signs."""
    pem = _tools_key(tpm, tmp_path, KEYFILE_PRIMARY, imported=False)
    before = _lockout_counter(tpm)
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.import_key_file("hello", pem.read_bytes(), pin=b"secret")
        for _ in range(4):
            with pytest.raises(WrongPassphrase, match="has a PIN"):
                store.load("hello")
        key = store.load("hello", pin=b"secret")
        _verify(key.public_key(), _sign(key))
    assert _lockout_counter(tpm) == before == 0
