"""Sealed secrets where the providers differ by nature: software refuses to seal in the clear or
to PCRs; a TPM's blob altered inside, another TPM, a wrong PIN counting down in the TPM, PCR
policies, nothing in the clear on the TPM wire; and the CLI. What every provider does alike is in
tests/contract/test_sealing.py.

Tests that spend dictionary-attack tries or extend PCRs run on their own swtpm (``own_tpm``),
never on the session's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entra_keys import (
    ForeignKey,
    InvalidData,
    PCRMismatch,
    Provider,
    TPMAuthFailure,
    TPMLockout,
    UnsupportedAlgorithm,
    WrongPassphrase,
    open_provider,
)
from entra_keys.testing.swtpm import Swtpm, swtpm_available

from .contract.providers import option_kind
from .helpers import (
    flip_byte,
    open_pcap_provider,
    reframe_sealed,
    sealed_fields,
    transient_handles,
    unavailable,
)

SMALL = b"a refresh token's secret part \x00\xff"
LARGE = os.urandom(6000)  # a PRT and its refresh tokens: several KB
PIN = b"246810"
#: A resettable PCR (debug, locality 0) that the PCR tests extend on their own swtpm.
PCR = 16


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


# -- round trips and the store ----------------------------------------------------------------


def test_software_refuses_to_seal_in_the_clear_or_to_pcrs() -> None:
    provider = open_provider("software")
    with pytest.raises(WrongPassphrase, match="in the clear"):
        provider.seal(SMALL)
    with pytest.raises(UnsupportedAlgorithm, match="no PCRs"):
        provider.seal(SMALL, pin=PIN, pcrs=[0, 7])


# -- altered and foreign blobs ---------------------------------------------------------------


def test_a_tpm_object_altered_in_the_blob_does_not_load(tpm_provider: Provider) -> None:
    fields, begin, end = sealed_fields(tpm_provider.seal(SMALL))
    fields[5] = flip_byte(fields[5], len(fields[5]) - 3)  # the private blob's encrypted part
    with pytest.raises(ForeignKey, match="altered"):
        tpm_provider.unseal(reframe_sealed(fields, begin, end))


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


def test_cli_seal_and_unseal_round_trip(
    provider_options: list[str], tmp_path: Path, clean_cli_environment: None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_KEYS_")}
    options = [*provider_options, "--store", str(tmp_path / "store")]
    kind = option_kind(provider_options)
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


def test_cli_refuses_pcrs_on_software(tmp_path: Path, clean_cli_environment: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTRA_KEYS_")}
    env["ENTRA_KEYS_PASSPHRASE"] = "a passphrase"
    options = ["--provider", "software", "--store", str(tmp_path / "store")]
    done = _cli(*options, "seal", "x", "--in", "-", "--pcrs", "0,7", env=env, stdin=SMALL)
    assert done.returncode == 1 and b"no PCRs" in done.stderr
    done = _cli(*options, "seal", "x", "--in", "-", "--pcrs", "zero", env=env, stdin=SMALL)
    assert done.returncode == 2
