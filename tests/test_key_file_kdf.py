"""A software key file's encryption is read before pyca opens it: only the schemes and costs
entra_keys writes (PBES2, scrypt, AES-256-CBC) and reads from earlier releases (PBKDF2-HMAC-SHA256,
2048 rounds and a bound above) are handed on; the rest is KeyFileCorrupt before any KDF runs.

Software-only by nature: a TPM key file is a TSS2 PRIVATE KEY, with no KDF in it.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from asn1crypto import core
from asn1crypto import keys as akeys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from entra_keys import KeyStore, KeyType, KeyUsage
from entra_keys.errors import KeyFileCorrupt, WrongPassphrase
from entra_keys.providers import software
from entra_keys.providers.software import SoftwareProvider

PASSPHRASE = b"the store passphrase"
PIN = b"246810"
HEADER = b"Entra-Keys-Type: ecc256\nEntra-Keys-Usage: sign\n"
#: Far longer than a refusal takes on a loaded machine, far shorter than the work the refused
#: files name (minutes, or never); the message matched says which check refused them.
FAST = 0.5


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    made = KeyStore(SoftwareProvider(), tmp_path / "keys")
    made.create("seed", KeyType.ECC256, KeyUsage.SIGN)  # the store directory, as it is made
    return made


def _pem(der: bytes) -> bytes:
    return (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + base64.encodebytes(der)
        + b"-----END ENCRYPTED PRIVATE KEY-----\n"
    )


def _pbkdf2_file(
    rounds: int,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    prf: str | None = "sha256",
    cipher: str = "aes256_cbc",
) -> bytes:
    """PKCS#8 under PBES2 with PBKDF2: the key really encrypted under PASSPHRASE when given
    (and the rounds are few enough to run), else random bytes in its place."""
    salt, iv = os.urandom(16), os.urandom(16)
    data = os.urandom(64)
    if key is not None:
        plain = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(PASSPHRASE)
        padder = symmetric_padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
        data = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf: dict[str, object] = {"salt": core.OctetString(salt), "iteration_count": rounds}
    if prf is not None:
        kdf["prf"] = {"algorithm": prf}
    info = akeys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": {
                "algorithm": "pbes2",
                "parameters": {
                    "key_derivation_func": {"algorithm": "pbkdf2", "parameters": kdf},
                    "encryption_scheme": {"algorithm": cipher, "parameters": iv[:16]},
                },
            },
            "encrypted_data": data,
        }
    )
    return _pem(info.dump())


def _pkcs12_pbe_file(rounds: int) -> bytes:
    """PKCS#8 under PKCS#12's pbeWithSHAAnd3-KeyTripleDES-CBC, which pyca also reads."""
    info = akeys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": {
                "algorithm": "pkcs12_sha1_tripledes_3key",
                "parameters": {"salt": os.urandom(8), "iterations": rounds},
            },
            "encrypted_data": os.urandom(64),
        }
    )
    return _pem(info.dump())


def _refused(store: KeyStore, pem: bytes, match: str, *, fast: bool = True) -> None:
    """The file is KeyFileCorrupt at once, from the provider and from the store."""
    provider = SoftwareProvider()
    (store.path / "planted.pem").write_bytes(HEADER + pem)
    (store.path / "planted.pem").chmod(0o600)
    for load in (
        lambda: provider.key_from_pem(pem, KeyUsage.SIGN, PASSPHRASE),
        lambda: store.load("planted", passphrase=PASSPHRASE),
    ):
        started = time.perf_counter()
        with pytest.raises(KeyFileCorrupt, match=match):
            load()
        assert not fast or time.perf_counter() - started < FAST


@pytest.mark.parametrize("rounds", [2**31 - 1, 2**31, 2**32 - 1, 2**64 - 1, 10**6 + 1])
def test_pbkdf2_rounds_above_the_bound_are_refused_before_they_run(
    store: KeyStore, rounds: int
) -> None:
    """2**31 - 1 rounds held one load for minutes; 2**31 and more made pyca panic
    (pyo3's PanicException, a BaseException that passed every ``except Exception``)."""
    _refused(store, _pbkdf2_file(rounds), r"PBKDF2 rounds \(\d+\) are refused")


@pytest.mark.parametrize("rounds", [1, 2047])
def test_pbkdf2_rounds_below_what_was_written_are_refused(store: KeyStore, rounds: int) -> None:
    """Earlier releases wrote 2048 rounds: a file with fewer is no file of theirs, and a guess
    at its passphrase would cost next to nothing."""
    _refused(store, _pbkdf2_file(rounds), r"PBKDF2 rounds \(\d+\) are refused")


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        (_pkcs12_pbe_file(2**63), "not PBES2"),  # never returned
        (_pkcs12_pbe_file(2048), "not PBES2"),
        (_pbkdf2_file(2048, prf=None), "HMAC-SHA1"),
        (_pbkdf2_file(2048, prf="sha512"), "PBKDF2 uses"),
        (_pbkdf2_file(2048, cipher="aes128_cbc"), "not AES-256-CBC"),
        (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "not a PKCS#8 encrypted key",
        ),
    ],
    ids=["pkcs12-2**63", "pkcs12", "pbkdf2-sha1", "pbkdf2-sha512", "aes128", "empty"],
)
def test_other_encryption_schemes_are_refused(store: KeyStore, pem: bytes, match: str) -> None:
    """entra_keys never wrote them: refused by name, before pyca runs their KDF."""
    _refused(store, pem, match)


def test_traditional_pem_encryption_and_a_second_block_are_refused(store: KeyStore) -> None:
    """OpenSSL's traditional encryption (Proc-Type) is none entra_keys writes; a second PEM
    block would let pyca open another block than the one whose encryption was checked."""
    key = ec.generate_private_key(ec.SECP256R1())
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    assert serialization.load_pem_private_key(traditional, PASSPHRASE)  # pyca opens it
    _refused(store, traditional, "traditional PEM encryption|'EC PRIVATE KEY' is not a key file")
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _refused(store, plain + _pbkdf2_file(2**31), "one PEM block, not 2")
    _refused(store, b"-----BEGIN FOO-----\nAA==\n-----END FOO-----\n" + _pbkdf2_file(2**31),
             "one PEM block, not 2|'FOO' is not a key file")  # fmt: skip


def test_a_panic_in_pyca_is_key_file_corrupt(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a file pass the checks and pyca still panic, the panic is KeyFileCorrupt, not a
    BaseException: with the rounds' bound lifted, 2**31 rounds make pyca panic for real."""
    monkeypatch.setattr(software, "PBKDF2_ROUNDS", range(1, 2**65))
    _refused(store, _pbkdf2_file(2**31), "pyca panicked", fast=False)  # the panic's report


@pytest.mark.parametrize("rounds", [2048, 10**6])
def test_pbkdf2_files_of_earlier_releases_still_load(store: KeyStore, rounds: int) -> None:
    """What earlier releases wrote (2048 rounds) and the bound above it open with the
    passphrase, and a wrong one is WrongPassphrase."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = store.path / "old.pem"
    path.write_bytes(HEADER + _pbkdf2_file(rounds, key))
    path.chmod(0o600)
    assert store.load("old", passphrase=PASSPHRASE).public_key() == key.public_key()
    with pytest.raises(WrongPassphrase):
        store.load("old", passphrase=b"a guess")


def _written_at(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, cost: tuple[int, int, int], *, pin: bool
) -> Path:
    """A key file written as entra_keys writes it, but at scrypt ``cost`` (another writer's)."""
    with monkeypatch.context() as patched:
        patched.setattr(software, "PIN_SCRYPT" if pin else "PASSPHRASE_SCRYPT", cost)
        store.create(
            "weak", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE, pin=PIN if pin else None
        )
    return store.path / "weak.pem"


@pytest.mark.parametrize(
    ("cost", "pin"),
    [
        ((2, 1, 1), True),
        ((2**14, 8, 2), True),  # the passphrase files' cost: half the PIN files' memory
        ((2**13, 8, 2), False),
        ((2**15, 1, 8), False),  # the CPU, an eighth of the memory
    ],
    ids=["pin-N=2", "pin-16MiB", "passphrase-N=2**13", "passphrase-r=1"],
)
def test_scrypt_below_what_entra_keys_writes_is_refused(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, cost: tuple[int, int, int], pin: bool
) -> None:
    """A PIN file at N=2 took 0.36 ms a guess (all six-digit PINs in minutes) and was loaded
    and kept as it was: a file weaker than PIN_SCRYPT (PIN) or PASSPHRASE_SCRYPT is refused,
    and left as it is."""
    path = _written_at(store, monkeypatch, cost, pin=pin)
    before = path.read_bytes()
    started = time.perf_counter()
    with pytest.raises(KeyFileCorrupt, match=r"scrypt parameters .* weaker than"):
        store.load("weak", passphrase=PASSPHRASE, pin=PIN if pin else None)
    assert time.perf_counter() - started < FAST
    assert path.read_bytes() == before


@pytest.mark.parametrize("pin", [True, False], ids=["pin", "passphrase"])
def test_scrypt_at_or_above_what_entra_keys_writes_loads(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, pin: bool
) -> None:
    """The floor is what is written: files at it load, and so do costlier ones in the bound."""
    for cost in ((2**15, 8, 1), (2**16, 8, 1)) if pin else ((2**14, 8, 2), (2**15, 8, 1)):
        _written_at(store, monkeypatch, cost, pin=pin)
        key = store.load("weak", passphrase=PASSPHRASE, pin=PIN if pin else None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert store.info("weak").pin is pin
        store.delete("weak")


@pytest.mark.parametrize(
    ("salt", "nonce"), [(16, 0), (16, 7), (16, 13), (15, 12)], ids=["n0", "n7", "n13", "salt15"]
)
def test_a_session_key_file_with_a_damaged_salt_or_nonce_is_corrupt(
    store: KeyStore, salt: int, nonce: int
) -> None:
    """A nonce under 8 bytes was AESGCM's untyped ValueError, after a full scrypt run: every
    salt or nonce length but the written ones is KeyFileCorrupt, before scrypt runs."""
    der = software._der_octets(os.urandom(salt), os.urandom(nonce), os.urandom(48))
    pem = software._pem(software.PEM_LABEL_ENCRYPTED_SESSION_KEY, der)
    path = store.path / "prt.pem"
    path.write_bytes(b"Entra-Keys-Type: hmac-sha256\nEntra-Keys-Usage: derive\n" + pem)
    path.chmod(0o600)
    for load in (
        lambda: SoftwareProvider().session_key_from_pem(pem, PASSPHRASE),
        lambda: store.load_session_key("prt", passphrase=PASSPHRASE),
    ):
        started = time.perf_counter()
        with pytest.raises(KeyFileCorrupt, match="salt or nonce is damaged"):
            load()
        assert time.perf_counter() - started < FAST


def test_a_pin_key_whose_file_is_not_encrypted_is_refused(store: KeyStore) -> None:
    """The store records a PIN, the PKCS#8 is plain: it opened with any PIN and was written
    again still plain under the PIN header. It never held its PIN: KeyFileCorrupt for every
    PIN, and the file is left as it is."""
    store.create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=PIN)
    path = store.path / "ngc.pem"
    header = b"".join(
        line for line in path.read_bytes().splitlines(keepends=True) if line.startswith(b"Entra")
    )
    assert b"Entra-Keys-PIN: yes" in header
    plain = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(header + plain)
    assert store.info("ngc").pin
    for pin, passphrase in ((PIN, None), (b"000000", None), (b"anything", PASSPHRASE)):
        with pytest.raises(KeyFileCorrupt, match="not encrypted: its PIN was never part"):
            store.load("ngc", pin=pin, passphrase=passphrase)
    with pytest.raises(WrongPassphrase, match="has a PIN"):
        store.load("ngc")
    assert path.read_bytes() == header + plain
