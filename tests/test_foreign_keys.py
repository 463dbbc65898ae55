"""Keys from other tools: TSS2 PRIVATE KEY files of tpm2-openssl and tpm2-tools, imported into
the store with their type and usage read from the public area, and used like any other key."""

from __future__ import annotations

import json
import os
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
    open_provider,
)
from entra_keys.cli import main
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
