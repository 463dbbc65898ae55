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
from .._json import Members
from ..errors import EntraKeysError
from ..provider import KeyType, KeyUsage
from .common import (
    Command,
    CommandError,
    Context,
    SubParsers,
    add_command,
    parse_hex,
    read_input,
    write,
    write_json,
    write_output,
)

__all__ = ["add_attest_commands"]


def _pcrs(text: str) -> list[int]:
    """The PCR indices of ``--pcrs`` (``0,1,7``)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--pcrs takes indices like 0,1,7, not {text!r}") from exc


def _read(path: str, what: str) -> bytes:
    """A file the verifier was given ('-' is a file name here, not stdin)."""
    return read_input(path, what=what, stdin=False)


def _pcr_values(path: str) -> dict[int, bytes]:
    """``--pcr-values``: a JSON object of PCR index to value in hex, ``{"0": "00ab..", ...}``."""
    values = Members.load(_read(path, "PCR values"), path)
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
    """Quote PCRs with an AK over a nonce; write the quote as JSON (and tpm2-tools' files)."""
    from ..tcg.records import quote_to_json
    from ..tcg.tpm2_tools import write_checkquote_files

    args = ctx.args
    ak = ctx.load(args.ak)
    quote = ctx.provider.quote(ak, _pcrs(args.pcrs), parse_hex(args.nonce, "--nonce"), args.bank)
    write_output(args.out, quote_to_json(quote) + "\n")
    if args.tpm2_tools:
        write_checkquote_files(quote, Path(args.tpm2_tools))
    return 0


def cmd_attest_certify(ctx: Context) -> int:
    """Certify a stored key with an AK over a nonce; write the certification as JSON."""
    from ..tcg.records import certification_to_json

    args = ctx.args
    certification = ctx.provider.certify(
        ctx.load(args.key), ctx.load(args.ak), parse_hex(args.nonce, "--nonce")
    )
    write_output(args.out, certification_to_json(certification) + "\n")
    return 0


# -- verify (no provider) --------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> Any:
    """The TrustPolicy of the verify flags."""
    from ..attestation.verifier import TrustPolicy

    return TrustPolicy(
        allow_software=args.allow_software,
        allow_sha1=args.allow_sha1,
        allow_unverified_ak=args.allow_unverified_ak,
        ak_ca_certificates=[_read(path, "AK CA certificate") for path in args.ak_ca],
    )


def _ak_public(args: argparse.Namespace) -> Any:
    """The AK from --ak-public: its TPM2B_PUBLIC (or TPMT_PUBLIC), as ``keys export --format
    tpm`` and tpm2-tools ``-u`` write it; a PEM or DER public key only with
    --allow-unverified-ak, since no attribute of a bare key can be checked."""
    data = _read(args.ak_public, "AK public key")
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
    return _read(args.ak_cert, "AK certificate")


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
    from ..tcg.records import quote_from_json

    args = ctx.args
    quote = quote_from_json(_read(args.file, "quote"))
    ak = _ak_public(args)
    expected = quote.pcr_values
    if args.pcr_values:
        expected = _pcr_values(args.pcr_values)
    result = verify_quote(
        quote.attest, quote.signature, ak, parse_hex(args.nonce, "--nonce"),
        {quote.pcr_bank: expected}, policy=_policy(args), ak_certificate=_ak_certificate(args),
    )  # fmt: skip
    values = {
        bank: {i: v.hex() for i, v in pcrs.items()} for bank, pcrs in result.pcr_values.items()
    }
    evidence = result.ak_evidence.value
    _print(
        ctx,
        {"valid": True, "hardware_backed": result.hardware_backed, "ak_evidence": evidence,
         "pcr_values": values, "checks": list(result.checks)},
        [_verdict("Quote", result), f"  AK: {_EVIDENCE_TEXT[evidence]}",
         *(f"  {bank} PCR{i}: {v}" for bank, pcrs in values.items() for i, v in pcrs.items())],
    )  # fmt: skip
    return 0


def cmd_verify_certify(ctx: Context) -> int:
    """Verify a certification JSON file against the AK's TPM2B_PUBLIC and the key; exit 0 if
    valid."""
    from ..attestation.verifier import verify_certify
    from ..tcg.records import certification_from_json

    args = ctx.args
    certification = certification_from_json(_read(args.file, "certification"))
    ak = _ak_public(args)
    key = formats.load_public_key(_read(args.key_public, "key's public key"))
    result = verify_certify(
        certification.attest, certification.signature, ak, certification.key_public,
        parse_hex(args.nonce, "--nonce"), policy=_policy(args), expected_key=key,
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
        "--nonce", required=True, help="the nonce the verifier chose (hex, at least 8 bytes)"
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
    quote.add_argument("--pcrs", default="0,1,7", help="PCR indices (default 0,1,7)")
    quote.add_argument("--bank", default="sha256", choices=["sha1", "sha256", "sha384"])
    quote.add_argument("--nonce", required=True, help="the verifier's nonce (hex, 8 to 32 bytes)")
    quote.add_argument("--out", required=True, metavar="FILE.json", help="'-' for stdout")
    quote.add_argument(
        "--tpm2-tools",
        metavar="DIR",
        help="also write tpm2_checkquote's message, signature and PCR files",
    )
    add_command(quote, cmd_attest_quote)

    certify = sub.add_parser("certify", help="certify a stored key with an AK")
    certify.add_argument("key")
    certify.add_argument("--ak", required=True)
    certify.add_argument("--nonce", required=True, help="the verifier's nonce (hex, 8 to 32 bytes)")
    certify.add_argument("--out", required=True, metavar="FILE.json", help="'-' for stdout")
    add_command(certify, cmd_attest_certify)

    verify = commands.add_parser("verify", help="verify quotes and certifications (no TPM)")
    vsub = verify.add_subparsers(dest="verify_command", metavar="WHAT", required=True)
    vq = vsub.add_parser("quote", help="verify a quote JSON file")
    vq.add_argument("file", metavar="FILE.json")
    vq.add_argument("--pcr-values", metavar="JSON",
                    help='expected {"index": "hex"} (default: the values in the file, which '
                         'proves only that the TPM quoted them)')  # fmt: skip
    _verify_flags(vq)
    add_command(vq, _guarded(cmd_verify_quote), opens_provider=False)
    vc = vsub.add_parser("certify", help="verify a certification JSON file")
    vc.add_argument("file", metavar="FILE.json")
    vc.add_argument("--key-public", required=True, metavar="PEM")
    _verify_flags(vc)
    add_command(vc, _guarded(cmd_verify_certify), opens_provider=False)
