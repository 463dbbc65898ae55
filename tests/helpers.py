"""Test helpers shared by the test modules (fixtures stay in conftest.py and
tests/contract/providers.py, which import these).

``transient_handles`` asks tpm2-tools (an independent tool, on its own connection) which
transient objects the TPM holds; ``cached_key`` makes each kind of key once per session;
``load_vectors`` reads a saved vector file; ``kbkdf`` is pyca's KDF, the independent check of
every derived key; ``assert_keys_encrypted`` checks a store's software keys are under a passphrase;
``open_pcap_provider`` opens a TPM provider whose commands tpm2-tss's pcap TCTI captures;
``sealed_fields``, ``reframe_sealed`` and ``flip_byte`` take a sealed blob apart to alter it;
``stranger_endorsement_key`` is an EK that no provider of the session holds.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from entra_keys import EndorsementKey, KeyStore, KeyType, KeyUsage, Provider, open_provider
from entra_keys.errors import AttestationCheckFailed, Check, TPMUnreachable, WrongPassphrase
from entra_keys.provider import EntraPrivateKey

__all__ = [
    "IN_CI",
    "VECTORS_DIR",
    "assert_keys_encrypted",
    "cached_key",
    "flip_byte",
    "join_keys",
    "kbkdf",
    "load_vectors",
    "open_pcap_provider",
    "raises_check",
    "reframe_sealed",
    "sealed_fields",
    "stranger_endorsement_key",
    "transient_handles",
    "unavailable",
]

IN_CI = os.environ.get("CI", "").lower() == "true"
VECTORS_DIR = Path(__file__).parent / "vectors"
#: The SP 800-108 label of Entra derived keys, written here independently of the library.
_ENTRA_KDF_LABEL = b"AzureAD-SecureConversation"


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere: a TPM test never passes silently without a TPM."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def open_pcap_provider(tcti: str, capture: Path, monkeypatch: pytest.MonkeyPatch) -> Provider:
    """A TPM provider on ``tcti`` whose every command tpm2-tss's pcap TCTI writes to ``capture``
    (it reads TCTI_PCAP_FILE when opened); unavailable, with what was found of the pcap TCTI,
    where it cannot run."""
    monkeypatch.setenv("TCTI_PCAP_FILE", str(capture))
    try:
        provider = open_provider("tpm", tcti=f"pcap:{tcti}")
    except TPMUnreachable as exc:
        writable = os.access(capture.parent, os.W_OK)
        _pcap_unavailable(
            f"opening pcap:{tcti} failed: {exc}; TCTI_PCAP_FILE={str(capture)!r} "
            f"({'in a writable' if writable else 'NOT in a writable'} directory)"
        )
        raise
    if not capture.exists():
        provider.close()
        _pcap_unavailable(f"pcap:{tcti} opened but wrote no capture to {capture}")
    return provider


def _pcap_unavailable(reason: str) -> None:
    """``unavailable``, with what ldconfig knows of libtss2-tcti-pcap."""
    found = ""
    if shutil.which("ldconfig"):
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False
        ).stdout
        found = "; ".join(line.strip() for line in listing.splitlines() if "tcti-pcap" in line)
    unavailable(f"the pcap TCTI cannot run: {reason} (ldconfig: {found or 'no libtss2-tcti-pcap'})")


def transient_handles(tcti: str) -> list[str]:
    """The transient objects in the TPM, as tpm2-tools sees them on its own connection."""
    if shutil.which("tpm2_getcap") is None:
        unavailable("tpm2-tools is not installed")
    out = subprocess.run(
        ["tpm2_getcap", "handles-transient"],
        env={**os.environ, "TPM2TOOLS_TCTI": tcti},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.strip("- ").strip() for line in out.splitlines() if line.strip()]


_KEY_CACHE: dict[tuple[str, str, KeyType, KeyUsage], bytes] = {}


def cached_key(provider: Provider, key_type: KeyType, usage: KeyUsage) -> EntraPrivateKey:
    """A key of that type and use, created once per session and provider and reloaded after."""
    tcti = getattr(provider, "tcti", None) or ""
    slot = (provider.kind, tcti, key_type, usage)
    if slot not in _KEY_CACHE:
        _KEY_CACHE[slot] = provider.key_to_pem(provider.create_key(key_type, usage))
    return provider.key_from_pem(_KEY_CACHE[slot], usage)


@functools.cache
def stranger_endorsement_key() -> EndorsementKey:
    """An EK no provider of the session holds (a fresh software provider's), made once."""
    return open_provider("software").endorsement_keys()[0]


def join_keys(store: KeyStore) -> None:
    """The keys of a join in the store: device, transport, AK and the PRT session key ("prt",
    imported under the transport key); the caller writes the join state it needs."""
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST)
    assert isinstance(transport, rsa.RSAPrivateKey)
    sha1 = hashes.SHA1()
    oaep = padding.OAEP(padding.MGF1(sha1), sha1, None)
    encrypted = transport.public_key().encrypt(os.urandom(32), oaep)
    store.save_session_key("prt", store.provider.import_session_key(transport, encrypted))


def load_vectors(name: str) -> dict[str, Any]:
    """A saved vector file of tests/vectors/, by file name."""
    data: dict[str, Any] = json.loads((VECTORS_DIR / name).read_text())
    return data


def kbkdf(key: bytes, context: bytes) -> bytes:
    """pyca's SP 800-108 counter-mode KDF with the Entra label: the independent check of every
    derived key (REFERENCE section 1)."""
    return KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=32,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=_ENTRA_KDF_LABEL,
        context=context,
        fixed=None,
    ).derive(key)


@contextlib.contextmanager
def raises_check(
    check: Check, match: str | None = None
) -> Iterator[pytest.ExceptionInfo[AttestationCheckFailed]]:
    """``pytest.raises(AttestationCheckFailed, match=...)`` that also asserts which check."""
    with pytest.raises(AttestationCheckFailed, match=match) as info:
        yield info
    assert info.value.check is check, f"check {info.value.check!r}, not {check!r}"


def assert_keys_encrypted(
    store: KeyStore, passphrase: bytes, pins: dict[str, bytes] | None = None
) -> list[str]:
    """Every key file of a software store is under ``passphrase``: its PEM says ENCRYPTED, pyca
    cannot load it without one, openssl cannot with another, and it loads back with it but not
    without (WrongPassphrase). A key of ``pins`` is under its PIN and the passphrase together:
    it loads with both, never with the passphrase alone or a wrong PIN. The names checked."""
    names = sorted(path.stem for path in store.path.glob("*.pem"))
    for name in names:
        data = (store.path / f"{name}.pem").read_bytes()
        labels = {line for line in data.splitlines() if line.startswith(b"-----BEGIN ")}
        assert len(labels) == 1 and b"ENCRYPTED" in next(iter(labels)), f"{name}: {labels}"
        with pytest.raises((TypeError, ValueError)):  # pyca: "private key is encrypted"
            serialization.load_pem_private_key(data, None)
        assert store.info(name).encrypted, name
        if pins and name in pins:
            assert store.info(name).pin, name
            assert store.load(name, passphrase=passphrase, pin=pins[name]).public_key()
            for wrong in ({}, {"pin": pins[name] + b"0"}, {"pin": passphrase}):
                with pytest.raises(WrongPassphrase):
                    store.load(name, passphrase=passphrase, **wrong)
            with pytest.raises(WrongPassphrase):
                store.load(name, passphrase=pins[name], pin=passphrase)
            for password in (passphrase, pins[name]):  # neither alone opens the PKCS#8
                with pytest.raises(ValueError, match=r"Incorrect password|Could not deserialize"):
                    serialization.load_pem_private_key(data, password)
            continue
        if store.info(name).usage is KeyUsage.DERIVE:
            assert store.load_session_key(name, passphrase=passphrase).hmac_sha256(b"x")
            with pytest.raises(WrongPassphrase):
                store.load_session_key(name)
            continue
        key = store.load(name, passphrase=passphrase)
        with pytest.raises(WrongPassphrase):
            store.load(name)
        with pytest.raises(WrongPassphrase):
            store.load(name, passphrase=passphrase + b"-wrong")
        # openssl, independently: the PKCS#8 opens with the passphrase only (it skips the
        # header lines before the PEM block), to the same public key.
        pkey = ["openssl", "pkey", "-in", str(store.path / f"{name}.pem"), "-pubout"]
        wrong = subprocess.run([*pkey, "-passin", "pass:not-it"], capture_output=True, check=False)
        assert wrong.returncode != 0, name
        opened = subprocess.run(
            [*pkey, "-passin", "fd:0"], input=passphrase, capture_output=True, check=True
        )
        assert serialization.load_pem_public_key(opened.stdout) == key.public_key(), name
    return names


def sealed_fields(blob: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The framed fields of a sealed blob, with its BEGIN and END lines, to alter one field."""
    lines = blob.splitlines(keepends=True)
    body = base64.b64decode(b"".join(lines[1:-1]))
    fields, offset = [], 0
    while offset < len(body):
        (size,) = struct.unpack_from(">I", body, offset)
        fields.append(body[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return fields, lines[0], lines[-1]


def reframe_sealed(fields: list[bytes], begin: bytes, end: bytes, *, cut: int = 0) -> bytes:
    """The sealed blob of these fields, its last ``cut`` bytes cut off (a truncated write)."""
    body = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return begin + base64.encodebytes(body[: len(body) - cut]) + end


def flip_byte(data: bytes, at: int) -> bytes:
    """``data`` with the low bit of byte ``at`` flipped."""
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
