"""Measured boot for the verifier: the TCG event log tied to a verified quote, and a policy over
what booted (not over PCR values).

A quote proves its PCR digest; a log says what the PCRs mean once its replay gives the quoted
values (``tie_event_log``: against the values the caller expects; ``log_as_expected``: where
the caller has none, the log's replay must hash to the quote's pcrDigest). A log read after the
quote may hold later events: the part the quote covers is the longest prefix whose replay gives
the quoted values (``EventLog.matching_prefix``), and the rest is counted, never read. The boot
facts come from that prefix only, from the quoted PCRs the log explains, read through the
quoted banks' digests, and only from data those digests measured
(``tcg.eventlog.data_matches``).

``BootPolicy`` states what may have booted; ``BootPolicy.check(facts)`` raises
``AttestationCheckFailed`` with ``Check.BOOT_POLICY`` naming the first fact that breaks it.
It fails closed: a fact it reads that the quoted events do not give, an event it cannot
account for in a PCR it reads (an event relabelled to hide it), or any event whose data is not
what its digest measured, is a refusal.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .._json import Members
from ..errors import AttestationCheckFailed, Check, InvalidData, MalformedAttestation
from ..tcg._efi import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, SHIM_LOCK
from ..tcg.eventlog import (
    LOADER_COMMANDS,
    MAX_LOG_SIZE,
    BootFacts,
    EfiVariable,
    EventLog,
    LoadedImage,
    Measurement,
    Separator,
    SignatureEntry,
    TaggedEvent,
    parse_event_log,
    sipa_records,
)
from ..tcg.structures import (
    HASH_ALGORITHMS,
    TPM_ALG_SHA1,
    HashInfo,
    TPMSQuoteInfo,
    hash_info_by_name,
)
from ..tcg.wire import FrozenMapping

#: EV_NO_ACTION: logged, never extended (PFP 1.05 §10.4.5).
_EV_NO_ACTION = 0x00000003

__all__ = [
    "BootPolicy",
    "MeasuredBoot",
    "log_as_expected",
    "owned_event_log",
    "parse_event_log",
    "tie_event_log",
]


@dataclass(frozen=True)
class MeasuredBoot:
    """An event log tied to a verified quote: the log, how many of its events the quote covers
    (``events_quoted``: the matching prefix) and how many were logged after it, the PCRs of each
    bank the log was checked against (quoted PCRs it extends, or that are quoted at their start
    value), and the boot facts of the covered events."""

    log: EventLog
    events_quoted: int
    events_after_quote: int
    pcrs: Mapping[str, tuple[int, ...]]
    facts: BootFacts


def owned_event_log(data: object) -> EventLog | bytes | None:
    """An event log as the verifier takes it: a parsed ``EventLog`` (immutable), or bytes-like
    (copied, so a caller's later change reaches nothing), or None; a typed refusal otherwise."""
    if data is None or isinstance(data, EventLog):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            size = len(data)  # before copying it
            if size > MAX_LOG_SIZE:
                raise MalformedAttestation(
                    f"event log: {size} bytes is more than the {MAX_LOG_SIZE} allowed"
                )
            return bytes(data)
        except ValueError:  # a released memoryview
            raise MalformedAttestation("the event log is a released memoryview") from None
    raise MalformedAttestation(
        f"the event log is bytes, a bytearray, a memoryview or an EventLog, not "
        f"{type(data).__name__}"
    )


def _parsed(log: EventLog | bytes) -> EventLog:
    if isinstance(log, EventLog):
        return log
    try:
        return parse_event_log(log)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc


def _bank(alg: int) -> str:
    info = HASH_ALGORITHMS.get(alg)
    return info.name if info is not None else f"0x{alg:04x}"


def _selection(body: TPMSQuoteInfo) -> dict[int, frozenset[int]]:
    """The quote's PCR selection by TPM_ALG id, in its order (a PCR_SELECTION refusal for one
    that names a bank twice)."""
    try:
        return body.pcr_select.as_dict()
    except InvalidData as exc:
        raise AttestationCheckFailed(
            f"the quote's PCR selection is refused: {exc}", Check.PCR_SELECTION
        ) from exc


def _banks_in_log(log: EventLog, selection: Mapping[int, frozenset[int]]) -> None:
    for alg in selection:
        if _bank(alg) not in log.replayable_banks:
            raise AttestationCheckFailed(
                f"the event log has no {_bank(alg)} bank to replay the quoted PCRs with (it "
                f"has {', '.join(log.replayable_banks) or 'none'})",
                Check.EVENT_LOG,
            )


def _short(value: bytes | None) -> str:
    if value is None:
        return "nothing"
    text = value.hex()
    return text if len(text) <= 16 else f"{text[:8]}…{text[-8:]}"


def tie_event_log(
    body: TPMSQuoteInfo,
    info: HashInfo,
    log_input: EventLog | bytes,
    expected: Mapping[int, Mapping[int, bytes]],
) -> MeasuredBoot:
    """The event log checked against the quoted PCR values the caller expects (``expected``:
    {TPM_ALG id: {PCR: value}}, already checked against the quote's digest). Each quoted PCR
    the log extends, and each quoted at its start value, must replay to its value at one point
    of the log (``info``'s hash of them being the quote's pcrDigest); PCRs the log never extends
    (IMA's PCR 10, PCRs of later software) are left to the caller's values and read for no fact.
    An EVENT_LOG refusal names the first PCR whose value no prefix of the log gives."""
    log = _parsed(log_input)
    selection = _selection(body)
    _banks_in_log(log, selection)
    extended: dict[str, set[int]] = {_bank(alg): set() for alg in selection}
    for event in log.events:
        if event.event_type != _EV_NO_ACTION:  # which extends nothing
            for bank, seen in extended.items():
                if bank in event.digests:
                    seen.add(event.pcr)
    covered: dict[str, list[int]] = {}
    quoted: dict[str, dict[int, bytes]] = {}
    for alg, pcrs in selection.items():
        bank = _bank(alg)
        values = expected[alg]
        quoted[bank] = {pcr: values[pcr] for pcr in sorted(pcrs)}
        mine = [
            pcr
            for pcr in sorted(pcrs)
            if pcr in extended[bank] or values[pcr] == log.initial_value(bank, pcr)
        ]
        if mine:
            covered[bank] = mine
    if not any(pcr in extended[bank] for bank, pcrs in covered.items() for pcr in pcrs):
        raise AttestationCheckFailed(
            "the event log extends none of the quoted PCRs "
            f"({', '.join(f'{b}:{sorted(p)}' for b, p in quoted.items())})",
            Check.EVENT_LOG,
        )
    wanted = {bank: {pcr: quoted[bank][pcr] for pcr in pcrs} for bank, pcrs in covered.items()}
    digest = info.digest(b"".join(value for pcrs in wanted.values() for value in pcrs.values()))
    prefix = log.matching_prefix(covered, info.name, digest)
    if prefix is None:
        raise AttestationCheckFailed(_mismatch(log, wanted), Check.EVENT_LOG)
    return _measured(log, prefix, covered)


def _mismatch(log: EventLog, quoted: Mapping[str, Mapping[int, bytes]]) -> str:
    """The EVENT_LOG message: the first quoted PCR (in the quote's order) whose value no prefix
    of the log reaches, with the quoted and the replayed (whole log) values."""
    values = {
        bank: {pcr: log.initial_value(bank, pcr) for pcr in pcrs} for bank, pcrs in quoted.items()
    }
    reached = {(b, p) for b, pcrs in quoted.items() for p, v in pcrs.items() if values[b][p] == v}
    hashers = {bank: hash_info_by_name(bank).digest for bank in quoted}
    for event in log.events:
        if event.event_type == _EV_NO_ACTION:
            continue
        for bank, pcrs in quoted.items():
            digest = event.digests.get(bank)
            if digest is None or event.pcr not in pcrs:
                continue
            values[bank][event.pcr] = hashers[bank](values[bank][event.pcr] + digest)
            if values[bank][event.pcr] == pcrs[event.pcr]:
                reached.add((bank, event.pcr))
    for bank, pcrs in quoted.items():
        for pcr, value in pcrs.items():
            if (bank, pcr) not in reached:
                return (
                    f"the event log does not replay to the quoted PCR values: {bank} PCR {pcr} "
                    f"is {_short(value)} in the quote, {_short(values[bank][pcr])} replayed (an "
                    "event edited, dropped, added, reordered or without this bank's digest)"
                )
    return (
        "the event log reaches each quoted PCR value but never all of them at once: its events "
        "are out of order across PCRs"
    )


def log_as_expected(
    body: TPMSQuoteInfo, info: HashInfo, log_input: EventLog | bytes, allow_sha1: bool
) -> tuple[MeasuredBoot, dict[int, dict[int, bytes]]]:
    """Where the caller expects no PCR values: the log's replay of every PCR the quote selects
    (a bank the log lacks is an EVENT_LOG refusal) must hash to the quote's pcrDigest at some
    point of the log (else PCR_DIGEST: these are the expected values, as a caller's would be).
    Returns the tie and the replayed values {TPM_ALG id: {PCR: value}} of that point."""
    log = _parsed(log_input)
    selection = _selection(body)
    if not selection or not any(selection.values()):
        raise AttestationCheckFailed("the quote selects no PCR", Check.PCR_SELECTION)
    for alg in selection:
        if alg not in HASH_ALGORITHMS or (alg == TPM_ALG_SHA1 and not allow_sha1):
            raise AttestationCheckFailed(f"the quoted PCR bank {_bank(alg)} is refused", Check.HASH)
    _banks_in_log(log, selection)
    wanted = {_bank(alg): sorted(pcrs) for alg, pcrs in selection.items()}
    prefix = log.matching_prefix(wanted, info.name, body.pcr_digest)
    if prefix is None:
        shown = ", ".join(f"{bank}:{pcrs}" for bank, pcrs in wanted.items())
        raise AttestationCheckFailed(
            f"the quoted PCR digest is not the {info.name} of the event log's replay of "
            f"{shown} at any point of the log (no PCR values were given to name the one that "
            "differs)",
            Check.PCR_DIGEST,
        )
    replayed = log.replay(upto=prefix)
    values = {
        alg: {pcr: replayed[_bank(alg)][pcr] for pcr in sorted(pcrs)}
        for alg, pcrs in selection.items()
    }
    return _measured(log, prefix, wanted), values


def _measured(log: EventLog, prefix: int, covered: Mapping[str, Sequence[int]]) -> MeasuredBoot:
    return MeasuredBoot(
        log=log,
        events_quoted=prefix,
        events_after_quote=len(log.events) - prefix,
        pcrs=FrozenMapping({bank: tuple(pcrs) for bank, pcrs in covered.items()}),
        facts=log.facts(upto=prefix, pcrs=covered),
    )


# --- the boot policy ----------------------------------------------------------------------------

#: The event types a PCR the policy reads may hold (PFP 1.05 §3.3.4 for PCRs 0-7; GRUB's and
#: systemd's own for PCRs 8 and 12), and whether each must have data that its digest measured
#: (True), or is a digest of something else (False: images, firmware regions). Any other type
#: there is refused: the type is in no digest, so an event relabelled to a type the facts do
#: not read would otherwise hide (a boot application, a version, an authority, a command line).
_PCR_EVENTS: Mapping[int, Mapping[str, bool]] = {
    0: {
        "EV_S_CRTM_VERSION": True,
        "EV_SEPARATOR": True,
        "EV_S_CRTM_CONTENTS": False,
        "EV_POST_CODE": False,
        "EV_POST_CODE2": False,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB": False,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB2": False,
        "EV_EFI_SPDM_FIRMWARE_BLOB": False,
        "EV_EFI_HCRTM_EVENT": False,
        "EV_NONHOST_CODE": False,
        "EV_NONHOST_CONFIG": False,
        "EV_NONHOST_INFO": False,
    },
    4: {
        "EV_EFI_BOOT_SERVICES_APPLICATION": False,
        "EV_EFI_ACTION": True,
        "EV_SEPARATOR": True,
        "EV_OMIT_BOOT_DEVICE_EVENTS": True,
    },
    7: {
        "EV_EFI_VARIABLE_DRIVER_CONFIG": True,
        "EV_EFI_VARIABLE_AUTHORITY": True,
        "EV_SEPARATOR": True,
        "EV_EFI_ACTION": True,
    },
    # GRUB's strings (and old systemd-boot's command line); no separator: a 4-byte string
    # relabelled as one would hide
    8: {"EV_IPL": True},
    # systemd's command lines (UTF-16 EV_IPL). systemd-stub's EV_EVENT_TAG add-ons and its
    # credentials are digests of files, so a command line relabelled to one could not be told
    # from one: a policy that reads command lines refuses them
    12: {"EV_IPL": True},
}
#: Windows' PCRs 12-14: SIPA containers (their digest is of their data) and the "WBCL"
#: separator that closes each.
_WINDOWS_EVENTS: Mapping[str, bool] = {"EV_EVENT_TAG": True, "EV_SEPARATOR": True}
#: The separator values of the PFP (PFP 1.05 §3.3.2: 00000000h, or FFFFFFFFh), and Windows'
#: "WBCL" in PCRs 12-14.
_SEPARATOR_VALUES = frozenset({0, 0xFFFFFFFF})
_WBCL = 0x4C434257
#: The variables the PFP has firmware measure as EV_EFI_VARIABLE_DRIVER_CONFIG in PCR 7
#: (PFP 1.05 §3.3.4.8: SecureBoot, PK, KEK, db, dbx, and dbt, dbr where present; the UEFI
#: 2.10 §32.3 mode variables), each once, before PCR 7's separator.
_SECURE_BOOT_VARIABLES = frozenset(
    {
        (EFI_GLOBAL_VARIABLE, "SecureBoot"),
        (EFI_GLOBAL_VARIABLE, "PK"),
        (EFI_GLOBAL_VARIABLE, "KEK"),
        (EFI_GLOBAL_VARIABLE, "DeployedMode"),
        (EFI_GLOBAL_VARIABLE, "AuditMode"),
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbt"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbr"),
    }
)
#: Authorities that record shim's state, not an entry that verified an image: its SBAT level
#: and whether MokListTrusted is on. Every other authority must name its verifier.
_STATE_AUTHORITIES = frozenset({(SHIM_LOCK, "SbatLevel"), (SHIM_LOCK, "MokListTrusted")})
_HEX = re.compile(r"[0-9a-f]+")


_NOT_BY_SUBJECT = (
    " (a signer is named by its certificate's SHA-256 fingerprint or SubjectPublicKeyInfo "
    "SHA-256, never by subject: a subject is a name any certificate may carry)"
)


def _hex_set(values: Iterable[str | bytes] | None, what: str) -> frozenset[str] | None:
    """Digests as lowercase hex (bytes taken as the raw digest; "sha256:" prefixes dropped)."""
    if values is None:
        return None
    found = _id_set(values, what)
    for value in found:
        if not _HEX.fullmatch(value) or len(value) % 2 or not 20 <= len(value) // 2 <= 64:
            why = _NOT_BY_SUBJECT if what == "allowed_signers" else ""
            raise InvalidData(f"boot policy: {what}: {value!r:.80} is not a hex digest{why}")
    return found


def _id_set(values: Iterable[str | bytes] | None, what: str) -> frozenset[str]:
    """Names of entries: hex digests or fingerprints (lowercased) or certificate subjects."""
    if values is None:
        return frozenset()
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidData(f"boot policy: {what} is a list, not one {type(values).__name__}")
    out: set[str] = set()
    for value in values:
        text = value.hex() if isinstance(value, bytes | bytearray) else value
        if not isinstance(text, str) or not text:
            raise InvalidData(f"boot policy: {what} holds {value!r:.40}, not a non-empty string")
        lowered = text.lower().removeprefix("sha256:")
        out.add(lowered if _HEX.fullmatch(lowered) else text)
    return frozenset(out)


def _ids(entry: SignatureEntry, *, subject: bool = False) -> set[str]:
    """What a policy may name a signature database entry by: its hash (hash entries), or a
    certificate's SHA-256 fingerprint and SubjectPublicKeyInfo SHA-256, and where ``subject``
    (a list of what to refuse: a name matches every certificate that carries it) its subject
    (RFC 4514)."""
    found = set()
    if entry.hash_hex is not None:
        found.add(entry.hash_hex)
    certificate = entry.certificate
    if certificate is not None:
        found.add(hashlib.sha256(certificate).hexdigest())
        if entry.spki_sha256 is not None:
            found.add(entry.spki_sha256)
        if subject and entry.subject is not None:
            found.add(entry.subject)
    return found


def _revocations(entry: SignatureEntry) -> set[str]:
    """What a dbx entry revokes as ``required_dbx`` names it: an image hash in a list firmware
    matches images against (``SignatureEntry.image_hash_hex``), or a certificate by its SHA-256
    fingerprint; a certificate's TBS hash (EFI_CERT_X509_SHA*) revokes no image's hash."""
    found = set()
    if entry.image_hash_hex is not None:
        found.add(entry.image_hash_hex)
    if entry.certificate is not None:
        found.add(hashlib.sha256(entry.certificate).hexdigest())
    return found


@dataclass(frozen=True)
class BootPolicy:
    """What may have booted, stated over the boot facts of the quoted events. Every requirement
    left at None (or False) is not checked; an empty list allows nothing. Each reads the PCRs
    named, and each of those must be quoted and explained by the log (``BootFacts.pcrs``).

    - ``secure_boot``: True, Secure Boot must have been on; False, off (PCR 7).
    - ``allowed_boot_loaders``: Authenticode digests (hex, any quoted bank's size): every boot
      application the firmware, shim or a loader measured (PCR 4) must be one of these or of
      ``allowed_kernels``.
    - ``allowed_kernels``: the last boot application measured in PCR 4 (the kernel or UKI, where
      it was loaded through the firmware's or shim's LoadImage) must be one of these. A kernel
      GRUB loads without shim is measured only as a file in PCR 9, whose name is a label no
      digest covers: it cannot be proved, and the policy refuses, as it does a GRUB loader
      command (``chainloader`` then ``linux``...) in PCR 8 after that application.
    - ``allowed_signers``: every db (or shim) entry that verified an image (the authority events
      of PCR 7) must be named here: a certificate by its SHA-256 fingerprint or its
      SubjectPublicKeyInfo SHA-256 (never by subject, which any certificate may carry), a hash
      entry (an image allowed by its hash in db or shim's MokList) by the hash. An authority
      that names no verifier is refused, but shim's SbatLevel and MokListTrusted state.
    - ``allowed_kernel_cmdline_patterns``: regular expressions; every command line measured in
      PCRs 8 and 12 must match one in full, and there must be one: the text under any GRUB
      label (``kernel_cmdline``, ``module_cmdline``, or none, or ``grub_cmd`` before a path),
      the arguments of every GRUB command that starts a kernel or an image (``linux``,
      ``chainloader``, ``multiboot``, ``module``... whatever its label), systemd's lines
      (``BootFacts.command_lines``), none holding what Linux splits or groups otherwise than a
      pattern (byte A0, other whitespace, controls, stray quotes: ``_read_otherwise``). Every
      string there must be one the policy can read (GRUB's: strict UTF-8);
      systemd-stub's add-ons and credentials in PCR 12 are refused (digests of files, which a
      relabelled line could pass for).
    - ``required_dbx``: hashes (or certificate fingerprints) dbx must hold (PCR 7), an image
      hash counted only in a list firmware matches images against (not a TBS hash).
    - ``forbidden_db``: hashes, certificate fingerprints or subjects db must not hold (PCR 7).
    - ``allowed_firmware_versions``: every EV_S_CRTM_VERSION string must be one of these (PCR 0).
    - Windows (SIPA events, PCRs 12-14): ``require_bitlocker`` (an unlock was measured),
      ``require_code_integrity``, ``forbid_test_signing``, ``forbid_debugging`` (boot, kernel
      and hypervisor debugging), ``require_elam`` (an ELAM driver was measured).

    Always: no event whose data is not what its digest measured; in every PCR a requirement
    reads, only the event types the PFP puts there, with their data matching their digests,
    in the structure the PFP gives it: exactly one separator (00000000h or FFFFFFFFh, no error
    separator) in each of PCRs 0-7; in PCR 7, Secure Boot variables only before it, each once,
    each a variable the PFP measures there holding what that variable holds, and authorities
    that are UEFI_VARIABLE_DATA; in PCR 0 exactly one S-CRTM version; in Windows' PCRs 12-14,
    SIPA containers and at most one "WBCL" separator. The type of an event is in no digest:
    these rules are what keep an event from being relabelled to hide it.
    ``BootPolicy.from_json`` reads the same as a JSON object (lists for the sets).
    """

    secure_boot: bool | None = None
    allowed_boot_loaders: Collection[str] | None = None
    allowed_kernels: Collection[str] | None = None
    allowed_signers: Collection[str] | None = None
    allowed_kernel_cmdline_patterns: Collection[str] | None = None
    required_dbx: Collection[str] | None = None
    forbidden_db: Collection[str] | None = None
    allowed_firmware_versions: Collection[str] | None = None
    require_bitlocker: bool = False
    require_code_integrity: bool = False
    forbid_test_signing: bool = False
    forbid_debugging: bool = False
    require_elam: bool = False
    _patterns: tuple[re.Pattern[str], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if self.secure_boot is not None and not isinstance(self.secure_boot, bool):
            raise InvalidData("boot policy: secure_boot is True, False or None")
        for name in ("allowed_boot_loaders", "allowed_kernels", "required_dbx", "allowed_signers"):
            put(name, _hex_set(getattr(self, name), name))
        for name in ("forbidden_db", "allowed_firmware_versions"):
            value = getattr(self, name)
            put(name, None if value is None else _id_set(value, name))
        for name in (
            "require_bitlocker",
            "require_code_integrity",
            "forbid_test_signing",
            "forbid_debugging",
            "require_elam",
        ):
            if not isinstance(getattr(self, name), bool):
                raise InvalidData(f"boot policy: {name} is True or False")
        patterns = self.allowed_kernel_cmdline_patterns
        if patterns is not None:
            if isinstance(patterns, str) or not isinstance(patterns, Iterable):
                raise InvalidData("boot policy: allowed_kernel_cmdline_patterns is a list of str")
            texts = tuple(patterns)  # read once: a generator is not read empty by the check
            if not all(isinstance(p, str) for p in texts):
                raise InvalidData("boot policy: allowed_kernel_cmdline_patterns is a list of str")
            try:
                compiled = tuple(re.compile(p) for p in texts)
            except re.error as exc:
                raise InvalidData(f"boot policy: a kernel command line pattern: {exc}") from None
            put("allowed_kernel_cmdline_patterns", texts)
            put("_patterns", compiled)

    @classmethod
    def from_json(cls, source: str | bytes | Mapping[str, Any]) -> BootPolicy:
        """A policy from a JSON object with the field names as members (all optional; sets as
        lists of strings), read strictly: an unknown member or a wrong type is InvalidData."""
        doc = Members.load(source, "the boot policy")
        names = [f.name for f in fields(cls) if f.init]
        doc.only((), names)
        given: dict[str, Any] = {}
        for name in names:
            if doc.optional(name) is None:
                continue
            if name == "secure_boot" or name.startswith(("require_", "forbid_")):
                given[name] = doc.boolean(name)
            else:
                given[name] = doc.texts(name)
        return cls(**given)

    def reads(self) -> tuple[int, ...]:
        """The PCRs this policy reads facts from."""
        found: set[int] = set()
        if (
            self.secure_boot is not None
            or self.allowed_signers is not None
            or self.required_dbx is not None
            or self.forbidden_db is not None
        ):
            found.add(7)
        if self.allowed_boot_loaders is not None or self.allowed_kernels is not None:
            found.add(4)
        if self.allowed_kernels is not None:
            found.add(8)  # GRUB's loader commands after the kernel (``_loaded_after``)
        if self.allowed_kernel_cmdline_patterns is not None:
            found |= {8, 12}
        if self.allowed_firmware_versions is not None:
            found.add(0)
        if self._windows():
            found |= {12, 13, 14}
        return tuple(sorted(found))

    def _windows(self) -> bool:
        return (
            self.require_bitlocker
            or self.require_code_integrity
            or self.forbid_test_signing
            or self.forbid_debugging
            or self.require_elam
        )

    def violations(self, facts: BootFacts) -> tuple[str, ...]:
        """Every way the facts break this policy, each naming the fact (empty: they meet it)."""
        found: list[str] = []
        for mismatch in facts.data_mismatches:
            found.append(
                f"event {mismatch.event_index} ({mismatch.event_type}): its data is not what "
                "its digest measured"
            )
        pcrs = [(pcr, self._windows() and pcr in (12, 13, 14)) for pcr in self.reads()]
        for pcr, windows in pcrs:
            found += _pcr_events(facts, pcr, windows=windows)
        found += self._secure_boot_db(facts)
        found += self._images(facts)
        found += self._cmdlines(facts)
        found += self._firmware(facts)
        found += self._windows_facts(facts)
        for pcr, windows in pcrs:
            found += _pcr_structure(facts, pcr, windows=windows)
        return tuple(found)

    def check(self, facts: BootFacts) -> None:
        """Raise BOOT_POLICY naming the first fact that breaks the policy (and how many more)."""
        found = self.violations(facts)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise AttestationCheckFailed(f"boot policy: {found[0]}{more}", Check.BOOT_POLICY)

    def _secure_boot_db(self, facts: BootFacts) -> list[str]:
        found = []
        if self.secure_boot is not None and facts.secure_boot is not self.secure_boot:
            if facts.secure_boot is None:
                found.append("Secure Boot: the SecureBoot variable is not in the quoted events")
            else:
                found.append(f"Secure Boot is {'on' if facts.secure_boot else 'off'}")
        if self.required_dbx is not None:
            if facts.dbx is None:
                found.append("dbx is not in the quoted events")
            else:
                held = {name for entry in facts.dbx for name in _revocations(entry)}
                missing = sorted(set(self.required_dbx) - held)
                if missing:
                    shown = ", ".join(_short(bytes.fromhex(m)) for m in missing[:3])
                    found.append(f"dbx lacks {len(missing)} required revocation(s): {shown}")
        if self.forbidden_db is not None:
            if facts.db is None:
                found.append("db is not in the quoted events")
            else:
                for entry in facts.db:
                    hit = _ids(entry, subject=True) & set(self.forbidden_db)
                    if hit:
                        found.append(f"db holds a forbidden entry ({sorted(hit)[0]:.80})")
        if self.allowed_signers is not None:
            found += self._signers(facts, frozenset(self.allowed_signers))
        return found

    def _signers(self, facts: BootFacts, allowed: frozenset[str]) -> list[str]:
        """Every authority's entry, a certificate or a hash, must be an allowed signer; an
        authority that names neither is refused, but shim's state (``_STATE_AUTHORITIES``)."""
        found = []
        verifiers = [a for a in facts.authorities if (a.guid, a.variable) not in _STATE_AUTHORITIES]
        if not verifiers:
            found.append("no image verifier (authority event) is in the quoted events")
        for authority in verifiers:
            entry = authority.entry
            where = f"{authority.variable}, event {authority.event_index}"
            if entry is None or entry.kind == "other":
                found.append(
                    f"an image was verified by an entry of {where} that is neither a "
                    "certificate nor a hash: no signer can be named for it"
                )
            elif not _ids(entry) & allowed:
                if entry.certificate is not None:
                    print_ = hashlib.sha256(entry.certificate).hexdigest()
                    name = f"{entry.subject or 'a certificate'} (SHA-256 {print_})"
                else:
                    name = f"the {entry.type_name} hash {entry.hash_hex}"
                found.append(
                    f"an image was verified by {name:.200} ({where}), not an allowed signer"
                )
        return found

    def _images(self, facts: BootFacts) -> list[str]:
        loaders, kernels = self.allowed_boot_loaders, self.allowed_kernels
        if loaders is None and kernels is None:
            return []
        apps = facts.boot_applications
        if not apps:
            return ["no boot application (PCR 4) is in the quoted events"]
        found = []
        if kernels is not None:  # the last one must be a kernel; the others loaders or kernels
            last = apps[-1]
            if not {d.hex() for d in last.digests.values()} & set(kernels):
                found.append(
                    f"the kernel (the last boot application, event {last.event_index}: "
                    f"{_digest_text(last.digests)}) is not an allowed kernel"
                )
            found += _loaded_after(facts, last)
            apps = apps[:-1]
        allowed = set(loaders or ()) | set(kernels or ())
        for app in apps:
            if not {d.hex() for d in app.digests.values()} & allowed:
                found.append(
                    f"boot application {_digest_text(app.digests)} (event {app.event_index}, "
                    f"logged as {app.device_path or 'no path'!s:.120}) is not an allowed boot "
                    "loader or kernel"
                )
        return found

    def _cmdlines(self, facts: BootFacts) -> list[str]:
        if self.allowed_kernel_cmdline_patterns is None:
            return []
        found = []
        for measured in facts.boot_loader:
            if measured.pcr not in (8, 12) or measured.event_type != "EV_IPL":
                continue  # other types there: refused by _pcr_events
            if measured.text_measured and measured.text is None:
                found.append(
                    f"event {measured.event_index} (PCR {measured.pcr}) is a string the policy "
                    "cannot read, where it reads command lines"
                )
            words = (measured.text or "")[len(measured.label or "") :].split()
            if words[:1] == ["rmmod"] and "tpm" in words:  # whatever its label (in no digest)
                found.append(
                    f"event {measured.event_index}: GRUB removed its tpm module, so what it "
                    "ran after is not measured"
                )
        lines = facts.command_lines
        if not lines:
            found.append("no kernel command line is in the quoted events")
        for line in dict.fromkeys(lines):
            odd = _read_otherwise(line)
            if odd is not None:
                found.append(
                    f"the kernel command line {line!r:.200} holds {odd!r}, which Linux reads "
                    "otherwise than a pattern does (a separator, a quote or a control)"
                )
            elif not any(p.fullmatch(line) for p in self._patterns):
                found.append(f"the kernel command line {line!r:.200} matches no allowed pattern")
        return found

    def _firmware(self, facts: BootFacts) -> list[str]:
        if self.allowed_firmware_versions is None:
            return []
        if not facts.firmware_versions:
            return ["no firmware version (EV_S_CRTM_VERSION string) is in the quoted events"]
        return [
            f"firmware version {version!r:.120} is not an allowed one"
            for version in facts.firmware_versions
            if version not in self.allowed_firmware_versions
        ]

    def _windows_facts(self, facts: BootFacts) -> list[str]:
        if not self._windows():
            return []
        windows = facts.windows
        if windows is None:
            return ["no Windows boot facts (SIPA events in PCRs 12-14) are in the quoted events"]
        found = []
        if self.require_bitlocker and not windows.bitlocker:
            found.append("BitLocker did not unlock the OS volume in this boot")
        if self.require_code_integrity and windows.code_integrity is not True:
            state = "not measured" if windows.code_integrity is None else "off"
            found.append(f"code integrity is {state}")
        if self.forbid_test_signing and windows.test_signing:
            found.append("test signing is on")
        if self.forbid_debugging:
            for name in ("boot_debugging", "kernel_debugging", "hypervisor_debugging"):
                if getattr(windows, name):
                    found.append(f"{name.replace('_', ' ')} is on")
        if self.require_elam and not windows.elam_drivers:
            found.append("no early-launch anti-malware driver was measured")
        return found


def _read_otherwise(line: str) -> str | None:
    """The first character of a command line that Linux's parser (kernel/params.c next_arg:
    isspace of lib/ctype.c, which counts byte A0 as a space; double quotes group) splits or
    groups otherwise than a pattern's ``\\s``/``\\S`` would: any whitespace but space, tab and
    newline, a character whose UTF-8 form (what the kernel gets, systemd's UTF-16 lines
    converted by its EFI stub) holds byte A0, a control or a surrogate, and a ``"`` that does
    not open a word or a value (after ``=``) and close it, in pairs (``dm-mod.create="a b"``).
    None: the line is plain to both."""
    quoted = False
    for at, char in enumerate(line):
        if char == '"':
            before = line[at - 1] if at else " "
            after = line[at + 1] if at + 1 < len(line) else " "
            if (after if quoted else before) not in (" \t\n" if quoted else " \t\n="):
                return char
            quoted = not quoted
        elif char not in " \t\n" and (
            char.isspace()
            or unicodedata.category(char) in ("Cc", "Cs")
            or 0xA0 in char.encode("utf-8", "surrogatepass")
        ):
            return char
    return '"' if quoted else None


def _loaded_after(facts: BootFacts, last: LoadedImage) -> list[str]:
    """The refusals for GRUB loader commands (``LOADER_COMMANDS``, whatever their label) in PCR
    8 after the last PCR 4 application: GRUB's ``chainloader`` has the firmware measure an image
    it may never start, and a later ``linux`` boots another kernel through GRUB's own loader
    (PCR 9 only), so the last application is then not the kernel. A string there the policy
    cannot read could be such a command, and is refused too."""
    found = []
    for measured in facts.boot_loader:
        if measured.pcr != 8 or measured.event_index < last.event_index:
            continue
        body = None if measured.text is None else measured.text[len(measured.label or "") :]
        command = (body or "").split(None, 1)[:1]
        if body is None or (command and command[0] in LOADER_COMMANDS):
            what = "a string the policy cannot read" if body is None else f"GRUB's {command[0]!r}"
            found.append(
                f"event {measured.event_index} (PCR 8) is {what} after the last boot "
                f"application (event {last.event_index}): the kernel that booted may be one "
                "GRUB loaded itself, not that application"
            )
    return found


def _digest_text(digests: Mapping[str, bytes]) -> str:
    return ", ".join(f"{bank} {_short(d)}" for bank, d in digests.items()) or "without a digest"


def _pcr_events(facts: BootFacts, pcr: int, *, windows: bool) -> list[str]:
    """The refusals for PCR ``pcr``, which the policy reads: not covered, or an event of a type
    the PFP does not put there, or whose data its digest does not vouch for."""
    measured = facts.measurements.get(pcr)
    if measured is None:
        return [
            f"PCR {pcr} is not covered: not quoted, or quoted at a value the event log does not "
            "explain"
        ]
    allowed = _WINDOWS_EVENTS if windows else _PCR_EVENTS.get(pcr, {})
    found = []
    for event in measured:
        needs_data = allowed.get(event.event_type)
        if needs_data is None:
            found.append(
                f"event {event.event_index} in PCR {pcr} is {event.event_type}, which the "
                "policy cannot account for there (an event relabelled to hide it?)"
            )
        elif needs_data and event.data_verified is None:
            found.append(
                f"event {event.event_index} ({event.event_type}, PCR {pcr}) has data no digest "
                "covers, where the policy reads it"
            )
    return found


def _pcr_structure(facts: BootFacts, pcr: int, *, windows: bool) -> list[str]:
    """The refusals for a log whose structure in PCR ``pcr`` is not one the PFP (or Windows, in
    PCRs 12-14) gives: its separators, and in PCR 7 its variables and authorities, in PCR 0
    its S-CRTM version. Events whose data does not match are refused already, and not read."""
    if pcr not in facts.measurements:
        return []  # not covered: refused by _pcr_events
    measured = [m for m in facts.measurements.get(pcr, ()) if m.data_verified is not False]
    found = []
    separators = [m for m in measured if m.event_type == "EV_SEPARATOR"]
    values = _SEPARATOR_VALUES | ({_WBCL} if windows else set())
    if pcr < 8 and len(separators) != 1:
        found.append(
            f"PCR {pcr} holds {len(separators)} separators: the PFP puts exactly one in each of "
            "PCRs 0-7 (one relabelled, or another event relabelled as one?)"
        )
    elif windows and len(separators) > 1:
        found.append(f"PCR {pcr} holds {len(separators)} separators; Windows closes it once")
    for separator in separators:
        value = separator.decoded
        if not isinstance(value, Separator) or value.error:
            found.append(
                f"event {separator.event_index}: PCR {pcr}'s separator is an error separator "
                "(the firmware could not make a measurement) or none"
            )
        elif value.value not in values:
            found.append(
                f"event {separator.event_index}: PCR {pcr}'s separator holds "
                f"0x{value.value:08x}, not a separator value"
            )
    if pcr == 7:
        found += _pcr7_structure(measured)
    elif pcr == 0:
        versions = [m for m in measured if m.event_type == "EV_S_CRTM_VERSION"]
        if len(versions) != 1:
            found.append(
                f"PCR 0 holds {len(versions)} S-CRTM versions: the PFP measures exactly one"
            )
    if windows:
        for event in measured:
            if event.event_type != "EV_EVENT_TAG":
                continue
            if not isinstance(event.decoded, TaggedEvent):
                found.append(
                    f"event {event.event_index} in PCR {pcr} is EV_EVENT_TAG but no tagged "
                    "event (another event relabelled?)"
                )
            elif sipa_records(event.decoded) is None:
                found.append(
                    f"event {event.event_index} in PCR {pcr} holds no SIPA records the "
                    "policy can read (sizes that do not tile, or no SIPA event type)"
                )
    return found


def _pcr7_structure(measured: Sequence[Measurement]) -> list[str]:
    """PCR 7 as the PFP gives it (PFP 1.05 §3.3.4.8): the Secure Boot variables before the
    separator, each once and each holding what it holds; authorities (before or after it) that
    are UEFI_VARIABLE_DATA. An authority relabelled as a variable, or a separator relabelled
    to make the variables after it look before it, is refused here."""
    found = []
    separated = False
    seen: set[tuple[str, str]] = set()
    for event in measured:
        kind, variable = event.event_type, event.decoded
        if kind == "EV_SEPARATOR":
            separated = True
        elif kind == "EV_EFI_VARIABLE_DRIVER_CONFIG":
            if separated:
                found.append(
                    f"event {event.event_index} in PCR 7 is a Secure Boot variable measured "
                    "after the separator, where only authorities are (an authority relabelled "
                    "to hide it?)"
                )
            elif not isinstance(variable, EfiVariable) or (
                (variable.guid, variable.name) not in _SECURE_BOOT_VARIABLES
            ):
                name = variable.name if isinstance(variable, EfiVariable) else "no variable"
                found.append(
                    f"event {event.event_index} in PCR 7 is EV_EFI_VARIABLE_DRIVER_CONFIG of "
                    f"{name!r:.40}, not a Secure Boot variable the PFP measures there (another "
                    "event relabelled?)"
                )
            elif (variable.guid, variable.name) in seen:
                found.append(
                    f"event {event.event_index} in PCR 7 measures {variable.name} a second time"
                )
            else:
                seen.add((variable.guid, variable.name))
                if not _holds_its_kind(variable):
                    found.append(
                        f"event {event.event_index} in PCR 7: {variable.name} does not hold "
                        "what that variable holds (another event relabelled?)"
                    )
        elif kind == "EV_EFI_VARIABLE_AUTHORITY" and not isinstance(variable, EfiVariable):
            found.append(
                f"event {event.event_index} in PCR 7 is an authority that is no "
                "UEFI_VARIABLE_DATA (another event relabelled?)"
            )
    return found


def _holds_its_kind(variable: EfiVariable) -> bool:
    """Whether a Secure Boot variable's data is of its kind: signature lists for the
    databases, one byte 0 or 1 (or nothing: not set) for the switches."""
    if variable.name in ("PK", "KEK", "db", "dbx", "dbt", "dbr"):
        return variable.signature_lists is not None
    return variable.data in (b"", b"\x00", b"\x01")
