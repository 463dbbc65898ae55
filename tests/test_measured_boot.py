"""Measured boot: the event log tied to a quote by the verifier, the boot policy, and the attacks.

The boot is ``entra_keys.testing.measured_boot``'s synthetic one (Secure Boot, shim, GRUB, Linux).
Quotes of its replayed values are made first by the software provider (which quotes any values
it is given, so every verifier path runs without a TPM), then end to end on a swtpm of the
module's own into whose PCRs the boot is extended. Each attack is performed, and each refusal is
checked for its ``Check``:

- the log disagrees with the quote (an event edited, reordered, dropped or added, a bank's digest
  missing from one event): EVENT_LOG where the caller has the quoted PCR values (they match the
  quote's digest, the log does not match them; the message names the PCR), PCR_DIGEST where the
  caller has none (the log's replay is then the expected values, and they do not hash to the
  quote's digest, as a caller's wrong values would not);
- the log agrees with the quote but lies in what no digest covers (data that is not what its
  digest measured, an event relabelled to another type): BOOT_POLICY, which fails closed.

The real quotes with logs (a Windows vTPM and a COS vTPM on GCE) are checked at the level of the
verifier's helpers: their nonces are empty, which verify_quote refuses (as it shows here).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_keys import HardwareUnavailable, InvalidData, KeyType, KeyUsage, open_provider
from entra_keys.attestation import (
    BootPolicy,
    QuoteResult,
    TrustPolicy,
    parse_event_log,
    verify_quote,
)
from entra_keys.attestation.measured import log_as_expected, tie_event_log
from entra_keys.errors import AttestationCheckFailed, Check, MalformedAttestation
from entra_keys.provider import EntraPrivateKey
from entra_keys.providers.software_attest import software_quote
from entra_keys.tcg import TPMSAttest, TPMTSignature
from entra_keys.tcg.eventlog import MAX_LOG_SIZE, BootFacts, read_event_log
from entra_keys.tcg.records import MAX_QUOTE_JSON, Quote, quote_from_json, quote_to_json
from entra_keys.tcg.structures import HASH_ALGORITHMS, TPMSQuoteInfo
from entra_keys.testing.measured_boot import (
    BANKS,
    EFI_CERT_X509,
    EFI_IMAGE_SECURITY_DATABASE,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_SEPARATOR,
    SHIM_LOCK,
    BootEvent,
    SyntheticBoot,
    event2,
    image_load_event,
    signature_list,
    spec_id_event,
    synthetic_boot,
    variable_data,
)
from entra_keys.testing.swtpm import Swtpm, SwtpmError, swtpm_available

from .helpers import transient_handles, unavailable

REALWORLD = Path(__file__).parent / "vectors" / "realworld"
NONCE = bytes(range(16))
#: The PCRs every quote here covers: the firmware's, the boot loader's, systemd's command line
#: PCR (a command-line policy reads it: never extended by GRUB, quoted at its start value) and
#: shim's MOK PCR.
QUOTED = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14]
SOFTWARE = TrustPolicy(allow_software=True)
BOOT = synthetic_boot()
OFF = synthetic_boot(secure_boot=False)
#: The same boot with ``init=/bin/sh`` on the kernel's command line (GRUB measures it twice:
#: its ``linux`` command, and the command line itself).
BOOT_FACTS = parse_event_log(BOOT.log()).facts(pcrs={"sha256": QUOTED})
EVIL = synthetic_boot(
    kernel_cmdline="root=UUID=0d5c4a3e-8f0b-4a4e-9d1b-7c2e5f6a9b3d ro quiet init=/bin/sh"
)


@pytest.fixture(scope="module")
def soft_ak() -> EntraPrivateKey:
    return open_provider("software").create_key(KeyType.RSA2048, KeyUsage.ATTEST)


def quote_of(ak: EntraPrivateKey, boot: SyntheticBoot, pcrs: Sequence[int] = QUOTED) -> Quote:
    """A software quote of the boot's replayed sha256 values."""
    values = boot.replay()["sha256"]
    return software_quote(ak, pcrs, NONCE, "sha256", pcr_values={p: values[p] for p in pcrs})


def verify(
    ak: EntraPrivateKey,
    quote: Quote,
    log: bytes,
    *,
    values: bool = True,
    boot_policy: BootPolicy | None = None,
) -> QuoteResult:
    expected = {quote.pcr_bank: quote.pcr_values} if values else {}
    return verify_quote(
        quote.attest, quote.signature, ak.tpm_public, NONCE, expected,
        policy=SOFTWARE, event_log=log, boot_policy=boot_policy,
    )  # fmt: skip


def write_log(
    events: Sequence[BootEvent],
    banks: Sequence[str] = BANKS,
    without: dict[int, set[str]] | None = None,
) -> bytes:
    """A log of these events; ``without`` leaves a bank's digest out of an event (by index)."""
    out = spec_id_event(banks)
    for index, event in enumerate(events):
        present = [b for b in banks if b not in (without or {}).get(index, set())]
        out += event2(
            event.pcr, event.event_type, [(b, event.digest(b)) for b in present], event.data
        )
    return out


def index_of(events: Sequence[BootEvent], test: Callable[[BootEvent], bool], nth: int = 0) -> int:
    return [i for i, e in enumerate(events) if test(e)][nth]


def signer(boot: SyntheticBoot, role: str) -> str:
    """A signer as a policy names it: its certificate's SHA-256 fingerprint."""
    return hashlib.sha256(boot.certificates[role]).hexdigest()


def full_policy(boot: SyntheticBoot) -> BootPolicy:
    """Everything this boot is, stated as a policy (the README's example is of this form)."""
    return BootPolicy(
        secure_boot=True,
        allowed_boot_loaders=[boot.authenticode("shim"), boot.authenticode("grub")],
        allowed_kernels=[boot.authenticode("kernel")],
        allowed_signers=[signer(boot, "db"), signer(boot, "shim")],
        allowed_kernel_cmdline_patterns=[r"/boot/vmlinuz-\S+ root=UUID=[0-9a-f-]+ ro quiet"],
        required_dbx=[boot.dbx[0].hex()],
        forbidden_db=["0" * 64],
        allowed_firmware_versions=[boot.firmware_version],
    )


# --- The log tied to a quote --------------------------------------------------------------------


def test_a_log_that_replays_to_the_quote_gives_the_boot_facts(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, BOOT)
    result = verify(soft_ak, quote, BOOT.log(), boot_policy=full_policy(BOOT))
    assert result.checks[-2:] == ("event-log", "boot-policy")
    assert result.event_log_events_after_quote == 0
    assert result.event_log is not None and len(result.event_log.events) == len(BOOT.events) + 1
    assert result.measured_boot is not None
    assert result.measured_boot.pcrs == {"sha256": tuple(QUOTED)}
    facts = result.boot_facts
    assert isinstance(facts, BootFacts)
    assert facts.secure_boot is True and facts.banks == ("sha256",)
    assert [a.digests["sha256"].hex() for a in facts.boot_applications] == [
        BOOT.authenticode(name) for name in ("shim", "grub", "kernel")
    ]
    assert facts.kernel_cmdline == BOOT.kernel_cmdline
    assert facts.firmware_version == BOOT.firmware_version
    assert [a.entry.subject for a in facts.authorities if a.entry] == [
        BOOT.subjects["db"],
        BOOT.subjects["shim"],
    ]
    assert facts.dbx is not None and [e.hash_hex for e in facts.dbx] == [h.hex() for h in BOOT.dbx]
    assert facts.data_mismatches == () and facts.exit_boot_services


def test_without_expected_values_the_logs_replay_is_them(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, BOOT)
    result = verify(soft_ak, quote, BOOT.log(), values=False)
    assert dict(result.pcr_values["sha256"]) == quote.pcr_values
    assert result.boot_facts is not None and result.boot_facts.secure_boot is True
    assert result.checks[-1] == "event-log"


def test_a_quote_without_values_or_a_log_is_refused(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, BOOT)
    with pytest.raises(InvalidData, match="no expected PCR values"):
        verify_quote(quote.attest, quote.signature, soft_ak.tpm_public, NONCE, {}, policy=SOFTWARE)


def test_events_logged_after_the_quote_are_counted_not_read(soft_ak: EntraPrivateKey) -> None:
    """A log read after the quote: IMA's PCR 10 (not quoted) and another boot application
    (PCR 4, quoted) came later. The quote covers the prefix that replays to it; the later
    application is not in the facts."""
    quote = quote_of(soft_ak, BOOT)
    ima = BootEvent(10, EV_IPL, b"boot_aggregate\0", b"boot_aggregate")
    late = BootEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, image_load_event(0, 10, b""), b"late")
    log = write_log([*BOOT.events, ima, late, ima])
    for values in (True, False):
        result = verify(soft_ak, quote, log, values=values)
        assert result.event_log_events_after_quote == 2  # the application and the IMA after it
        assert result.measured_boot.events_quoted == len(BOOT.events) + 2
        assert result.boot_facts is not None and len(result.boot_facts.boot_applications) == 3


def test_pcrs_the_log_never_extends_stay_the_callers(soft_ak: EntraPrivateKey) -> None:
    """With expected values, a quoted PCR the firmware log never extends (IMA's PCR 10, here at
    a value of its own) is left to them; without, the log must explain every quoted PCR."""
    values = BOOT.replay()["sha256"]
    values[10] = hashlib.sha256(b"ima").digest()
    pcrs = [*QUOTED, 10]
    quote = software_quote(soft_ak, pcrs, NONCE, "sha256", pcr_values={p: values[p] for p in pcrs})
    result = verify(soft_ak, quote, BOOT.log())
    assert 10 not in result.measured_boot.pcrs["sha256"]
    assert 10 not in result.boot_facts.pcrs
    with pytest.raises(AttestationCheckFailed) as caught:
        verify(soft_ak, quote, BOOT.log(), values=False)
    assert caught.value.check is Check.PCR_DIGEST


#: Each way a log can disagree with the quote, and the PCR the refusal must name.
TAMPERED: dict[str, tuple[Callable[[list[BootEvent]], dict[int, set[str]] | None], int]] = {}


def tampering(pcr: int) -> Callable[..., object]:
    def register(function: Callable[[list[BootEvent]], dict[int, set[str]] | None]) -> object:
        TAMPERED[function.__name__] = (function, pcr)
        return function

    return register


@tampering(8)
def edited(events: list[BootEvent]) -> None:
    """The kernel command line replaced, with a digest of the new one."""
    at = index_of(events, lambda e: e.data.startswith(b"kernel_cmdline: "))
    line = BOOT.kernel_cmdline + " init=/bin/sh"
    events[at] = BootEvent(8, EV_IPL, b"kernel_cmdline: " + line.encode() + b"\0", line.encode())


@tampering(8)
def reordered(events: list[BootEvent]) -> None:
    first = index_of(events, lambda e: e.pcr == 8)
    second = index_of(events, lambda e: e.pcr == 8, 1)
    events[first], events[second] = events[second], events[first]


@tampering(4)
def dropped(events: list[BootEvent]) -> None:
    del events[index_of(events, lambda e: e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION, 1)]


@tampering(4)
def added(events: list[BootEvent]) -> None:
    at = index_of(events, lambda e: e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION, 2)
    extra = image_load_event(0x7F000000, 4096, b"")
    events.insert(at, BootEvent(4, EV_EFI_BOOT_SERVICES_APPLICATION, extra, b"a rootkit"))


@tampering(7)
def bank_missing(events: list[BootEvent]) -> dict[int, set[str]]:
    """The dbx event without its sha256 digest: the sha256 replay lacks it."""
    return {index_of(events, lambda e: b"d\0b\0x\0" in e.data[:60]): {"sha256"}}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_tampered_log_is_refused_at_the_right_check(soft_ak: EntraPrivateKey, name: str) -> None:
    tamper, pcr = TAMPERED[name]
    events = list(BOOT.events)
    without = tamper(events)
    log = write_log(events, without=without)
    quote = quote_of(soft_ak, BOOT)
    with pytest.raises(AttestationCheckFailed) as caught:
        verify(soft_ak, quote, log)
    assert caught.value.check is Check.EVENT_LOG
    assert f"sha256 PCR {pcr} is " in str(caught.value)
    expected = quote.pcr_values[pcr].hex()
    assert f"{expected[:8]}…{expected[-8:]} in the quote" in str(caught.value)
    with pytest.raises(AttestationCheckFailed) as caught:
        verify(soft_ak, quote, log, values=False)
    assert caught.value.check is Check.PCR_DIGEST


def test_a_bank_missing_from_an_unquoted_bank_changes_nothing(soft_ak: EntraPrivateKey) -> None:
    """Only the quoted bank's digests are proved, and only they are read: an event without its
    SHA-1 digest (a bank the quote did not cover) verifies, its facts from sha256."""
    at = index_of(BOOT.events, lambda e: b"d\0b\0x\0" in e.data[:60])
    result = verify(
        soft_ak, quote_of(soft_ak, BOOT), write_log(BOOT.events, without={at: {"sha1"}})
    )
    assert result.boot_facts.dbx is not None


def test_a_log_without_the_quoted_bank_or_any_quoted_pcr_is_refused(
    soft_ak: EntraPrivateKey,
) -> None:
    quote = quote_of(soft_ak, BOOT)
    with pytest.raises(AttestationCheckFailed, match="no sha256 bank") as caught:
        verify(soft_ak, quote, BOOT.log(["sha1"]))
    assert caught.value.check is Check.EVENT_LOG
    quote = quote_of(soft_ak, BOOT, [10, 11])  # never extended: their start values
    with pytest.raises(AttestationCheckFailed, match="extends none of the quoted PCRs") as caught:
        verify(soft_ak, quote, BOOT.log())
    assert caught.value.check is Check.EVENT_LOG


def test_a_malformed_log_is_a_structure_failure(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, BOOT)
    with pytest.raises(MalformedAttestation, match=r"event log: event \d+ at offset \d+"):
        verify(soft_ak, quote, BOOT.log()[:-3])
    with pytest.raises(MalformedAttestation, match="not int"):
        verify(soft_ak, quote, 42)  # type: ignore[arg-type]


def test_a_log_buffer_changed_after_the_call_changes_nothing(soft_ak: EntraPrivateKey) -> None:
    """The log is copied when verify_quote takes it, as every input is."""
    quote = quote_of(soft_ak, BOOT)
    buffer = bytearray(BOOT.log())
    result = verify(soft_ak, quote, buffer)  # type: ignore[arg-type]
    buffer[:] = bytes(len(buffer))
    assert result.boot_facts.secure_boot is True
    assert verify(soft_ak, quote, memoryview(BOOT.log())).boot_facts.secure_boot is True  # type: ignore[arg-type]
    parsed = parse_event_log(BOOT.log())
    assert verify(soft_ak, quote, parsed).event_log is parsed  # type: ignore[arg-type]


# --- The boot policy ----------------------------------------------------------------------------


def test_every_requirement_of_the_policy_is_checked(soft_ak: EntraPrivateKey) -> None:
    """Each requirement, broken alone, is a BOOT_POLICY refusal naming the fact."""
    quote = quote_of(soft_ak, BOOT)
    good = full_policy(BOOT)
    broken = {
        "Secure Boot is on": dataclasses.replace(good, secure_boot=False),
        "is not an allowed boot loader or kernel": dataclasses.replace(
            good, allowed_boot_loaders=[BOOT.authenticode("shim")]
        ),
        "is not an allowed kernel": dataclasses.replace(good, allowed_kernels=["ab" * 32]),
        "not an allowed signer": dataclasses.replace(good, allowed_signers=[signer(BOOT, "db")]),
        "matches no allowed pattern": dataclasses.replace(
            good, allowed_kernel_cmdline_patterns=[r"/boot/vmlinuz-\S+ ro"]
        ),
        "dbx lacks 1 required revocation": dataclasses.replace(good, required_dbx=["cd" * 32]),
        "db holds a forbidden entry": dataclasses.replace(
            good, forbidden_db=[hashlib.sha256(BOOT.certificates["db"]).hexdigest()]
        ),
        "firmware version": dataclasses.replace(good, allowed_firmware_versions=["v2"]),
    }
    for message, policy in broken.items():
        with pytest.raises(AttestationCheckFailed, match=message) as caught:
            verify(soft_ak, quote, BOOT.log(), boot_policy=policy)
        assert caught.value.check is Check.BOOT_POLICY, message
    by_subject = dataclasses.replace(good, forbidden_db=[BOOT.subjects["db"]])
    with pytest.raises(AttestationCheckFailed, match="forbidden"):
        verify(soft_ak, quote, BOOT.log(), boot_policy=by_subject)


def test_secure_boot_off_is_refused_where_required(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, OFF)
    result = verify(soft_ak, quote, OFF.log(), boot_policy=BootPolicy(secure_boot=False))
    assert result.boot_facts.secure_boot is False
    with pytest.raises(AttestationCheckFailed, match="Secure Boot is off") as caught:
        verify(soft_ak, quote, OFF.log(), boot_policy=BootPolicy(secure_boot=True))
    assert caught.value.check is Check.BOOT_POLICY


def test_a_secure_boot_variable_whose_data_lies_is_refused(soft_ak: EntraPrivateKey) -> None:
    """The attack on data no replay proves: Secure Boot was off (the firmware measured
    SecureBoot=0, the quote holds it), the log's event says 1. The replay still matches; the
    data does not hash to the digest, so no fact is read from it and the policy fails closed."""
    events = list(OFF.events)
    at = index_of(events, lambda e: e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG)
    lie = variable_data("8be4df61-93ca-11d2-aa0d-00e098032b8c", "SecureBoot", b"\x01")
    events[at] = dataclasses.replace(events[at], data=lie)  # the digest stays that of 0
    quote = quote_of(soft_ak, OFF)
    for values in (True, False):
        result = verify(soft_ak, quote, write_log(events), values=values)
        assert result.boot_facts.secure_boot is None
        assert [m.event_type for m in result.boot_facts.data_mismatches] == [
            "EV_EFI_VARIABLE_DRIVER_CONFIG"
        ]
        with pytest.raises(AttestationCheckFailed, match="data is not what its digest") as caught:
            verify(
                soft_ak,
                quote,
                write_log(events),
                values=values,
                boot_policy=BootPolicy(secure_boot=True),
            )
        assert caught.value.check is Check.BOOT_POLICY


def test_a_kernel_command_line_whose_data_lies_is_refused(soft_ak: EntraPrivateKey) -> None:
    """GRUB measured ``init=/bin/sh``: refused by the pattern; the log's text saying otherwise
    does not hash to the digest; and the label, in no digest, moved to "grub_cmd: " to take the
    line out of the command lines, leaves GRUB's ``linux`` command, which carries the same line
    and is checked whatever its label."""
    quote = quote_of(soft_ak, EVIL)
    policy = BootPolicy(allowed_kernel_cmdline_patterns=[r"\S+ root=\S+ ro quiet"])
    with pytest.raises(AttestationCheckFailed, match="init=/bin/sh") as caught:
        verify(soft_ak, quote, EVIL.log(), boot_policy=policy)
    assert caught.value.check is Check.BOOT_POLICY
    events = list(EVIL.events)
    at = index_of(events, lambda e: e.data.startswith(b"kernel_cmdline: "))
    lie = b"kernel_cmdline: " + BOOT.kernel_cmdline.encode() + b"\0"
    lying = [*events[:at], dataclasses.replace(events[at], data=lie), *events[at + 1 :]]
    with pytest.raises(AttestationCheckFailed, match="data is not what its digest") as caught:
        verify(soft_ak, quote, write_log(lying), boot_policy=policy)
    assert caught.value.check is Check.BOOT_POLICY
    label = b"grub_cmd: " + EVIL.kernel_cmdline.encode() + b"\0"
    relabelled = [*events[:at], dataclasses.replace(events[at], data=label), *events[at + 1 :]]
    result = verify(soft_ak, quote, write_log(relabelled))
    assert result.boot_facts is not None and result.boot_facts.kernel_cmdlines == ()
    with pytest.raises(AttestationCheckFailed, match="init=/bin/sh") as caught:
        verify(soft_ak, quote, write_log(relabelled), boot_policy=policy)
    assert caught.value.check is Check.BOOT_POLICY


def test_a_kernel_relabelled_to_hide_it_is_refused(soft_ak: EntraPrivateKey) -> None:
    """The type is in no digest: a kernel that is not allowed, relabelled from a boot
    application to another type, would leave only allowed applications in PCR 4. Every type
    it can take there is refused: a PCR 4 type the policy cannot account for, or one whose data
    must be what its digest measured."""
    quote = quote_of(soft_ak, BOOT)
    loaders = BootPolicy(
        allowed_boot_loaders=[BOOT.authenticode("shim"), BOOT.authenticode("grub")]
    )
    with pytest.raises(AttestationCheckFailed, match="is not an allowed boot loader or kernel"):
        verify(soft_ak, quote, BOOT.log(), boot_policy=loaders)
    at = index_of(BOOT.events, lambda e: e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION, 2)
    expected = {
        EV_IPL: "is EV_IPL, which the policy cannot account for",
        EV_EFI_ACTION: "data is not what its digest measured",
        EV_SEPARATOR: "data is not what its digest measured",
        0x80000004: "is EV_EFI_BOOT_SERVICES_DRIVER, which the policy cannot account for",
        0x12345678: "which the policy cannot account for",
    }
    for kind, message in expected.items():
        events = list(BOOT.events)
        events[at] = dataclasses.replace(events[at], event_type=kind)
        log = write_log(events)
        assert parse_event_log(log).replay() == parse_event_log(BOOT.log()).replay()
        with pytest.raises(AttestationCheckFailed, match=message) as caught:
            verify(soft_ak, quote, log, boot_policy=loaders)
        assert caught.value.check is Check.BOOT_POLICY


def test_a_kernel_grub_loads_after_the_last_application_is_refused(
    soft_ak: EntraPrivateKey,
) -> None:
    """GRUB's ``chainloader`` has the firmware measure the allowed kernel into PCR 4 without
    starting it; a later ``linux`` boots another kernel through GRUB's own loader (a PCR 9 file
    only). The last PCR 4 application is then the allowed kernel, but a loader command (under
    any label) or an unreadable string in PCR 8 after it is refused; a quote without PCR 8
    proves nothing of it, and is refused too."""
    events = list(BOOT.events)
    start = index_of(events, lambda e: e.data.startswith(b"grub_cmd: linux "))
    end = index_of(events, lambda e: e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION, 2)
    evil_line = (
        "/boot/vmlinuz-6.1.0-99-evil" + BOOT.kernel_cmdline[BOOT.kernel_cmdline.index(" ") :]
    )
    kernels = BootPolicy(
        allowed_boot_loaders=[BOOT.authenticode("shim"), BOOT.authenticode("grub")],
        allowed_kernels=[BOOT.authenticode("kernel")],
    )

    def booted(command_label: str, command: bytes) -> list[BootEvent]:
        return [
            *events[:start],
            grub_string("grub_cmd: ", "chainloader " + BOOT.kernel_cmdline),
            events[end],  # the firmware's measurement of the allowed kernel, never started
            BootEvent(8, EV_IPL, command_label.encode() + command + b"\0", command),
            BootEvent(9, EV_IPL, b"/boot/vmlinuz-6.1.0-99-evil\0", b"EVIL KERNEL IMAGE"),
            grub_string("kernel_cmdline: ", evil_line),
            *events[end + 1 :],
        ]

    genuine = booted("grub_cmd: ", f"linux {evil_line}".encode())
    quote = quote_of(soft_ak, booted_with(genuine))
    for label in ("grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", ""):
        lying = booted(label, f"linux {evil_line}".encode())
        refused(soft_ak, quote, lying, kernels, "GRUB's 'linux' after the last boot application")
    unreadable = booted("grub_cmd: ", b"linux /boot/vmlinuz-\xff")
    refused(soft_ak, quote_of(soft_ak, booted_with(unreadable)), unreadable, kernels,
            "a string the policy cannot read after the last boot application")  # fmt: skip
    without_8 = quote_of(soft_ak, BOOT, [q for q in QUOTED if q != 8])
    with pytest.raises(AttestationCheckFailed, match="PCR 8 is not covered"):
        verify(soft_ak, without_8, BOOT.log(), boot_policy=kernels)
    assert verify(soft_ak, quote_of(soft_ak, BOOT), BOOT.log(), boot_policy=kernels).boot_facts


def test_a_signer_relabelled_to_hide_it_is_refused(soft_ak: EntraPrivateKey) -> None:
    """shim's vendor certificate is not an allowed signer; its authority event, relabelled as
    a Secure Boot variable (whose data check it passes: the digest is of its data), would vanish
    from the authorities: a variable after PCR 7's separator is refused; relabelled as an action
    or a separator, its data does not match."""
    quote = quote_of(soft_ak, BOOT)
    db_only = BootPolicy(allowed_signers=[signer(BOOT, "db")])
    with pytest.raises(AttestationCheckFailed, match="Distribution Secure Boot CA"):
        verify(soft_ak, quote, BOOT.log(), boot_policy=db_only)
    at = index_of(BOOT.events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY, 2)
    expected = {
        EV_EFI_VARIABLE_DRIVER_CONFIG: "measured after the separator",
        EV_EFI_ACTION: "data is not what its digest measured",
        EV_SEPARATOR: "data is not what its digest measured",
        EV_IPL: "which the policy cannot account for",
    }
    for kind, message in expected.items():
        events = list(BOOT.events)
        events[at] = dataclasses.replace(events[at], event_type=kind)
        with pytest.raises(AttestationCheckFailed, match=message) as caught:
            verify(soft_ak, quote, write_log(events), boot_policy=db_only)
        assert caught.value.check is Check.BOOT_POLICY


# --- Relabelling: the type and GRUB's label are in no digest ------------------------------------

#: The allowed command line of the synthetic boot (GRUB's, with the kernel's path first).
CMDLINE = BootPolicy(
    allowed_kernel_cmdline_patterns=[r"/boot/vmlinuz-\S+ root=UUID=[0-9a-f-]+ ro quiet"]
)
EVIL_LINE = BOOT.kernel_cmdline + " init=/bin/sh"
EV_EVENT_TAG = 0x00000006


def booted_with(events: Sequence[BootEvent]) -> SyntheticBoot:
    """The synthetic boot with these events: what the TPM's PCRs hold after them."""
    return dataclasses.replace(BOOT, events=tuple(events))


def grub_string(label: str, command: str) -> BootEvent:
    """A PCR 8 string as GRUB measures it: the digest of the command, the label before it."""
    return BootEvent(8, EV_IPL, (label + command).encode() + b"\0", command.encode())


def refused(ak: EntraPrivateKey, quote: Quote, events: Sequence[BootEvent], policy: BootPolicy,
            match: str | None = None) -> str:  # fmt: skip
    """The BOOT_POLICY refusal of a log of these events that replays to the quote."""
    log = write_log(events)
    assert parse_event_log(log).replay()["sha256"] == booted_with(events).replay()["sha256"]
    with pytest.raises(AttestationCheckFailed, match=match) as caught:
        verify(ak, quote, log, boot_policy=policy)
    assert caught.value.check is Check.BOOT_POLICY
    return str(caught.value)


def test_a_grub_command_line_relabelled_to_hide_it_is_refused(soft_ak: EntraPrivateKey) -> None:
    """grub.cfg runs ``linux`` twice (the last wins): GRUB measures the evil ``linux`` command
    and its kernel_cmdline after the allowed ones. Under every label GRUB has, or none, the
    ``linux`` command's arguments are a command line, and so is every string that is no GRUB
    command: no choice of labels for the two strings hides ``init=/bin/sh``."""
    at = index_of(BOOT.events, lambda e: e.data.startswith(b"kernel_cmdline: ")) + 1
    events = list(BOOT.events)
    labels = ("grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "")
    genuine = [grub_string(labels[0], "linux " + EVIL_LINE), grub_string(labels[1], EVIL_LINE)]
    quote = quote_of(soft_ak, booted_with([*events[:at], *genuine, *events[at:]]))
    for command_label in labels:
        for line_label in labels:
            lying = [grub_string(command_label, "linux " + EVIL_LINE),
                     grub_string(line_label, EVIL_LINE)]  # fmt: skip
            refused(soft_ak, quote, [*events[:at], *lying, *events[at:]], CMDLINE, "init=/bin/sh")
    assert verify(soft_ak, quote_of(soft_ak, BOOT), BOOT.log(), boot_policy=CMDLINE).boot_facts


def test_a_string_grub_measured_is_read_whatever_it_holds(soft_ak: EntraPrivateKey) -> None:
    """GRUB's other loader commands carry command lines too; a kernel_cmdline relabelled as a
    command is read, as no command starts with a path; a string the policy cannot read as text
    is refused where it reads command lines, as is GRUB removing its tpm module (what it ran
    after is not measured)."""
    at = index_of(BOOT.events, lambda e: e.data.startswith(b"kernel_cmdline: ")) + 1
    events = list(BOOT.events)
    cases = {
        "chainloader /EFI/evil.efi init=/bin/sh": "init=/bin/sh",
        "module /boot/evil.ko init=/bin/sh": "init=/bin/sh",
        "rmmod tpm": "removed its tpm module",
    }
    for command, message in cases.items():
        extra = [*events[:at], grub_string("grub_cmd: ", command), *events[at:]]
        refused(soft_ak, quote_of(soft_ak, booted_with(extra)), extra, CMDLINE, message)
    for path in ("/boot/vmlinuz-evil", "(hd0,gpt2)/vmlinuz-evil"):  # a kernel_cmdline alone
        line = f"{path} root=/dev/sda1 init=/bin/sh"
        genuine = [*events[:at], grub_string("kernel_cmdline: ", line), *events[at:]]
        lying = [*events[:at], grub_string("grub_cmd: ", line), *events[at:]]
        refused(soft_ak, quote_of(soft_ak, booted_with(genuine)), lying, CMDLINE, "init=/bin/sh")
    binary = BootEvent(8, EV_IPL, b"\xff\xfe\x00\x01", b"\xff\xfe\x00\x01")
    extra = [*events[:at], binary, *events[at:]]
    refused(soft_ak, quote_of(soft_ak, booted_with(extra)), extra, CMDLINE, "cannot read")


def test_a_command_line_linux_splits_otherwise_than_the_pattern_is_refused(
    soft_ak: EntraPrivateKey,
) -> None:
    """Linux splits its command line at every byte isspace() takes (lib/ctype.c: byte A0 too)
    and groups at double quotes. A kernel GRUB loads from a path holding such a byte gives the
    kernel ``init=/bin/sh`` as an argument of its own, where the pattern sees one word: a lone
    byte A0 (no UTF-8: unreadable), a character whose UTF-8 form holds A0 (à, Š, †), other
    whitespace, controls and quotes are refused, in GRUB's lines and in systemd-stub's."""
    at = index_of(BOOT.events, lambda e: e.data.startswith(b"kernel_cmdline: ")) + 1
    rest = BOOT.kernel_cmdline[BOOT.kernel_cmdline.index(" ") :].encode()
    events = list(BOOT.events)
    odd_bytes = ["à", "Š", "†", "\x0b", "\r", '"', "\u3000", "\x7f", 'x="a', '\\"']
    cases = {b"\xa0": "cannot read"}
    cases |= {c.encode(): re.escape(f"holds {c if len(c) == 1 else chr(34)!r}") for c in odd_bytes}
    for odd, message in cases.items():
        line = b"/boot/vmlinuz-6.1.0-18-amd64" + odd + b"init=/bin/sh" + rest
        string = BootEvent(8, EV_IPL, b"kernel_cmdline: " + line + b"\0", line)
        extra = [*events[:at], string, *events[at:]]
        refused(soft_ak, quote_of(soft_ak, booted_with(extra)), extra, CMDLINE, message)
    wide = ("vmlinuzàinit=/bin/sh" + rest.decode() + "\0").encode("utf-16-le")
    stub = [*events, BootEvent(12, EV_IPL, wide, wide)]
    anyone = BootPolicy(
        allowed_kernel_cmdline_patterns=[r"\S+ root=UUID=[0-9a-f-]+ ro quiet", ".*"]
    )
    refused(soft_ak, quote_of(soft_ak, booted_with(stub)), stub, anyone, "holds 'à'")
    for line in ("vmlinuz" + rest.decode(), 'vmlinuz dm-mod.create="a,,,ro,0 1" "x y" ro'):
        wide = (line + "\0").encode("utf-16-le")  # quotes that open and close values: taken
        plain = [*events, BootEvent(12, EV_IPL, wide, wide)]
        quote = quote_of(soft_ak, booted_with(plain))
        assert verify(soft_ak, quote, write_log(plain), boot_policy=anyone).boot_facts


def test_grub_removing_its_tpm_module_is_refused_whatever_its_label(
    soft_ak: EntraPrivateKey,
) -> None:
    """``rmmod tpm`` is in the digest, its label is not: relabelled as a command line of any
    kind, or with none, it is still refused (what GRUB ran after it is not measured)."""
    at = index_of(BOOT.events, lambda e: e.data.startswith(b"kernel_cmdline: ")) + 1
    events = list(BOOT.events)
    genuine = [*events[:at], grub_string("grub_cmd: ", "rmmod tpm"), *events[at:]]
    quote = quote_of(soft_ak, booted_with(genuine))
    anything = BootPolicy(allowed_kernel_cmdline_patterns=[".*"])
    for label in ("grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", ""):
        lying = [*events[:at], grub_string(label, "rmmod tpm"), *events[at:]]
        refused(soft_ak, quote, lying, anything, "removed its tpm module")


def test_a_systemd_command_line_relabelled_to_hide_it_is_refused(
    soft_ak: EntraPrivateKey,
) -> None:
    """systemd-stub's UTF-16 command line in PCR 12 is read as a command line; relabelled to
    any other type (an EV_EVENT_TAG add-on, whose data check it would pass), or its data
    replaced by bytes that are no UTF-16 string (which no digest check would cover), it is
    refused. An allowed line there is taken."""

    def stub(line: str, kind: int = EV_IPL, data: bytes | None = None) -> BootEvent:
        wide = (line + "\0").encode("utf-16-le")
        return BootEvent(12, kind, wide if data is None else data, wide)

    events = list(BOOT.events)
    genuine = [*events, stub(EVIL_LINE)]
    quote = quote_of(soft_ak, booted_with(genuine))
    refused(soft_ak, quote, genuine, CMDLINE, "init=/bin/sh")
    for kind in (EV_EVENT_TAG, EV_SEPARATOR, EV_EFI_ACTION, EV_EFI_VARIABLE_AUTHORITY, 0x1234):
        refused(soft_ak, quote, [*events, stub(EVIL_LINE, kind)], CMDLINE)
    for data in (b"\xff", b"\x00\xd8\x00\xd8", EVIL_LINE.encode()):
        refused(soft_ak, quote, [*events, stub(EVIL_LINE, data=data)], CMDLINE)
    good = [*events, stub(BOOT.kernel_cmdline)]
    result = verify(soft_ak, quote_of(soft_ak, booted_with(good)), write_log(good),
                    boot_policy=CMDLINE)  # fmt: skip
    assert result.boot_facts is not None
    assert result.boot_facts.command_lines == (BOOT.kernel_cmdline,) * 3  # linux, GRUB's, systemd's


def test_a_separator_relabelled_to_hide_a_signer_is_refused(soft_ak: EntraPrivateKey) -> None:
    """PCR 7's separator relabelled (a Secure Boot variable, an authority, an action, a type
    of no name) would make shim's authority, relabelled as a variable, look like one measured
    before it: PCR 7 must hold one separator, and every variable there must be a Secure Boot
    variable holding what that variable holds."""
    quote = quote_of(soft_ak, BOOT)
    db_only = BootPolicy(allowed_signers=[signer(BOOT, "db")])
    separator = index_of(BOOT.events, lambda e: e.pcr == 7 and e.event_type == EV_SEPARATOR)
    shim = index_of(BOOT.events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY, 2)
    kinds = (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY, EV_EFI_ACTION, 0x1234)
    for kind in kinds:
        for hide_shim in (False, True):
            events = list(BOOT.events)
            events[separator] = dataclasses.replace(events[separator], event_type=kind)
            if hide_shim:
                events[shim] = dataclasses.replace(
                    events[shim], event_type=EV_EFI_VARIABLE_DRIVER_CONFIG
                )
            refused(soft_ak, quote, events, db_only)
    events = list(BOOT.events)
    events[separator] = dataclasses.replace(events[separator], event_type=kinds[0])
    events[shim] = dataclasses.replace(events[shim], event_type=kinds[0])
    found = db_only.violations(parse_event_log(write_log(events)).facts())
    assert any("PCR 7 holds 0 separators" in f for f in found)
    assert any("'Shim'" in f and "not a Secure Boot variable" in f for f in found)


def test_an_authority_before_the_separator_relabelled_to_hide_it_is_refused(
    soft_ak: EntraPrivateKey,
) -> None:
    """Firmware verified a driver with a db certificate the policy does not allow (logged
    before PCR 7's separator): relabelled as a Secure Boot variable it names db a second time
    and holds no signature list; relabelled to any other type it is refused too."""
    separator = index_of(BOOT.events, lambda e: e.pcr == 7 and e.event_type == EV_SEPARATOR)
    owner = bytes.fromhex("77fa9abd03594d32bd6028f4e78f784b")
    driver = BootEvent(
        7,
        EV_EFI_VARIABLE_AUTHORITY,
        variable_data(
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f", "db", owner + BOOT.certificates["KEK"]
        ),
        b"",
    )
    driver = dataclasses.replace(driver, measured=driver.data)
    genuine = [*BOOT.events[:separator], driver, *BOOT.events[separator:]]
    quote = quote_of(soft_ak, booted_with(genuine))
    policy = BootPolicy(allowed_signers=[signer(BOOT, "db"), signer(BOOT, "shim")])
    refused(soft_ak, quote, genuine, policy, "Test KEK CA")
    expected = {
        EV_EFI_VARIABLE_DRIVER_CONFIG: "measures db a second time",
        EV_EFI_ACTION: "data is not what its digest measured",
        EV_SEPARATOR: "data is not what its digest measured",
        EV_IPL: "which the policy cannot account for",
    }
    for kind, message in expected.items():
        lying = [*BOOT.events[:separator], dataclasses.replace(driver, event_type=kind),
                 *BOOT.events[separator:]]  # fmt: skip
        refused(soft_ak, quote, lying, policy, message)


def test_a_hash_signer_must_be_allowed(soft_ak: EntraPrivateKey) -> None:
    """An image allowed by its hash (in db, or in shim's MokListRT) is logged as an authority
    holding an owner and the hash: a policy that does not name the hash refuses it, one that
    does takes it; an authority whose entry is neither a certificate nor a hash is refused."""
    shim = index_of(BOOT.events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY, 2)
    owner = bytes.fromhex("77fa9abd03594d32bd6028f4e78f784b")
    digest = hashlib.sha256(b"a kernel enrolled by its hash").digest()
    signers = [signer(BOOT, "db"), signer(BOOT, "shim")]
    for guid, name in ((SHIM_LOCK, "MokListRT"), (EFI_IMAGE_SECURITY_DATABASE, "db")):
        events = list(BOOT.events)
        data = variable_data(guid, name, owner + digest)
        events[shim] = BootEvent(7, EV_EFI_VARIABLE_AUTHORITY, data, data)
        quote = quote_of(soft_ak, booted_with(events))
        refused(soft_ak, quote, events, BootPolicy(allowed_signers=signers), digest.hex())
        allowed = BootPolicy(allowed_signers=[*signers, digest.hex()])
        assert verify(soft_ak, quote, write_log(events), boot_policy=allowed).boot_facts
    events = list(BOOT.events)
    data = variable_data(SHIM_LOCK, "Shim", b"neither a certificate nor a hash")
    events[shim] = BootEvent(7, EV_EFI_VARIABLE_AUTHORITY, data, data)
    quote = quote_of(soft_ak, booted_with(events))
    refused(soft_ak, quote, events, BootPolicy(allowed_signers=signers), "neither a certificate")


def test_a_signer_is_named_by_its_key_not_its_subject(soft_ak: EntraPrivateKey) -> None:
    """A subject is a name anyone may put in a certificate: a self-made certificate carrying
    the allowed shim CA's subject, enrolled as a MOK, verified the attacker's kernel. Signers
    are named by certificate fingerprint or SPKI SHA-256, which it does not have, and a policy
    naming a signer by subject is InvalidData."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # the attacker's own
    common_name = BOOT.subjects["shim"].removeprefix("CN=")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    made = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=99)).sign(key, hashes.SHA256())
    )  # fmt: skip
    der = made.public_bytes(serialization.Encoding.DER)
    events = list(BOOT.events)
    at = index_of(events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY, 1)
    mok = variable_data(SHIM_LOCK, "MokListRT", bytes(16) + der)
    events.insert(at + 1, BootEvent(7, EV_EFI_VARIABLE_AUTHORITY, mok, mok))
    quote = quote_of(soft_ak, booted_with(events))
    by_print = BootPolicy(
        secure_boot=True, allowed_signers=[signer(BOOT, "db"), signer(BOOT, "shim")]
    )
    refused(soft_ak, quote, events, by_print, hashlib.sha256(der).hexdigest())
    spki = [
        hashlib.sha256(
            x509.load_der_x509_certificate(BOOT.certificates[role])
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
        for role in ("db", "shim")
    ]
    refused(soft_ak, quote, events, BootPolicy(allowed_signers=spki), "not an allowed signer")
    assert verify(
        soft_ak, quote_of(soft_ak, BOOT), BOOT.log(), boot_policy=BootPolicy(allowed_signers=spki)
    )
    with pytest.raises(InvalidData, match="never by subject"):
        BootPolicy(allowed_signers=[BOOT.subjects["shim"]])


def test_required_dbx_counts_only_revocations_firmware_matches(soft_ak: EntraPrivateKey) -> None:
    """Whoever can write dbx puts the required hash there in a form firmware does not match
    against images: an EFI_CERT_SHA256 list of SignatureSize 16+33 (EDK2 skips it), or an
    EFI_CERT_X509_SHA256 entry (a certificate's TBS hash). Neither revokes the image: refused.
    The hash in a proper list is taken."""
    sha256, x509_sha256 = (
        "c1c41626-504c-4092-aca9-41f936934328",
        "3bd2a492-96c0-4079-b420-fcf98ef103ed",
    )
    revoked = hashlib.sha256(b"a vulnerable shim's Authenticode").digest()

    def with_dbx(sig_type: str, entry: bytes) -> list[BootEvent]:
        body = bytes(16) + entry
        lists = uuid.UUID(sig_type).bytes_le + struct.pack("<III", 28 + len(body), 0, len(body))
        data = variable_data(EFI_IMAGE_SECURITY_DATABASE, "dbx", lists + body)
        return [
            BootEvent(7, e.event_type, data, data)
            if e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG and b"d\0b\0x\0" in e.data
            else e
            for e in BOOT.events
        ]

    policy = BootPolicy(secure_boot=True, required_dbx=[revoked.hex()])
    for sig_type, entry in ((sha256, revoked + b"\0"), (x509_sha256, revoked + bytes(16))):
        events = with_dbx(sig_type, entry)
        refused(soft_ak, quote_of(soft_ak, booted_with(events)), events, policy, "dbx lacks 1")
    events = with_dbx(sha256, revoked)
    assert verify(
        soft_ak, quote_of(soft_ak, booted_with(events)), write_log(events), boot_policy=policy
    )


def test_a_certificate_pyca_refuses_is_a_typed_refusal(soft_ak: EntraPrivateKey) -> None:
    """A certificate of X.509 version 6 (pyca raises its own InvalidVersion) as the entry of
    a PCR 7 authority or in db: the policy refuses the signer it cannot name, or reads db
    without it, and no exception but entra_keys' escapes."""
    der = bytearray(BOOT.certificates["db"])
    der[der.index(bytes([0xA0, 0x03, 0x02, 0x01, 0x02])) + 4] = 5
    authority = variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", bytes(16) + bytes(der))
    events = list(BOOT.events)
    at = index_of(events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY)
    events[at] = BootEvent(7, EV_EFI_VARIABLE_AUTHORITY, authority, authority)
    policy = BootPolicy(allowed_signers=[signer(BOOT, "db"), signer(BOOT, "shim")])
    refused(soft_ak, quote_of(soft_ak, booted_with(events)), events, policy, "a certificate")
    db = variable_data(
        EFI_IMAGE_SECURITY_DATABASE, "db", signature_list(EFI_CERT_X509, [bytes(der)])
    )
    events = list(BOOT.events)
    at = index_of(events, lambda e: e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG, 3)
    events[at] = BootEvent(7, EV_EFI_VARIABLE_DRIVER_CONFIG, db, db)
    by_subject = BootPolicy(forbidden_db=[BOOT.subjects["db"]])
    result = verify(
        soft_ak, quote_of(soft_ak, booted_with(events)), write_log(events), boot_policy=by_subject
    )
    assert result.boot_facts.db is not None and result.boot_facts.db[0].subject is None


def test_a_generator_of_patterns_is_read_once() -> None:
    """A generator of patterns is a collection like a list: its patterns are kept, not spent
    by the type check (which would leave a policy that refuses every boot)."""
    policy = BootPolicy(allowed_kernel_cmdline_patterns=(p for p in [".*", "a"]))
    assert policy.allowed_kernel_cmdline_patterns == (".*", "a")
    assert policy.violations(BOOT_FACTS) == ()
    with pytest.raises(InvalidData, match="list of str"):
        BootPolicy(allowed_kernel_cmdline_patterns=(p for p in [".*", 5]))  # type: ignore[misc]


def test_the_structure_rules_take_real_firmware_logs() -> None:
    """The rules that bind types to content refuse no genuine log: firmware's PCRs 0, 4 and 7
    (variables, separators, db and shim authorities, shim's SbatLevel and MokListTrusted) and
    GRUB's PCR 8 strings, as real machines logged them."""
    for name in ("event-moklisttrusted.bin", "event-postcode.bin", "event-bootorder.bin"):
        log = parse_event_log((REALWORLD / "tpm2-tools" / name).read_bytes())
        facts = log.facts(pcrs={"sha256": range(24)})
        policy = BootPolicy(
            secure_boot=facts.secure_boot,
            allowed_signers=[
                hashlib.sha256(a.entry.certificate).hexdigest()
                for a in facts.authorities
                if a.entry and a.entry.certificate
            ]
            or None,
            allowed_kernel_cmdline_patterns=[".*"],
            allowed_firmware_versions=[v for v in facts.firmware_versions if v] or ["none"],
            allowed_boot_loaders=[
                d.hex() for app in facts.boot_applications for d in app.digests.values()
            ],
        )
        assert policy.reads() == (0, 4, 7, 8, 12)
        found = [v for v in policy.violations(facts) if "firmware version ''" not in v]
        assert found == [], name  # (some firmware measures an empty version string)


def test_a_pcr_the_policy_reads_must_be_covered(soft_ak: EntraPrivateKey) -> None:
    """Facts are read only from quoted PCRs: a quote without PCR 7 proves nothing about Secure
    Boot, and a log stripped of PCR 7's events (the quote holds it) does not explain it."""
    quote = quote_of(soft_ak, BOOT, [0, 4, 8])
    with pytest.raises(AttestationCheckFailed, match="PCR 7 is not covered") as caught:
        verify(soft_ak, quote, BOOT.log(), boot_policy=BootPolicy(secure_boot=True))
    assert caught.value.check is Check.BOOT_POLICY
    quote = quote_of(soft_ak, BOOT)
    stripped = write_log([e for e in BOOT.events if e.pcr != 7])
    result = verify(soft_ak, quote, stripped)
    assert 7 not in result.boot_facts.pcrs and result.boot_facts.secure_boot is None
    with pytest.raises(AttestationCheckFailed, match="PCR 7 is not covered"):
        verify(soft_ak, quote, stripped, boot_policy=BootPolicy(secure_boot=True))


def test_a_boot_policy_without_a_log_is_refused(soft_ak: EntraPrivateKey) -> None:
    quote = quote_of(soft_ak, BOOT)
    with pytest.raises(AttestationCheckFailed, match="no event log") as caught:
        verify_quote(
            quote.attest, quote.signature, soft_ak.tpm_public, NONCE,
            {"sha256": quote.pcr_values}, policy=SOFTWARE, boot_policy=BootPolicy(),
        )  # fmt: skip
    assert caught.value.check is Check.BOOT_POLICY
    with pytest.raises(InvalidData, match="BootPolicy"):
        verify(soft_ak, quote, BOOT.log(), boot_policy={"secure_boot": True})  # type: ignore[arg-type]


def test_a_policy_field_that_is_no_list_is_invalid_data() -> None:
    """A number where a list of names or patterns goes is InvalidData, as a string is."""
    for name in ("allowed_kernels", "allowed_signers", "allowed_kernel_cmdline_patterns"):
        for value in (5, object(), 2.5):
            with pytest.raises(InvalidData, match=name):
                BootPolicy(**{name: value})


def test_the_policy_reads_json_strictly() -> None:
    policy = full_policy(BOOT)
    document = {
        "secure_boot": True,
        "allowed_boot_loaders": sorted(policy.allowed_boot_loaders or ()),
        "allowed_kernels": sorted(policy.allowed_kernels or ()),
        "allowed_signers": sorted(policy.allowed_signers or ()),
        "allowed_kernel_cmdline_patterns": list(policy.allowed_kernel_cmdline_patterns or ()),
        "required_dbx": sorted(policy.required_dbx or ()),
        "forbidden_db": sorted(policy.forbidden_db or ()),
        "allowed_firmware_versions": [BOOT.firmware_version],
    }
    assert BootPolicy.from_json(json.dumps(document)) == policy
    windows = BootPolicy.from_json('{"require_bitlocker": true, "forbid_test_signing": true}')
    assert (
        windows.require_bitlocker
        and windows.forbid_test_signing
        and windows.reads() == (12, 13, 14)
    )
    for bad, message in (
        ('{"secureboot": true}', "unknown members"),
        ('{"secure_boot": "yes"}', "is a boolean"),
        ('{"allowed_kernels": "ab"}', "is not a list"),
        ('{"allowed_kernels": ["xyz"]}', "is not a hex digest"),
        ('{"allowed_kernel_cmdline_patterns": ["("]}', "pattern"),
        ("[]", "not a JSON object"),
    ):
        with pytest.raises(InvalidData, match=message):
            BootPolicy.from_json(bad)
    assert BootPolicy(allowed_kernels=[bytes(32)]).allowed_kernels == frozenset({"00" * 32})
    assert BootPolicy(allowed_kernels=["SHA256:" + "AB" * 32]).allowed_kernels == {"ab" * 32}


# --- Windows: the SIPA facts Intune reads ------------------------------------------------------

WINDOWS = json.loads((REALWORLD / "go-attestation/windows_gcp_shielded_vm.json").read_text())
COS = json.loads((REALWORLD / "go-tpm-tools/gce-cos-85-no-nonce.json").read_text())
WINDOWS_POLICY = BootPolicy(
    secure_boot=True,
    require_bitlocker=True,
    require_code_integrity=True,
    forbid_test_signing=True,
    forbid_debugging=True,
    require_elam=True,
)


def windows_quote() -> tuple[TPMSQuoteInfo, dict[int, dict[int, bytes]], bytes]:
    attest = TPMSAttest.parse(base64.b64decode(WINDOWS["Quote"]["Quote"]))
    assert isinstance(attest.attested, TPMSQuoteInfo)
    values = {0x0004: {p["Index"]: base64.b64decode(p["Digest"]) for p in WINDOWS["Log"]["PCRs"]}}
    return attest.attested, values, base64.b64decode(WINDOWS["Log"]["Raw"])


def test_the_windows_quote_ties_to_its_log_and_meets_a_dha_policy() -> None:
    """go-attestation's Windows Shielded VM: the log replays to the quoted SHA-1 PCRs 0-23 and
    its SIPA facts meet an Intune-like policy; test signing switched on in one SIPA event is
    refused, and so is the event relabelled to hide it."""
    body, values, log = windows_quote()
    sha1 = HASH_ALGORITHMS[0x0004]
    measured = tie_event_log(body, sha1, log, values)
    assert measured.events_after_quote == 0 and measured.pcrs == {"sha1": tuple(range(24))}
    WINDOWS_POLICY.check(measured.facts)
    alone, replayed = log_as_expected(body, sha1, log, allow_sha1=True)
    assert replayed == values and alone.facts == measured.facts
    with pytest.raises(AttestationCheckFailed, match="sha1 is refused") as caught:
        log_as_expected(body, sha1, log, allow_sha1=False)
    assert caught.value.check is Check.HASH

    parsed = parse_event_log(log)
    tag = next(e for e in parsed.events if e.pcr == 12 and e.event_type == 6)
    switched = _with_sipa_record(tag.data, 0x00050003, b"\x01")  # SIPAEVENT_TESTSIGNING
    forged = _sha1_log_with(log, tag.offset, tag.data, switched, hashlib.sha1(switched).digest())
    facts = parse_event_log(forged).facts()
    assert facts.windows is not None and facts.windows.test_signing
    with pytest.raises(AttestationCheckFailed, match="test signing is on"):
        WINDOWS_POLICY.check(facts)
    hidden = _sha1_log_with(
        log, tag.offset, tag.data, switched, hashlib.sha1(switched).digest(), 0x0D
    )
    with pytest.raises(AttestationCheckFailed, match="EV_IPL, which the policy cannot account"):
        WINDOWS_POLICY.check(parse_event_log(hidden).facts())


def test_a_windows_separator_relabelled_is_refused() -> None:
    """Windows closes PCRs 12-14 with a "WBCL" separator; relabelled as a SIPA container (the
    events after it would be read as before it) it is no tagged event, and refused."""
    _, _, log = windows_quote()
    parsed = parse_event_log(log)
    assert WINDOWS_POLICY.violations(parsed.facts()) == ()
    separator = next(e for e in parsed.events if e.pcr == 12 and e.event_type == 4)
    digest = hashlib.sha1(separator.data).digest()
    relabelled = _sha1_log_with(log, separator.offset, separator.data, separator.data, digest, 6)
    assert parse_event_log(relabelled).replay() == parsed.replay()
    with pytest.raises(AttestationCheckFailed, match="EV_EVENT_TAG but no tagged event"):
        WINDOWS_POLICY.check(parse_event_log(relabelled).facts())


def _with_sipa_record(tagged: bytes, kind: int, value: bytes) -> bytes:
    """A Windows TCG_PCClientTaggedEvent (its ID a SIPA container type, its data the records)
    with one more record."""
    tag_id, _ = struct.unpack_from("<II", tagged)
    body = tagged[8:] + struct.pack("<II", kind, len(value)) + value
    return struct.pack("<II", tag_id, len(body)) + body


def _sha1_log_with(
    log: bytes, offset: int, old: bytes, new: bytes, digest: bytes, kind: int | None = None
) -> bytes:
    """A SHA-1 log with the event at ``offset`` given new data, digest (and type)."""
    pcr, event_type, _, size = struct.unpack_from("<II20sI", log, offset)
    assert log[offset + 32 : offset + 32 + size] == old
    event = struct.pack("<II20sI", pcr, event_type if kind is None else kind, digest, len(new))
    return log[:offset] + event + new + log[offset + 32 + size :]


def _sipa(kind: int, body: bytes) -> bytes:
    return struct.pack("<II", kind, len(body)) + body


def _module_event(count: int, start: int) -> BootEvent:
    """A SIPA trust boundary (PCR 12) of ``count`` loaded-module records, all of one
    Authenticode hash, at image bases ``start``, ``start + 1``..."""
    records = b"".join(
        _sipa(0x40010003, _sipa(0x00070004, b"\xaa") + _sipa(0x00070007, struct.pack("<Q", base)))
        for base in range(start, start + count)
    )
    data = _sipa(0x40010001, records)
    return BootEvent(12, 0x00000006, data, data)


def test_windows_modules_sharing_a_hash_merge_in_linear_time() -> None:
    """Loaded-module records of one Authenticode hash merge into one module, its image bases in
    order and each once; the merge, which any sender of a log reaches under the default
    policy, is linear: 4x the records take nowhere near the 16x a quadratic merge would."""
    facts = parse_event_log(write_log([_module_event(3, 0), _module_event(3, 1)])).facts()
    assert facts.windows is not None
    (module,) = facts.windows.loaded_modules
    assert module.authenticode_hash == "aa" and module.image_bases == (0, 1, 2, 3)

    def seconds(count: int) -> float:
        log = parse_event_log(write_log([_module_event(count, 0)]))
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            log.facts()
            best = min(best, time.perf_counter() - started)
        return best

    assert seconds(20_000) < 10 * seconds(5_000)


def test_sipa_records_out_of_a_container_are_read_or_refused(soft_ak: EntraPrivateKey) -> None:
    """TESTSIGNING=1 where a reader of containers only would not look: as a top-level tagged
    event (Windows logs values there too), it is read and refused; in a trust boundary whose
    sizes leave a byte over, or under a tag of no SIPA form, it cannot be read, and is refused
    where a Windows requirement is set. The same record in a container is the control."""
    boundary, counter, testsigning = 0x40010001, 0x00020002, 0x00050003
    good = _sipa(boundary, _sipa(counter, struct.pack("<Q", 7)))
    cases = {
        _sipa(boundary, _sipa(testsigning, b"\x01")): "test signing is on",
        _sipa(testsigning, b"\x01"): "test signing is on",
        _sipa(boundary, _sipa(testsigning, b"\x01") + b"\0"): "no SIPA records the policy",
        _sipa(0x6C46F751, _sipa(testsigning, b"\x01")): "no SIPA records the policy",
    }
    closing = [BootEvent(p, EV_SEPARATOR, b"WBCL", b"WBCL") for p in (12, 13, 14)]
    policy = BootPolicy(forbid_test_signing=True)
    for data, message in cases.items():
        events = [BootEvent(12, EV_EVENT_TAG, good, good), BootEvent(12, EV_EVENT_TAG, data, data)]
        quote = quote_of(soft_ak, booted_with([*events, *closing]), [12, 13, 14])
        refused(soft_ak, quote, [*events, *closing], policy, message)
    events = [BootEvent(12, EV_EVENT_TAG, good, good), *closing]
    quote = quote_of(soft_ak, booted_with(events), [12, 13, 14])
    assert verify(soft_ak, quote, write_log(events), boot_policy=policy).boot_facts


def test_windows_facts_without_sipa_events_are_refused() -> None:
    facts = parse_event_log(BOOT.log()).facts(pcrs={"sha256": range(24)})
    found = WINDOWS_POLICY.violations(facts)
    assert "no Windows boot facts (SIPA events in PCRs 12-14) are in the quoted events" in found
    assert "event 22 in PCR 14 is EV_IPL, which the policy cannot account for" in found[0]


def test_real_quotes_stop_at_their_empty_nonce_before_the_log() -> None:
    """verify_quote on the real quotes: every check before the nonce passes (the AK, SHA-1
    allowed, the signature), and their empty nonces are refused; the log is tied to them at
    the level below (the tests above and below)."""
    attest = base64.b64decode(WINDOWS["Quote"]["Quote"])
    signature = base64.b64decode(WINDOWS["Quote"]["Signature"])
    ak = base64.b64decode(WINDOWS["AK"]["Public"])
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_quote(attest, signature, ak, b"", {}, policy=TrustPolicy(allow_sha1=True),
                     event_log=base64.b64decode(WINDOWS["Log"]["Raw"]))  # fmt: skip
    assert caught.value.check is Check.NONCE
    for quote in COS["quotes"]:
        with pytest.raises(AttestationCheckFailed) as caught:
            verify_quote(
                base64.b64decode(quote["quote"]), base64.b64decode(quote["raw_sig"]),
                base64.b64decode(COS["ak_pub"]), b"", {},
                policy=TrustPolicy(allow_sha1=True), event_log=base64.b64decode(COS["event_log"]),
            )  # fmt: skip
        assert caught.value.check is Check.NONCE


@pytest.mark.parametrize("bank", [0x0004, 0x000B, 0x000C])
def test_the_cos_quotes_tie_to_their_log(bank: int) -> None:
    """go-tpm-tools' COS dump: a quote per bank over PCRs 0-23, PCR 10 extended by IMA (not in
    the firmware log). With the quoted values the log ties to each quote (PCR 10 left to them);
    from the log alone, PCR 10 cannot be explained and the digest does not match."""
    (quote,) = [q for q in COS["quotes"] if q["pcrs"]["hash"] == bank]
    attest = TPMSAttest.parse(base64.b64decode(quote["quote"]))
    assert isinstance(attest.attested, TPMSQuoteInfo)
    signature = TPMTSignature.parse(base64.b64decode(quote["raw_sig"]))
    info = HASH_ALGORITHMS[signature.hash]
    values = {bank: {int(k): base64.b64decode(v) for k, v in quote["pcrs"]["pcrs"].items()}}
    log = base64.b64decode(COS["event_log"])
    measured = tie_event_log(attest.attested, info, log, values)
    name = HASH_ALGORITHMS[bank].name
    assert 10 not in measured.pcrs[name] and len(measured.pcrs[name]) == 23
    facts = measured.facts
    assert facts.secure_boot is True and facts.kernel_cmdline is not None
    BootPolicy(
        secure_boot=True,
        # "CN=UEFI DB Key v10,OU=Container Optimized OS,O=Google LLC.": its key's SPKI SHA-256
        allowed_signers=["4b4eb27158d8dd4a5bb760f5677f184708c15fdaf94d830a7e59c94b065a2724"],
        allowed_kernel_cmdline_patterns=[r"/syslinux/vmlinuz\.A .*"],
    ).check(facts)
    with pytest.raises(AttestationCheckFailed) as caught:
        log_as_expected(attest.attested, info, log, allow_sha1=True)
    assert caught.value.check is Check.PCR_DIGEST
    wrong = {bank: {**values[bank], 4: b"\x01" * len(values[bank][4])}}
    with pytest.raises(
        AttestationCheckFailed, match=f"{name} PCR 4 is 01010101…01010101"
    ) as caught:
        tie_event_log(attest.attested, info, log, wrong)
    assert caught.value.check is Check.EVENT_LOG


# --- The device side -----------------------------------------------------------------------------


def test_the_software_provider_has_no_boot_log(tmp_path: Path) -> None:
    """No boot was measured: ``event_log=True`` is refused. A log given by path is carried as
    the TPM provider carries it; against the software PCRs (all at their start values) only the
    empty prefix of it ties to the quote: every event came "after", and no fact is read."""
    provider = open_provider("software")
    ak = provider.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    with pytest.raises(HardwareUnavailable, match="no boot was measured"):
        provider.quote(ak, [0], NONCE, event_log=True)
    path = tmp_path / "log.bin"
    path.write_bytes(BOOT.log())
    quote = provider.quote(ak, QUOTED, NONCE, event_log=path)
    assert quote.event_log == BOOT.log()
    result = verify(ak, quote, quote.event_log)
    assert result.event_log_events_after_quote == len(BOOT.events)
    assert result.boot_facts is not None and result.boot_facts.secure_boot is None
    with pytest.raises(AttestationCheckFailed, match="SecureBoot variable is not in the quoted"):
        verify(ak, quote, quote.event_log, boot_policy=BootPolicy(secure_boot=True))


def test_reading_the_kernels_log_says_why_it_cannot() -> None:
    """Where securityfs has no TPM log (this machine, CI): HardwareUnavailable saying so."""
    from entra_keys.tcg.eventlog import KERNEL_EVENT_LOG

    if os.access(KERNEL_EVENT_LOG, os.R_OK):
        assert parse_event_log(read_event_log()).events
        return
    with pytest.raises(HardwareUnavailable, match="binary_bios_measurements"):
        read_event_log()


def test_a_log_readable_by_root_only_says_so(tmp_path: Path) -> None:
    """The kernel's log is 0440 root:root (or a distribution's group): a reader without the
    right gets HardwareUnavailable with what to do (as root, this runs the read as nobody)."""
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(BOOT.log())
    path.chmod(0o400)
    code = (
        "from entra_keys.tcg.eventlog import read_event_log\n"
        "from entra_keys.errors import HardwareUnavailable\n"
        f"try:\n    read_event_log({str(path)!r})\n"
        "except HardwareUnavailable as exc:\n    print(exc)\n"
    )
    src = str(Path(read_event_log.__code__.co_filename).parents[2])
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is needed to read as another user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "readable by root only" in done.stdout and "run as root or copy it" in done.stdout
    with pytest.raises(HardwareUnavailable, match=r"no event log at .*: no such file"):
        read_event_log(tmp_path / "missing")
    big = tmp_path / "big"
    with big.open("wb") as file:
        file.truncate(16 * 1024 * 1024 + 1)
    with pytest.raises(InvalidData, match="more than"):
        read_event_log(big)


def test_the_quote_json_carries_the_log_strictly() -> None:
    quote = Quote(b"a", b"s", "sha256", {0: bytes(32)}, NONCE, False, event_log=BOOT.log())
    again = quote_from_json(quote_to_json(quote))
    assert again == quote and again.event_log == BOOT.log()
    plain = dataclasses.replace(quote, event_log=None)
    assert "event_log" not in json.loads(quote_to_json(plain))
    assert quote_from_json(quote_to_json(plain)).event_log is None
    document = json.loads(quote_to_json(quote))
    largest = dataclasses.replace(quote, event_log=bytes(MAX_LOG_SIZE))  # the parser's limit
    assert len(quote_to_json(largest)) <= MAX_QUOTE_JSON
    assert quote_from_json(quote_to_json(largest)).event_log == largest.event_log
    for bad in ("not base64!", 7):
        with pytest.raises(InvalidData, match="event_log"):
            quote_from_json({**document, "event_log": bad})


# --- End to end on a swtpm of the module's own ------------------------------------------------


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Swtpm, Path]]:
    """A swtpm of this module's own (its PCRs are extended for good), booted: the synthetic
    boot extended into every active bank, its log written beside it."""
    if not swtpm_available():
        unavailable("swtpm is not installed")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        unavailable(f"tpm2-pytss is not importable ({exc})")
    directory = tmp_path_factory.mktemp("measured")
    tpm = Swtpm(directory / "tpm")
    try:
        tpm.start()
    except SwtpmError as exc:
        unavailable(f"swtpm does not start: {exc}")
    log_path = directory / "binary_bios_measurements"
    try:
        log = BOOT.extend(tpm.tcti, log_path)
        assert parse_event_log(log).banks == ("sha1", "sha256")  # swtpm's active banks
        yield tpm, log_path
    finally:
        left = transient_handles(tpm.tcti)
        tpm.stop()
        assert left == [], f"transient objects left in the TPM: {left}"


@pytest.fixture(scope="module")
def tpm_quote(booted: tuple[Swtpm, Path]) -> tuple[Quote, bytes]:
    """A TPM quote of the booted PCRs with the log read after it, and the AK's TPMT_PUBLIC."""
    tpm, log_path = booted
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        ak = provider.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
        return provider.quote(ak, QUOTED, NONCE, event_log=log_path), ak.tpm_public


def test_end_to_end_a_tpm_quote_with_its_log_meets_the_boot_policy(
    tpm_quote: tuple[Quote, bytes],
) -> None:
    quote, ak_public = tpm_quote
    assert quote.hardware_backed and quote.event_log == BOOT.log(["sha1", "sha256"])
    quote = quote_from_json(quote_to_json(quote))  # as a device sends it
    assert quote.event_log is not None
    policy = TrustPolicy(enrolled_aks=[ak_public])
    for expected in ({quote.pcr_bank: quote.pcr_values}, {}):
        result = verify_quote(quote.attest, quote.signature, ak_public, NONCE, expected,
                              policy=policy, event_log=quote.event_log,
                              boot_policy=full_policy(BOOT))  # fmt: skip
        assert result.hardware_backed and result.checks[-2:] == ("event-log", "boot-policy")
        assert result.boot_facts is not None and result.boot_facts.secure_boot is True


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_end_to_end_a_tampered_log_is_refused(tpm_quote: tuple[Quote, bytes], name: str) -> None:
    quote, ak_public = tpm_quote
    tamper, pcr = TAMPERED[name]
    events = list(BOOT.events)
    log = write_log(events, ("sha1", "sha256"), tamper(events))
    policy = TrustPolicy(enrolled_aks=[ak_public])
    with pytest.raises(AttestationCheckFailed, match=f"sha256 PCR {pcr} is ") as caught:
        verify_quote(quote.attest, quote.signature, ak_public, NONCE,
                     {quote.pcr_bank: quote.pcr_values}, policy=policy, event_log=log)  # fmt: skip
    assert caught.value.check is Check.EVENT_LOG
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_quote(quote.attest, quote.signature, ak_public, NONCE, {}, policy=policy,
                     event_log=log)  # fmt: skip
    assert caught.value.check is Check.PCR_DIGEST


def test_end_to_end_a_relabelled_log_is_refused(tpm_quote: tuple[Quote, bytes]) -> None:
    """A TPM quote, and the log's PCR 7 separator and shim's authority relabelled as Secure
    Boot variables (the log still replays to the quote): BOOT_POLICY."""
    quote, ak_public = tpm_quote
    separator = index_of(BOOT.events, lambda e: e.pcr == 7 and e.event_type == EV_SEPARATOR)
    shim = index_of(BOOT.events, lambda e: e.event_type == EV_EFI_VARIABLE_AUTHORITY, 2)
    events = list(BOOT.events)
    for at in (separator, shim):
        events[at] = dataclasses.replace(events[at], event_type=EV_EFI_VARIABLE_DRIVER_CONFIG)
    policy = TrustPolicy(enrolled_aks=[ak_public])
    db_only = BootPolicy(allowed_signers=[signer(BOOT, "db")])
    log = write_log(events, ("sha1", "sha256"))
    with pytest.raises(AttestationCheckFailed, match="PCR 7") as caught:
        verify_quote(quote.attest, quote.signature, ak_public, NONCE,
                     {quote.pcr_bank: quote.pcr_values}, policy=policy,
                     event_log=log, boot_policy=db_only)  # fmt: skip
    assert caught.value.check is Check.BOOT_POLICY


def test_end_to_end_a_log_read_after_more_was_measured(booted: tuple[Swtpm, Path]) -> None:
    """After the quote the OS measures more (IMA into PCR 10, and PCR 11), and the log read then
    holds it: the quote ties to its prefix (PCRs 10 and 11 quoted at their start values), the
    later events are counted and never read. (Only PCRs no other test here quotes change.)"""
    tpm, log_path = booted
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        ak = provider.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
        ak_public = ak.tpm_public
        quote = provider.quote(ak, [*QUOTED, 10, 11], NONCE)
    later_events = (
        BootEvent(10, EV_IPL, b"boot_aggregate\0", b"ima boot aggregate"),
        BootEvent(11, EV_IPL, b"later\0", b"later"),
    )
    later = SyntheticBoot(**{**vars(BOOT), "events": later_events})
    banks = ["sha1", "sha256"]
    appended = later.extend(tpm.tcti)[len(spec_id_event(banks)) :]
    log = log_path.read_bytes() + appended
    result = verify_quote(quote.attest, quote.signature, ak_public, NONCE, {},
                          policy=TrustPolicy(enrolled_aks=[ak_public]), event_log=log)  # fmt: skip
    assert result.event_log_events_after_quote == 2
    assert result.measured_boot is not None
    assert {10, 11} <= set(result.measured_boot.pcrs["sha256"])


# --- Fuzz: mutated logs against a fixed quote ---------------------------------------------------


@st.composite
def mutated_boot_logs(draw: st.DrawFn) -> bytes:
    data = bytearray(BOOT.log())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


@functools.cache
def quoted_body() -> TPMSQuoteInfo:
    """The TPMS_QUOTE_INFO of a quote of the boot (a software AK's, made once)."""
    ak = open_provider("software").create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    body = TPMSAttest.parse(quote_of(ak, BOOT).attest).attested
    assert isinstance(body, TPMSQuoteInfo)
    return body


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated_boot_logs())
def test_fuzz_logs_tied_to_a_quote(data: bytes) -> None:
    """Whatever the log, tying it to a quote (with and without the expected values) and
    checking a policy ends in a result or an AttestationCheckFailed, never another error."""
    values = BOOT.replay()["sha256"]
    quote = quoted_body()
    sha256 = HASH_ALGORITHMS[0x000B]
    expected = {0x000B: {p: values[p] for p in QUOTED}}
    for tie in (
        lambda: tie_event_log(quote, sha256, data, expected),
        lambda: log_as_expected(quote, sha256, data, allow_sha1=False)[0],
    ):
        try:
            measured = tie()
        except AttestationCheckFailed:
            continue
        policy = full_policy(BOOT)
        if policy.violations(measured.facts):
            with pytest.raises(AttestationCheckFailed) as refused:
                policy.check(measured.facts)
            assert refused.value.check is Check.BOOT_POLICY


def test_the_verifier_loads_the_event_log_modules_only_for_a_log() -> None:
    """A verifier of quotes without logs does not pay for the event log's modules."""
    code = (
        "import sys\nfrom entra_keys.attestation import verify_quote, TrustPolicy\n"
        "print(sorted(m for m in sys.modules if 'eventlog' in m or 'measured' in m))"
    )
    src = str(Path(read_event_log.__code__.co_filename).parents[2])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": src}, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"
