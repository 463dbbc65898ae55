"""``entra-keys attest ...`` (the device side) and ``entra-keys verify ...`` (the verifier's).

The device side works through the provider; ``verify`` is pure Python and opens no provider at
all, as a service would run it. ``verify`` exits 0 only for a valid attestation.
"""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path
from typing import Any

from .. import formats
from .._json import MAX_JSON_SIZE, Members
from ..errors import EntraKeysError
from ..provider import KeyType, KeyUsage
from .common import (
    Command,
    CommandError,
    Context,
    SubParsers,
    add_command,
    hex_argument,
    parse_hex,
    read_input,
    write,
    write_json,
    write_output,
)

__all__ = ["add_attest_commands"]


def _pcrs(text: str) -> list[int]:
    """The PCR indices of ``--pcrs`` (``0,1,7``), as argparse reads them: another form is a
    usage error (exit 2); the provider checks the range."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"PCR indices like 0,1,7, not {text!r}") from None


#: The most ``verify`` reads of a key or certificate file (PEM or DER; a TPM2B_PUBLIC), and of
#: a JSON file other than the quote (PCR values, a boot policy, a certification) or a CA file.
_MAX_KEY_FILE = 64 * 1024
_MAX_JSON_FILE = MAX_JSON_SIZE


def _read(path: str, what: str, limit: int) -> bytes:
    """A file the verifier was given ('-' is a file name here, not stdin), up to ``limit``
    bytes: a larger one is refused after reading one byte past the limit."""
    return read_input(path, limit, what=what, stdin=False)


def _pcr_values(path: str) -> dict[int, bytes]:
    """``--pcr-values``: a JSON object of PCR index to value in hex, ``{"0": "00ab..", ...}``."""
    values = Members.load(_read(path, "PCR values", _MAX_JSON_FILE), path)
    expected = {}
    for name in values.value:
        if not (name.isascii() and name.isdigit() and len(name) <= 2):
            raise CommandError(f"{path}: {name!r:.40} is not a PCR index")
        expected[int(name)] = parse_hex(values.text(name), f"PCR {name}")
    return expected


def _print(ctx: Context, document: dict[str, Any], lines: list[str]) -> None:
    """The document with ``--json``, else the lines."""
    if ctx.json:
        write_json(document)
    else:
        write("\n".join(lines) + "\n")


# -- attest ---------------------------------------------------------------------------------


def cmd_attest_ak_create(ctx: Context) -> int:
    """Create an attestation key (restricted signing key) and store it."""
    args = ctx.args
    ak = ctx.store.create(args.name, KeyType(args.type), KeyUsage.ATTEST,
                          passphrase=ctx.passphrase(), replace=args.replace)  # fmt: skip
    pem = formats.public_pem(ak).decode()
    _print(
        ctx,
        {"name": args.name, "type": args.type, "hardware_backed": ak.hardware_backed,
         "public_key_pem": pem},
        [f"Attestation key {args.name!r} ({args.type}) created", pem.rstrip()],
    )  # fmt: skip
    return 0


def cmd_attest_ek(ctx: Context) -> int:
    """Print the endorsement keys, what their NV certificates are (repaired, unreadable and
    why) and, with --cert, the certificates and the chain's, as JSON or PEM."""
    from ..tcg.nvcert import certificate_lines
    from ..tcg.records import endorsement_key_to_json
    from ..tcg.structures import TPMTPublic

    eks = ctx.provider.endorsement_keys()
    if ctx.json:
        write_json({"endorsement_keys": [json.loads(endorsement_key_to_json(e)) for e in eks]})
        return 0
    for ek in eks:
        pem = formats.public_pem(TPMTPublic.parse(ek.public).public_key()).decode()
        where = f"persistent 0x{ek.handle:08x}" if ek.handle else "from the template"
        write(f"# EK {ek.key_type.value} ({where})\n{pem}")
        write("".join(f"# {line}\n" for line in certificate_lines(ek)))
        if ctx.args.cert:  # the bytes as signed (a re-encoded certificate would not verify)
            for der in (ek.certificate, *ek.chain) if ek.certificate else ek.chain:
                write(ssl.DER_cert_to_PEM_cert(der))
    return 0


def cmd_attest_quote(ctx: Context) -> int:
    """Quote PCRs with an AK over a nonce; write the quote as JSON (and tpm2-tools' files), with
    the event log read after the quote when --event-log is given (the kernel's, or FILE)."""
    from ..tcg.records import quote_to_json
    from ..tcg.tpm2_tools import write_checkquote_files

    args = ctx.args
    ak = ctx.load(args.ak)
    quote = ctx.provider.quote(
        ak, args.pcrs, args.nonce, args.bank,
        event_log=False if args.event_log is None else args.event_log,
    )  # fmt: skip
    write_output(args.out, quote_to_json(quote) + "\n")
    if args.tpm2_tools:
        write_checkquote_files(quote, Path(args.tpm2_tools))
    if ctx.json and args.out != "-":  # with --out -, the quote itself is the JSON document
        write_json({"out": args.out, "bank": quote.pcr_bank, "pcrs": sorted(quote.pcr_values)})
    return 0


def cmd_attest_eventlog(ctx: Context) -> int:
    """Parse a TCG event log (--in FILE, or the kernel's) and print its events, the PCR values
    they replay to and the boot facts they state; exit 0 when it parses. Nothing here ties the
    log to a quote: ``verify quote --event-log`` does."""
    from ..tcg.eventlog import MAX_LOG_SIZE, parse_event_log, read_event_log

    args = ctx.args
    if args.input is None:
        data = read_event_log()
    else:
        data = read_input(args.input, MAX_LOG_SIZE, what="event log")
    log = parse_event_log(data)
    replayed = log.replay()
    facts = log.facts()
    if ctx.json:
        write_json(
            {
                "format": "crypto-agile" if log.crypto_agile else "sha1",
                "banks": list(log.banks),
                "events": [_event_json(event) for event in log.events],
                "pcrs": {
                    bank: {str(pcr): value.hex() for pcr, value in values.items()}
                    for bank, values in replayed.items()
                },
                "boot_facts": _facts_json(facts),
            }
        )
        return 0
    lines = [
        f"Event log: {'crypto-agile' if log.crypto_agile else 'SHA-1'}, {len(log.events)} "
        f"events, banks {', '.join(log.banks)}",
        *(_event_line(event) for event in log.events),
        "",
        *_facts_lines(facts),
    ]
    write("\n".join(lines) + "\n")
    return 0


def _event_json(event: Any) -> dict[str, Any]:
    decoded = event.decoded
    text = getattr(decoded, "text", None)
    return {
        "index": event.index,
        "pcr": event.pcr,
        "type": event.type_name,
        "digests": {bank: digest.hex() for bank, digest in event.digests.items()},
        "size": len(event.data),
        "text": text if isinstance(text, str) else None,
        "data": event.data.hex(),
    }


def _event_line(event: Any) -> str:
    digest = next(iter(event.digests.values()), b"").hex()[:16]
    text = getattr(event.decoded, "text", None)
    shown = f" {text!r:.70}" if isinstance(text, str) and text else ""
    pcr = "-" if event.pcr == 0xFFFFFFFF else str(event.pcr)
    return f"  {event.index:>4} PCR {pcr:>2} {event.type_name:<34} {digest}{shown}"


def _entry_json(entry: Any) -> dict[str, Any]:
    import hashlib

    certificate = entry.certificate
    return {
        "type": entry.type_name,
        "owner": entry.owner,
        "subject": entry.subject,
        "sha256": None if certificate is None else hashlib.sha256(certificate).hexdigest(),
        "hash": entry.hash_hex,
    }


def _facts_json(facts: Any) -> dict[str, Any]:
    """The boot facts as JSON (``--json`` of ``attest eventlog`` and ``verify quote``)."""

    def entries(found: Any) -> list[dict[str, Any]] | None:
        return None if found is None else [_entry_json(e) for e in found]

    def image(found: Any) -> dict[str, Any]:
        return {
            "event": found.event_index,
            "digests": {bank: d.hex() for bank, d in found.digests.items()},
            "device_path": found.device_path,
        }

    windows = facts.windows
    return {
        "banks": list(facts.banks),
        "pcrs": list(facts.pcrs),
        "secure_boot": facts.secure_boot,
        "pk": entries(facts.pk),
        "kek": entries(facts.kek),
        "db": entries(facts.db),
        "dbx": entries(facts.dbx),
        "authorities": [
            {
                "event": a.event_index,
                "variable": a.variable,
                **(_entry_json(a.entry) if a.entry is not None else {}),
            }
            for a in facts.authorities
        ],
        "boot_applications": [image(a) for a in facts.boot_applications],
        "drivers": [image(d) for d in facts.drivers],
        "mok": [{"event": m.event_index, "name": m.name, "pcr": m.pcr} for m in facts.mok],
        "sbat_level": facts.sbat_level,
        "grub_commands": list(facts.grub_commands),
        "kernel_cmdlines": list(facts.kernel_cmdlines),
        "command_lines": list(facts.command_lines),
        "firmware_versions": list(facts.firmware_versions),
        "startup_locality": facts.startup_locality,
        "h_crtm": facts.h_crtm,
        "separators": list(facts.separators),
        "separator_errors": list(facts.separator_errors),
        "exit_boot_services": facts.exit_boot_services,
        "firmware_debug_mode": facts.firmware_debug_mode,
        "data_mismatches": [
            {"event": m.event_index, "type": m.event_type} for m in facts.data_mismatches
        ],
        "windows": None if windows is None else _windows_json(windows),
    }


def _windows_json(windows: Any) -> dict[str, Any]:
    def revocations(found: Any) -> dict[str, Any] | None:
        if found is None:
            return None
        return {"creation_time": found.creation_time, "digest": found.digest.hex()}

    return {
        "bitlocker": windows.bitlocker,
        "bitlocker_unlocks": [list(windows.bitlocker_flags(v)) for v in windows.bitlocker_unlocks],
        "code_integrity": windows.code_integrity,
        "test_signing": windows.test_signing,
        "flight_signing": windows.flight_signing,
        "boot_debugging": windows.boot_debugging,
        "kernel_debugging": windows.kernel_debugging,
        "hypervisor_debugging": windows.hypervisor_debugging,
        "dep": windows.dep,
        "safe_mode": windows.safe_mode,
        "winpe": windows.winpe,
        "boot_count": windows.boot_count,
        "cold_boot": windows.cold_boot,
        "hypervisor_launch_type": windows.hypervisor_launch_type,
        "vsm_launch_type": windows.vsm_launch_type,
        "elam_drivers": [driver.name for driver in windows.elam_drivers],
        "loaded_modules": len(windows.loaded_modules),
        "boot_revocation_list": revocations(windows.boot_revocation_list),
        "os_revocation_list": revocations(windows.os_revocation_list),
    }


def _facts_lines(facts: Any) -> list[str]:
    """The boot facts as lines of text."""

    def flag(value: bool | None) -> str:
        return "not measured" if value is None else ("on" if value else "off")

    def count(found: Any) -> str:
        if found is None:
            return "not measured"
        return f"{len(found)} entr{'y' if len(found) == 1 else 'ies'}"

    lines = [
        "Boot facts",
        f"  Secure Boot: {flag(facts.secure_boot)}",
        f"  PK: {count(facts.pk)}; KEK: {count(facts.kek)}; db: {count(facts.db)}; "
        f"dbx: {count(facts.dbx)}",
        *(f"  PK / db certificate: {e.subject}" for e in (*(facts.pk or ()), *(facts.db or ()))
          if e.subject),
        f"  firmware: {', '.join(facts.firmware_versions) or 'not measured'}",
        *(f"  verified by ({a.variable}): {a.entry.subject if a.entry else '-'}"
          for a in facts.authorities),
        *(f"  boot application: {_digest(a.digests)} {a.device_path or ''}".rstrip()
          for a in facts.boot_applications),
        *(f"  kernel command line: {line}" for line in facts.kernel_cmdlines),
        f"  Exit Boot Services: {'yes' if facts.exit_boot_services else 'no'}",
    ]  # fmt: skip
    if facts.sbat_level:
        lines.append(f"  SBAT level: {facts.sbat_level.strip()}")
    if facts.firmware_debug_mode:
        lines.append("  UEFI debug mode: on")
    for mismatch in facts.data_mismatches:
        lines.append(
            f"  event {mismatch.event_index} ({mismatch.event_type}): data not what its digest "
            "measured (no fact read)"
        )
    windows = facts.windows
    if windows is not None:
        lines += [
            "  Windows:",
            f"    BitLocker: {'unlocked' if windows.bitlocker else 'no unlock measured'}",
            f"    code integrity: {flag(windows.code_integrity)}",
            f"    test signing: {flag(windows.test_signing)}",
            f"    boot debugging: {flag(windows.boot_debugging)}; kernel debugging: "
            f"{flag(windows.kernel_debugging)}",
            f"    ELAM: {', '.join(d.name for d in windows.elam_drivers) or 'none measured'}",
        ]
    return lines


def _digest(digests: Any) -> str:
    bank, value = next(iter(digests.items()), ("", b""))
    return f"{bank} {value.hex()[:16]}…" if bank else "-"


def cmd_attest_certify(ctx: Context) -> int:
    """Certify a stored key with an AK over a nonce; write the certification as JSON."""
    from ..tcg.records import certification_to_json

    args = ctx.args
    certification = ctx.provider.certify(ctx.load(args.key), ctx.load(args.ak), args.nonce)
    write_output(args.out, certification_to_json(certification) + "\n")
    if ctx.json and args.out != "-":  # with --out -, the certification is the JSON document
        write_json({"out": args.out, "key": args.key, "ak": args.ak})
    return 0


# -- verify (no provider) --------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> Any:
    """The TrustPolicy of the verify flags."""
    from ..attestation.verifier import TrustPolicy

    return TrustPolicy(
        allow_software=args.allow_software,
        allow_sha1=args.allow_sha1,
        allow_unverified_ak=args.allow_unverified_ak,
        ak_ca_certificates=[
            _read(path, "AK CA certificate", _MAX_JSON_FILE) for path in args.ak_ca
        ],
    )


def _ak_public(args: argparse.Namespace) -> Any:
    """The AK from --ak-public: its TPM2B_PUBLIC (or TPMT_PUBLIC), as ``keys export --format
    tpm`` and tpm2-tools ``-u`` write it; a PEM or DER public key only with
    --allow-unverified-ak, since no attribute of a bare key can be checked."""
    data = _read(args.ak_public, "AK public key", _MAX_KEY_FILE)
    bare = data.lstrip().startswith(b"-----BEGIN") or data[:1] == b"\x30"
    if not bare:
        return data
    if not args.allow_unverified_ak:
        raise CommandError(
            f"{args.ak_public} is a bare public key: nothing about the AK can be checked. Give "
            "its TPM2B_PUBLIC (entra-keys keys export AK --format tpm, or tpm2-tools' -u file), "
            "or accept an unverified AK with --allow-unverified-ak"
        )
    return formats.load_public_key(data)


def _ak_certificate(args: argparse.Namespace) -> bytes | None:
    """The AK certificate of ``--ak-cert``, which needs the CA of ``--ak-ca`` to mean anything."""
    if args.ak_cert is None:
        return None
    if not args.ak_ca:
        raise CommandError("--ak-cert needs the CA it chains to: --ak-ca PEM")
    return _read(args.ak_cert, "AK certificate", _MAX_KEY_FILE)


_EVIDENCE_TEXT = {
    "enrolled": "enrolled (credential activation against a verified EK)",
    "certificate": "AK certificate from a trusted CA",
    "unverified": "unverified (no enrollment or AK certificate: proves nothing about hardware)",
}


def _verdict(what: str, result: Any) -> str:
    """VALID, and why it is not hardware when it is not: software, or an unverified AK."""
    from ..tcg.records import is_software_attestation

    if result.hardware_backed:
        return f"{what}: VALID"
    software = is_software_attestation(result.attest)
    return f"{what}: VALID" + (" (software attestation)" if software else " (AK unverified)")


def cmd_verify_quote(ctx: Context) -> int:
    """Verify a quote JSON file against the AK's TPM2B_PUBLIC and the nonce; exit 0 if valid."""
    from ..attestation.verifier import verify_quote
    from ..tcg.records import MAX_QUOTE_JSON, quote_from_json

    args = ctx.args
    quote = quote_from_json(_read(args.file, "quote", MAX_QUOTE_JSON))
    ak = _ak_public(args)
    expected = quote.pcr_values
    if args.pcr_values:
        expected = _pcr_values(args.pcr_values)
    event_log = quote.event_log
    if args.event_log is not None:
        event_log = _read_log(args.event_log)
    boot_policy = None
    if args.boot_policy is not None:
        from ..attestation.measured import BootPolicy

        boot_policy = BootPolicy.from_json(_read(args.boot_policy, "boot policy", _MAX_JSON_FILE))
    result = verify_quote(
        quote.attest, quote.signature, ak, args.nonce,
        {quote.pcr_bank: expected}, policy=_policy(args), ak_certificate=_ak_certificate(args),
        event_log=event_log, boot_policy=boot_policy,
    )  # fmt: skip
    values = {
        bank: {i: v.hex() for i, v in pcrs.items()} for bank, pcrs in result.pcr_values.items()
    }
    evidence = result.ak_evidence.value
    document: dict[str, Any] = {
        "valid": True, "hardware_backed": result.hardware_backed, "ak_evidence": evidence,
        "pcr_values": values, "checks": list(result.checks),
    }  # fmt: skip
    lines = [
        _verdict("Quote", result), f"  AK: {_EVIDENCE_TEXT[evidence]}",
        *(f"  {bank} PCR{i}: {v}" for bank, pcrs in values.items() for i, v in pcrs.items()),
    ]  # fmt: skip
    measured = result.measured_boot
    if measured is not None:
        pcrs = {bank: list(found) for bank, found in measured.pcrs.items()}
        document["event_log"] = {
            "events_quoted": measured.events_quoted,
            "events_after_quote": measured.events_after_quote,
            "pcrs": pcrs,
            "boot_policy": boot_policy is not None,
        }
        document["boot_facts"] = _facts_json(measured.facts)
        checked = "; ".join(f"{bank} PCRs {found}" for bank, found in pcrs.items())
        lines += [
            f"  event log: {measured.events_quoted} events tie to the quote ({checked}); "
            f"{measured.events_after_quote} logged after it, not read",
            *(["  boot policy: met"] if boot_policy is not None else []),
            *_facts_lines(measured.facts),
        ]
    _print(ctx, document, lines)
    return 0


def _read_log(path: str) -> bytes:
    """``--event-log FILE``: the bytes of a log, up to the parser's limit."""
    from ..tcg.eventlog import MAX_LOG_SIZE

    return read_input(path, MAX_LOG_SIZE, what="event log", stdin=False)


def cmd_verify_certify(ctx: Context) -> int:
    """Verify a certification JSON file against the AK's TPM2B_PUBLIC and the key; exit 0 if
    valid."""
    from ..attestation.verifier import verify_certify
    from ..tcg.records import certification_from_json

    args = ctx.args
    certification = certification_from_json(_read(args.file, "certification", _MAX_JSON_FILE))
    ak = _ak_public(args)
    key = formats.load_public_key(_read(args.key_public, "key's public key", _MAX_KEY_FILE))
    result = verify_certify(
        certification.attest, certification.signature, ak, certification.key_public,
        args.nonce, policy=_policy(args), expected_key=key,
        ak_certificate=_ak_certificate(args),
    )  # fmt: skip
    evidence = result.ak_evidence.value
    _print(
        ctx,
        {"valid": True, "hardware_backed": result.hardware_backed, "ak_evidence": evidence,
         "key_name": result.key_name.hex(), "checks": list(result.checks)},
        [_verdict("Certification", result), f"  AK: {_EVIDENCE_TEXT[evidence]}",
         f"  key name: {result.key_name.hex()}"],
    )  # fmt: skip
    return 0


def _verify_flags(parser: argparse.ArgumentParser) -> None:
    """The options ``verify quote`` and ``verify certify`` share: the AK, its evidence, the
    nonce and the policy."""
    parser.add_argument(
        "--ak-public",
        required=True,
        metavar="FILE",
        help="the AK's TPM2B_PUBLIC (keys export --format tpm; tpm2-tools -u)",
    )
    parser.add_argument(
        "--allow-unverified-ak",
        action="store_true",
        help="accept a bare PEM/DER public key as the AK (never hardware)",
    )
    parser.add_argument(
        "--ak-cert", metavar="PEM", help="the AK's certificate: evidence that a TPM holds it"
    )
    parser.add_argument(
        "--ak-ca",
        metavar="PEM",
        action="append",
        default=[],
        help="a CA the AK certificate must chain to (repeatable)",
    )
    parser.add_argument(
        "--nonce",
        required=True,
        type=hex_argument,
        help="the nonce the verifier chose (hex, at least 8 bytes)",
    )
    parser.add_argument("--allow-software", action="store_true",
                        help="accept attestations of the software provider")  # fmt: skip
    parser.add_argument("--allow-sha1", action="store_true", help="accept SHA-1")


def _guarded(command: Command) -> Command:
    """With ``--json``, a failed verification also prints ``{"valid": false, "error": ...}``;
    ``main`` prints the error line as for every command."""

    def run(ctx: Context) -> int:
        try:
            return command(ctx)
        except EntraKeysError as exc:
            if ctx.json:
                write(json.dumps({"valid": False, "error": str(exc)}))
            raise

    return run


def add_attest_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``attest`` and ``verify`` to the ``entra-keys`` parser."""
    attest = commands.add_parser("attest", help="attestation keys, EK, quotes, certifications")
    sub = attest.add_subparsers(dest="attest_command", metavar="ACTION", required=True)

    ak = sub.add_parser("ak", help="attestation keys")
    ak_sub = ak.add_subparsers(dest="ak_command", metavar="ACTION", required=True)
    create = ak_sub.add_parser("create", help="create an attestation key and store it")
    create.add_argument("name")
    create.add_argument("--type", default="rsa2048", choices=["rsa2048", "ecc256"])
    create.add_argument("--replace", action="store_true")
    add_command(create, cmd_attest_ak_create)

    ek = sub.add_parser("ek", help="print the endorsement keys")
    ek.add_argument("--cert", action="store_true", help="also print their certificates")
    add_command(ek, cmd_attest_ek)

    quote = sub.add_parser("quote", help="quote PCRs with an AK")
    quote.add_argument("--ak", required=True, help="the stored attestation key")
    quote.add_argument("--pcrs", default=[0, 1, 7], type=_pcrs, help="PCR indices (default 0,1,7)")
    quote.add_argument("--bank", default="sha256", choices=["sha1", "sha256", "sha384"])
    quote.add_argument(
        "--nonce",
        required=True,
        type=hex_argument,
        help="the verifier's nonce (hex, 8 to 32 bytes)",
    )
    quote.add_argument("--out", required=True, metavar="FILE.json", help="'-' for stdout")
    quote.add_argument(
        "--tpm2-tools",
        metavar="DIR",
        help="also write tpm2_checkquote's message, signature and PCR files",
    )
    quote.add_argument(
        "--event-log",
        nargs="?",
        const=True,
        metavar="FILE",
        help="include the TCG event log, read after the quote: the kernel's (root only), or FILE",
    )
    add_command(quote, cmd_attest_quote)

    eventlog = sub.add_parser("eventlog", help="the TCG event log's events and boot facts")
    eventlog.add_argument(
        "--in",
        dest="input",
        metavar="FILE",
        help="a log file ('-' for stdin; default: the kernel's, root only)",
    )
    add_command(eventlog, cmd_attest_eventlog, opens_provider=False)

    certify = sub.add_parser("certify", help="certify a stored key with an AK")
    certify.add_argument("key")
    certify.add_argument("--ak", required=True)
    certify.add_argument(
        "--nonce",
        required=True,
        type=hex_argument,
        help="the verifier's nonce (hex, 8 to 32 bytes)",
    )
    certify.add_argument("--out", required=True, metavar="FILE.json", help="'-' for stdout")
    add_command(certify, cmd_attest_certify)

    verify = commands.add_parser("verify", help="verify quotes and certifications (no TPM)")
    vsub = verify.add_subparsers(dest="verify_command", metavar="WHAT", required=True)
    vq = vsub.add_parser("quote", help="verify a quote JSON file")
    vq.add_argument("file", metavar="FILE.json")
    vq.add_argument("--pcr-values", metavar="JSON",
                    help='expected {"index": "hex"} (default: the values in the file, which '
                         'proves only that the TPM quoted them)')  # fmt: skip
    vq.add_argument("--event-log", metavar="FILE",
                    help="the TCG event log to tie to the quote (default: the one the quote "
                         "file carries, if any)")  # fmt: skip
    vq.add_argument(
        "--boot-policy",
        metavar="JSON",
        help="a BootPolicy as JSON: what may have booted (needs an event log)",
    )
    _verify_flags(vq)
    add_command(vq, _guarded(cmd_verify_quote), opens_provider=False)
    vc = vsub.add_parser("certify", help="verify a certification JSON file")
    vc.add_argument("file", metavar="FILE.json")
    vc.add_argument("--key-public", required=True, metavar="PEM")
    _verify_flags(vc)
    add_command(vc, _guarded(cmd_verify_certify), opens_provider=False)
