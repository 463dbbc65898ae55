"""Sealed secrets over both providers: round trips, nothing in the clear on disk or on the TPM
wire, another TPM, a wrong PIN counting down in the TPM, PCR policies, altered blobs, the CLI.

Tests that spend dictionary-attack tries or extend PCRs run on their own swtpm (``own_tpm``),
never on the session's.
"""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entra_keys import (
    ForeignKey,
    InvalidData,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStore,
    KeyStoreError,
    PCRMismatch,
    Provider,
    TPMAuthFailure,
    TPMLockout,
    UnsupportedAlgorithm,
    WrongPassphrase,
    open_provider,
)
from entra_keys.store import sealed
from entra_keys.testing.swtpm import Swtpm, swtpm_available

from .helpers import open_pcap_provider, transient_handles, unavailable

SMALL = b"a refresh token's secret part \x00\xff"
LARGE = os.urandom(6000)  # a PRT and its refresh tokens: several KB
PIN = b"246810"
#: A resettable PCR (debug, locality 0) that the PCR tests extend on their own swtpm.
PCR = 16


def _pin_for(provider: Provider) -> bytes | None:
    """Software seals only under a passphrase; the TPM seals with or without a PIN."""
    return PIN if provider.kind == "software" else None


@pytest.fixture(scope="module")
def own_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A swtpm of this module's own: its DA counter and PCRs are the tests' to spend."""
    if not swtpm_available():
        unavailable("swtpm is not installed")
    tpm = Swtpm(tmp_path_factory.mktemp("seal-tpm"))
    tpm.start()
    yield tpm
    try:
        assert transient_handles(tpm.tcti) == []
    finally:
        tpm.stop()


@pytest.fixture
def own_provider(own_tpm: Swtpm) -> Iterator[Provider]:
    with open_provider("tpm", tcti=own_tpm.tcti) as provider:
        yield provider


def _fields(blob: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The framed fields of a blob, with its BEGIN and END lines, to alter one field."""
    lines = blob.splitlines(keepends=True)
    body = base64.b64decode(b"".join(lines[1:-1]))
    fields, offset = [], 0
    while offset < len(body):
        (size,) = struct.unpack_from(">I", body, offset)
        fields.append(body[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return fields, lines[0], lines[-1]


def _reframe(fields: list[bytes], begin: bytes, end: bytes, *, cut: int = 0) -> bytes:
    """The blob of these fields, its last ``cut`` bytes cut off (a truncated write)."""
    body = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return begin + base64.encodebytes(body[: len(body) - cut]) + end


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- round trips and the store ----------------------------------------------------------------


@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_a_sealed_secret_unseals_to_the_same_bytes(store: KeyStore, secret: bytes) -> None:
    pin = _pin_for(store.provider)
    sealed.seal(store, "prt", secret, pin=pin)
    assert sealed.unseal(store, "prt", pin=pin) == secret
    assert sealed.names(store) == ["prt"]
    path = store.path / "prt.sealed"
    assert path.stat().st_mode & 0o777 == 0o600
    kind = store.provider.kind.upper()
    assert path.read_bytes().startswith(f"-----BEGIN ENTRA KEYS SEALED {kind} DATA-----".encode())


@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_a_tpm_secret_with_a_pin_unseals_only_with_it(
    tpm_provider: Provider, secret: bytes
) -> None:
    blob = tpm_provider.seal(secret, pin=PIN)
    assert tpm_provider.unseal(blob, pin=PIN) == secret
    with pytest.raises(WrongPassphrase, match="PIN"):
        tpm_provider.unseal(blob)


def test_the_secret_is_in_no_file_of_the_store(store: KeyStore) -> None:
    pin = _pin_for(store.provider)
    store.create("device", *_device())
    sealed.seal(store, "small", SMALL, pin=pin)
    sealed.seal(store, "large", LARGE, pin=pin)
    files = [p for p in store.path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"small.sealed", "large.sealed", "device.pem"}
    for path in files:
        data = path.read_bytes()
        for secret in (SMALL, LARGE[:64], LARGE[-64:], PIN):
            assert secret not in data, path
            assert base64.b64encode(secret) not in data, path


def test_the_store_keeps_replaces_and_deletes_sealed_secrets(store: KeyStore) -> None:
    pin = _pin_for(store.provider)
    sealed.seal(store, "a", b"one", pin=pin)
    with pytest.raises(KeyExists, match="'a'"):
        sealed.seal(store, "a", b"two", pin=pin)
    sealed.seal(store, "a", b"two", pin=pin, replace=True)
    assert sealed.unseal(store, "a", pin=pin) == b"two"
    sealed.seal(store, "b", b"three", pin=pin)
    with pytest.raises(KeyStoreError, match="invalid key name"):
        sealed.seal(store, "../escape", b"x", pin=pin)
    assert sealed.names(store) == ["a", "b"]
    assert store.list() == []  # sealed secrets are not keys
    sealed.delete(store, "a")
    assert sealed.names(store) == ["b"]
    with pytest.raises(KeyNotFound):
        sealed.unseal(store, "a", pin=pin)
    with pytest.raises(KeyNotFound):
        sealed.delete(store, "a")
    assert not [p for p in store.path.iterdir() if p.name.startswith(".tmp-")]


def test_nothing_or_too_much_is_not_sealed(provider: Provider) -> None:
    pin = _pin_for(provider)
    for data in (b"", os.urandom(sealed.MAX_SECRET + 1)):
        with pytest.raises(InvalidData):
            provider.seal(data, pin=pin)


def test_software_refuses_to_seal_in_the_clear_or_to_pcrs() -> None:
    provider = open_provider("software")
    with pytest.raises(WrongPassphrase, match="in the clear"):
        provider.seal(SMALL)
    with pytest.raises(UnsupportedAlgorithm, match="no PCRs"):
        provider.seal(SMALL, pin=PIN, pcrs=[0, 7])
    blob = provider.seal(SMALL, pin=PIN)
    with pytest.raises(WrongPassphrase):
        provider.unseal(blob, pin=b"wrong")
    with pytest.raises(WrongPassphrase):
        provider.unseal(blob)


# -- altered and foreign blobs ---------------------------------------------------------------


def test_an_altered_blob_fails_typed(provider: Provider) -> None:
    pin = _pin_for(provider)
    for secret in (SMALL, LARGE):
        blob = provider.seal(secret, pin=pin)
        fields, begin, end = _fields(blob)
        for index in range(1, len(fields)):
            if not fields[index]:
                continue
            changed = list(fields)
            changed[index] = _flip(changed[index], len(changed[index]) // 2)
            with pytest.raises((KeyFileCorrupt, ForeignKey, WrongPassphrase, PCRMismatch)):
                provider.unseal(_reframe(changed, begin, end), pin=pin)
        with pytest.raises(KeyFileCorrupt, match="truncated"):
            provider.unseal(_reframe(fields, begin, end, cut=10), pin=pin)
    with pytest.raises(KeyFileCorrupt):
        provider.unseal(b"not a blob", pin=pin)


def test_a_blob_of_the_other_provider_is_refused(tpm_provider: Provider) -> None:
    software = open_provider("software")
    with pytest.raises(KeyFileCorrupt, match="software provider"):
        tpm_provider.unseal(software.seal(SMALL, pin=PIN))
    with pytest.raises(KeyFileCorrupt, match="tpm provider"):
        software.unseal(tpm_provider.seal(SMALL), pin=PIN)


def test_a_tpm_object_altered_in_the_blob_does_not_load(tpm_provider: Provider) -> None:
    fields, begin, end = _fields(tpm_provider.seal(SMALL))
    fields[5] = _flip(fields[5], len(fields[5]) - 3)  # the private blob's encrypted part
    with pytest.raises(ForeignKey, match="altered"):
        tpm_provider.unseal(_reframe(fields, begin, end))


@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_another_tpm_cannot_unseal(
    tpm_provider: Provider, own_provider: Provider, secret: bytes
) -> None:
    blob = tpm_provider.seal(secret, pin=PIN)
    with pytest.raises(ForeignKey, match="another TPM"):
        own_provider.unseal(blob, pin=PIN)
    assert tpm_provider.unseal(blob, pin=PIN) == secret


# -- the PIN's dictionary-attack counter, in the TPM -----------------------------------------


def _da_parameters(provider: Any, max_tries: int) -> None:
    """Reset the lockout and set a sane policy on the test's own swtpm (empty lockout auth)."""
    conn = provider.connection
    t = conn.tss
    with conn.command("reset the dictionary-attack state") as esys:
        esys.dictionary_attack_lock_reset(t.ESYS_TR.LOCKOUT)
        esys.dictionary_attack_parameters(max_tries, 1000, 1000, t.ESYS_TR.LOCKOUT)


def test_a_wrong_pin_counts_down_in_the_tpm(own_provider: Provider, own_tpm: Swtpm) -> None:
    _da_parameters(own_provider, 4)
    try:
        blob = own_provider.seal(SMALL, pin=PIN)
        left = []
        for _ in range(4):
            with pytest.raises(TPMAuthFailure) as caught:
                own_provider.unseal(blob, pin=b"1111")
            left.append(caught.value.tries_left)
            assert f"{caught.value.tries_left} tries left" in str(caught.value)
        assert left == [3, 2, 1, 0]
        with pytest.raises(TPMLockout):
            own_provider.unseal(blob, pin=PIN)  # even the right PIN, once locked out
        # A provider opened again (a daemon restart) finds the TPM's counter, not a fresh one.
        with open_provider("tpm", tcti=own_tpm.tcti) as again, pytest.raises(TPMLockout):
            again.unseal(blob, pin=b"1111")
    finally:
        _da_parameters(own_provider, 32)
    assert own_provider.unseal(blob, pin=PIN) == SMALL


# -- PCR policies ----------------------------------------------------------------------------


def _extend(provider: Any, pcr: int) -> None:
    conn = provider.connection
    t = conn.tss
    digest = t.TPMT_HA(hashAlg=t.TPM2_ALG.SHA256, digest=t.TPMU_HA(sha256=os.urandom(32)))
    with conn.command("extend a PCR") as esys:
        esys.pcr_extend(getattr(t.ESYS_TR, f"PCR{pcr}"), t.TPML_DIGEST_VALUES([digest]))


def _reset(provider: Any, pcr: int) -> None:
    conn = provider.connection
    with conn.command("reset a PCR") as esys:
        esys.pcr_reset(getattr(conn.tss.ESYS_TR, f"PCR{pcr}"))


@pytest.mark.parametrize("pin", [None, PIN], ids=["pcr", "pcr-and-pin"])
@pytest.mark.parametrize("secret", [SMALL, LARGE], ids=["small", "several-KB"])
def test_a_pcr_bound_secret_unseals_only_while_the_pcr_holds(
    own_provider: Provider, pin: bytes | None, secret: bytes
) -> None:
    _reset(own_provider, PCR)
    blob = own_provider.seal(secret, pin=pin, pcrs=[PCR, 0])
    assert own_provider.unseal(blob, pin=pin) == secret
    if pin:
        _da_parameters(own_provider, 32)
        with pytest.raises(TPMAuthFailure):
            own_provider.unseal(blob, pin=b"wrong")
    _extend(own_provider, PCR)
    with pytest.raises(PCRMismatch, match=f"sha256:0,{PCR}"):
        own_provider.unseal(blob, pin=pin)
    _reset(own_provider, PCR)  # back to the sealed state: the policy holds again
    assert own_provider.unseal(blob, pin=pin) == secret


def test_bad_pcr_lists_are_refused(tpm_provider: Provider) -> None:
    for pcrs in ([], [24], [7, 7]):
        with pytest.raises(InvalidData):
            tpm_provider.seal(SMALL, pcrs=pcrs)


# -- the TPM wire (pcap TCTI) ----------------------------------------------------------------


def test_the_secret_never_crosses_the_tpm_interface_in_the_clear(
    swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = tmp_path / "seal.pcap"
    control = os.urandom(48)
    with open_pcap_provider(swtpm.tcti, capture, monkeypatch) as provider:
        for secret in (SMALL, LARGE):
            for pin in (None, PIN):
                assert provider.unseal(provider.seal(secret, pin=pin), pin=pin) == secret
        # The control: the same kind of object created without parameter encryption shows
        # its secret in the capture, so the check above can fail.
        conn: Any = provider.connection  # type: ignore[attr-defined]
        t = conn.tss
        sensitive = t.TPM2B_SENSITIVE_CREATE(
            sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(control))
        )
        public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
        public.objectAttributes = t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT
        public.objectAttributes |= t.TPMA_OBJECT.USERWITHAUTH | t.TPMA_OBJECT.NODA
        public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.NULL
        with conn.command("create in the clear") as esys:
            esys.create(conn.storage_key, sensitive, t.TPM2B_PUBLIC(publicArea=public))
    traffic = capture.read_bytes()
    assert control in traffic
    for secret in (SMALL, LARGE[:64], PIN):
        assert secret not in traffic
    assert transient_handles(swtpm.tcti) == []


# -- the command line ------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("kind", ["software", "tpm"])
def test_cli_seal_and_unseal_round_trip(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clean_cli_environment: None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_KEYS_")}
    options = ["--provider", kind, "--store", str(tmp_path / "store")]
    if kind == "tpm":
        swtpm: Swtpm = request.getfixturevalue("swtpm")
        options += ["--tcti", swtpm.tcti]
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(LARGE)
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(PIN + b"\n")
    pin_file.chmod(0o600)
    pin = ["--pin-file", str(pin_file)]
    done = _cli(*options, "seal", "prt", "--in", str(secret_file), *pin, env=env)
    assert done.returncode == 0, done.stderr
    done = _cli(*options, "unseal", "prt", *pin, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == LARGE
    done = _cli(*options, "seal", "prt", "--in", "-", *pin, env=env, stdin=SMALL)
    assert done.returncode == 1
    assert done.stderr.startswith(b"entra-keys: error: ") and b"already exists" in done.stderr
    done = _cli(*options, "seal", "prt", "--in", "-", "--replace", *pin, env=env, stdin=SMALL)
    assert done.returncode == 0, done.stderr
    assert _cli(*options, "unseal", "prt", *pin, env=env).stdout == SMALL
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"0000\n")
    wrong.chmod(0o600)
    if kind == "software":  # a TPM's wrong PIN spends a try of the session swtpm: not here
        done = _cli(*options, "unseal", "prt", "--pin-file", str(wrong), env=env)
        assert done.returncode == 1
        assert done.stderr.count(b"\n") == 1 and b"passphrase is wrong" in done.stderr
    done = _cli(*options, "unseal", "nothing", *pin, env=env)
    assert done.returncode == 1 and b"no sealed secret 'nothing'" in done.stderr
    for path in (tmp_path / "store").iterdir():
        assert SMALL not in path.read_bytes()
    if kind == "tpm":
        assert transient_handles(request.getfixturevalue("swtpm").tcti) == []


def test_cli_refuses_pcrs_on_software(tmp_path: Path, clean_cli_environment: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_KEYS_")}
    env["ENTRA_KEYS_PASSPHRASE"] = "a passphrase"
    options = ["--provider", "software", "--store", str(tmp_path / "store")]
    done = _cli(*options, "seal", "x", "--in", "-", "--pcrs", "0,7", env=env, stdin=SMALL)
    assert done.returncode == 1 and b"no PCRs" in done.stderr
    done = _cli(*options, "seal", "x", "--in", "-", "--pcrs", "zero", env=env, stdin=SMALL)
    assert done.returncode == 2


def _device() -> tuple[Any, Any]:
    from entra_keys import KeyType, KeyUsage

    return KeyType.RSA2048, KeyUsage.SIGN
