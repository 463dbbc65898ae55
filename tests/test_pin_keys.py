"""Software keys with a PIN, where software differs from a TPM by nature: the key file is
written under the PIN and the store passphrase together, stretched by scrypt; earlier releases'
files (PKCS#8 under the passphrase *or* the PIN) are migrated or refused; and the Windows Hello
flow of the stand-in Entra with a wrong or missing PIN. What both providers do alike with PINs
is in tests/contract/ (test_keys, test_errors)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    KeyFileCorrupt,
    KeyStore,
    KeyType,
    KeyUsage,
    WrongPassphrase,
    open_provider,
    protocol,
)
from entra_keys.cli._demo import JoinDemo

PIN = b"246810"
PASSPHRASE = b"the store passphrase"
MESSAGE = b"a Windows Hello assertion"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(open_provider("software"), tmp_path / "store")


def _asn1(path: Path) -> str:
    """openssl's own reading of a PEM file's ASN.1 (the independent view of the PKCS#8)."""
    return subprocess.run(
        ["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
    ).stdout


def _objects(parsed: str) -> list[str]:
    """The OBJECT identifiers of an ``openssl asn1parse`` listing, in order."""
    return re.findall(r"OBJECT\s+:(\S+)", parsed)


def test_a_pin_key_file_is_under_scrypt_with_the_pin_and_the_passphrase(store: KeyStore) -> None:
    """PBES2 with scrypt (N=2**15, r=8, p=1: 32 MiB a guess; about 91 ms here, where PKCS#8's
    PBKDF2 took 0.36 ms), read by openssl; neither the PIN nor the passphrase alone opens it."""
    made = store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE, pin=PIN)
    path = store.path / "ngc.pem"
    parsed = _asn1(path)
    assert _objects(parsed) == ["PBES2", "scrypt", "aes-256-cbc"], parsed
    integers = [int(v, 16) for v in re.findall(r"INTEGER\s+:([0-9A-F]+)", parsed)]
    assert integers[:3] == [2**15, 8, 1], parsed  # cost, block size, parallelization
    data = path.read_bytes()
    for password in (PIN, PASSPHRASE, PASSPHRASE + PIN, PIN + PASSPHRASE):
        with pytest.raises(ValueError, match=r"Incorrect password|Could not deserialize"):
            serialization.load_pem_private_key(data, password)
    info = store.info("ngc")
    assert info.pin and info.encrypted and not info.lockout
    key = store.load("ngc", passphrase=PASSPHRASE, pin=PIN)
    assert key.public_key() == made.public_key()


def test_a_header_stripped_pin_key_still_needs_its_pin(store: KeyStore) -> None:
    """The PIN is in the file's encryption, not in its header: a file whose header lines an
    attacker removed is still listed as PIN-protected and still needs the PIN."""
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=PIN)
    path = store.path / "ngc.pem"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Entra-Keys-PIN: yes\n", b""))
    assert store.info("ngc").pin
    with pytest.raises(WrongPassphrase, match="has a PIN"):
        store.load("ngc")
    assert store.load("ngc", pin=PIN).usage is KeyUsage.SIGN


def test_a_saved_pin_key_stays_under_its_pin(store: KeyStore) -> None:
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE, pin=PIN)
    key = store.load("ngc", passphrase=PASSPHRASE, pin=PIN)
    store.save("copy", key, passphrase=PASSPHRASE)
    assert store.info("copy").pin
    with pytest.raises(WrongPassphrase):
        store.load("copy", passphrase=PASSPHRASE)
    assert store.load("copy", passphrase=PASSPHRASE, pin=PIN).public_key() == key.public_key()


def test_the_stand_in_issues_no_ngc_prt_without_the_right_pin(tmp_path: Path) -> None:
    """The issue's scenario: a software join under a store passphrase, its Windows Hello key
    made with a PIN. Whoever has the store and the passphrase but not the PIN gets no key to
    sign an assertion with; with the PIN, the stand-in Entra issues the NGC PRT."""
    with open_provider("software") as provider:
        store = KeyStore(provider, tmp_path / "store")
        demo = JoinDemo(provider, store, [], io.StringIO(), PASSPHRASE)
        demo.run()
        assert demo._registration is not None
        for pin in (None, b"000000", PASSPHRASE):
            with pytest.raises(WrongPassphrase):
                store.load("ngc", passphrase=PASSPHRASE, pin=pin)
        ngc = store.load("ngc", passphrase=PASSPHRASE, pin=PIN)
        nonce = protocol.parse_nonce(demo.entra.handle(protocol.nonce_request()))
        assertion = protocol.ngc_assertion(ngc, upn="demo@contoso.example", nonce=nonce)
        request = protocol.prt_request(
            store.load("device", passphrase=PASSPHRASE), demo._registration.certificate,
            nonce=nonce, username="demo@contoso.example", assertion=assertion,
        )  # fmt: skip
        reply = protocol.parse_prt_response(
            demo.entra.handle(request), store.load("transport", passphrase=PASSPHRASE),
            store, "prt", replace=True, passphrase=PASSPHRASE,
        )  # fmt: skip
        assert reply.refresh_token in demo.entra.prts


# -- key files of earlier releases: PKCS#8 under the passphrase, else the PIN -------------------


def _old_pin_key(store: KeyStore, name: str, password: bytes) -> rsa.RSAPrivateKey:
    """A PIN key file as earlier releases wrote it: PKCS#8 (PBKDF2) under ``passphrase or pin``,
    with the header that says it has a PIN."""
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    header = b"Entra-Keys-Type: rsa2048\nEntra-Keys-Usage: sign\nEntra-Keys-PIN: yes\n"
    store.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = store.path / f"{name}.pem"
    path.write_bytes(header + pem)
    path.chmod(0o600)
    return key


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_old_pin_only_key_file_migrates_with_its_pin(store: KeyStore) -> None:
    """Written under the PIN alone (no store passphrase): it opens with the PIN, once, and is
    written anew under the PIN with scrypt; a wrong or missing PIN never opens it."""
    old = _old_pin_key(store, "ngc", PIN)
    path = store.path / "ngc.pem"
    before = _sha(path)
    for pin in (None, b"000000"):
        with pytest.raises(WrongPassphrase):
            store.load("ngc", pin=pin)
    assert _sha(path) == before  # refused loads change nothing
    key = store.load("ngc", pin=PIN)
    assert key.public_key() == old.public_key()
    assert _sha(path) != before and "scrypt" in _objects(_asn1(path))
    with pytest.raises(WrongPassphrase):
        store.load("ngc", pin=b"000000")
    again = store.load("ngc", pin=PIN)
    assert isinstance(again, rsa.RSAPrivateKey)
    again.public_key().verify(
        again.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()),
        MESSAGE,
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_an_old_pin_key_file_under_the_passphrase_alone_is_refused(store: KeyStore) -> None:
    """Written under the store passphrase alone, its PIN was never part of it: no PIN can be
    checked, so it is refused with the way out (create it again), and left as it was."""
    _old_pin_key(store, "ngc", PASSPHRASE)
    path = store.path / "ngc.pem"
    before = _sha(path)
    for pin in (PIN, b"000000"):
        with pytest.raises(KeyFileCorrupt, match=r"passphrase alone.*Create the key again"):
            store.load("ngc", passphrase=PASSPHRASE, pin=pin)
    with pytest.raises(WrongPassphrase, match="has a PIN"):
        store.load("ngc", passphrase=PASSPHRASE)
    assert _sha(path) == before
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE, pin=PIN,
                 replace=True)  # fmt: skip
    key = store.load("ngc", passphrase=PASSPHRASE, pin=PIN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize(
    ("edit", "why"),
    [(b"\x02\x03\x00\x80\xd5", "N=32981, not a power of two"), (b"\x02\x01\x7f", "r=127: 508 MiB")],
    ids=["damaged-N", "too-much-memory"],
)
def test_refused_scrypt_parameters_never_run(store: KeyStore, edit: bytes, why: str) -> None:
    """A PIN key file whose scrypt parameters are damaged or ask for too much: KeyFileCorrupt
    before scrypt runs. The refusal was swallowed as "PIN-protected" and the file handed to
    OpenSSL anyway: an untyped InternalError, or seconds of CPU and then the key."""
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE, pin=PIN)
    path = store.path / "ngc.pem"
    text = path.read_bytes()
    begin = text.index(b"-----BEGIN ")
    body = b"".join(text[begin:].split(b"\n")[1:-2])
    der = base64.b64decode(body)
    n, r = b"\x02\x03\x00\x80\x00", b"\x02\x01\x08"  # N = 2**15, r = 8, as written
    assert der.count(n + r) == 1, why
    der = der.replace(n, edit) if edit.startswith(b"\x02\x03") else der.replace(n + r, n + edit)
    pem = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + base64.encodebytes(der)
    path.write_bytes(text[:begin] + pem + b"-----END ENCRYPTED PRIVATE KEY-----\n")
    started = time.perf_counter()
    with pytest.raises(KeyFileCorrupt, match="scrypt parameters"):
        store.load("ngc", passphrase=PASSPHRASE, pin=PIN)
    assert time.perf_counter() - started < 0.05


def test_a_key_file_under_the_passphrase_alone_is_under_scrypt_too(store: KeyStore) -> None:
    """The store passphrase also protects the session key and sealed secrets under scrypt, but
    key files were PKCS#8's best available encryption (PBKDF2, 2048 rounds: 0.5 ms a guess), so
    guessing against device.pem was some 300 times cheaper and the passphrase found there opened
    the rest. A key file under the passphrase is PBES2 with scrypt too, at the same CPU a guess,
    which openssl opens with the passphrase alone; it is no PIN file."""
    made = store.create("device", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE)
    path = store.path / "device.pem"
    parsed = _asn1(path)
    assert _objects(parsed) == ["PBES2", "scrypt", "aes-256-cbc"], parsed
    integers = [int(v, 16) for v in re.findall(r"INTEGER\s+:([0-9A-F]+)", parsed)]
    assert integers[:3] == [2**14, 8, 2], parsed  # PIN files' CPU (2**15, 8, 1) in 16 MiB
    info = store.info("device")
    assert info.encrypted and not info.pin
    data = path.read_bytes()
    opened = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout", "-passin", "fd:0"],
        input=PASSPHRASE, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert serialization.load_pem_public_key(opened) == made.public_key()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"Incorrect password|Could not deserialize"):
        serialization.load_pem_private_key(data, b"a guess")  # what an attacker runs
    assert time.perf_counter() - started > 0.02  # scrypt, not PBKDF2-2048's 0.5 ms
    with pytest.raises(WrongPassphrase):
        store.load("device", passphrase=b"a guess")
    assert store.load("device", passphrase=PASSPHRASE).public_key() == made.public_key()


def test_a_key_file_of_an_earlier_release_under_the_passphrase_still_loads(
    store: KeyStore,
) -> None:
    """Files written under the passphrase with PKCS#8's best available encryption (PBKDF2)
    before key files moved to scrypt keep loading, and are no PIN files."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    store.create("seed", KeyType.ECC256, KeyUsage.SIGN)  # the store directory, as it is made
    path = store.path / "old.pem"
    path.write_bytes(b"Entra-Keys-Type: ecc256\nEntra-Keys-Usage: sign\n" + pem)
    path.chmod(0o600)
    assert not store.info("old").pin
    assert store.load("old", passphrase=PASSPHRASE).public_key() == key.public_key()
