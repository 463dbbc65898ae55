"""``entra-keys keys ...``, ``csr`` and ``sign``: the stored keys and what they sign."""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from typing import Any

from .. import formats
from ..provider import EntraPrivateKey, KeyType, KeyUsage
from ..store.keystore import KeyInfo, default_store_path, list_keys
from .common import (
    CommandError,
    Context,
    SubParsers,
    add_command,
    info_json,
    read_input,
    sections,
    write,
    write_bytes,
    write_json,
    write_output,
    yes,
)
from .status import LOAD_ONLY_PIN

__all__ = ["add_key_commands"]

_EXPORT_FORMATS = ("pem", "der", "jwk", "bcrypt", "tpm")

log = logging.getLogger(__name__)


def _describe(ctx: Context, info: KeyInfo, key: EntraPrivateKey | None, *, title: str) -> int:
    """Print what the store and the key itself say about a key (``keys show``, ``create``);
    without the key (a software key encrypted under its PIN), what the store says."""
    thumbprint = formats.jwk_thumbprint(key) if key is not None else None
    pem = formats.public_pem(key).decode("ascii") if key is not None else None
    if ctx.json:
        write_json({**info_json(info), "jwk_thumbprint": thumbprint, "public_key_pem": pem})
        return 0
    rows = [
        ("KeyName", info.name),
        ("KeyType", info.key_type.value),
        ("KeyUsage", info.usage.value),
        ("Provider", info.kind),
        ("HardwareBacked", yes(info.hardware_backed)),
        ("Encrypted", yes(info.encrypted)),
        ("PinProtected", yes(info.pin)),
        ("CountsTowardLockout", yes(info.lockout)),
        ("Path", str(info.path)),
        ("JwkThumbprint", thumbprint or "(encrypted under its PIN)"),
    ]
    write(sections([(title, rows)]) + (pem or ""))
    return 0


# -- keys -----------------------------------------------------------------------------------


def cmd_keys_create(ctx: Context) -> int:
    """Create a key in the provider and store it under its name."""
    args = ctx.args
    key = ctx.store.create(
        args.name,
        KeyType(args.type),
        KeyUsage(args.usage),
        passphrase=ctx.passphrase(),
        replace=args.replace,
    )
    return _describe(ctx, ctx.store.info(args.name), key, title="Key Created")


def cmd_keys_list(ctx: Context) -> int:
    """List the keys of the store from its files alone: no provider is opened, so a TPM store
    is listed with the TPM out of reach."""
    ctx.check_passphrase_file()  # not needed to list, but refused alike
    path = ctx.args.store or default_store_path()
    keys, broken = list_keys(path)
    for name, error in broken:
        log.warning("key %r cannot be read: %s", name, error)
    if ctx.json:
        write_json({"store": str(path), "keys": [info_json(key) for key in keys]})
        return 0
    if not keys:
        write(f"No keys in {path}")
        return 0
    header = ("NAME", "TYPE", "USAGE", "PROVIDER", "HARDWARE", "ENCRYPTED")
    table = [header] + [
        (
            k.name,
            k.key_type.value,
            k.usage.value,
            k.kind,
            yes(k.hardware_backed),
            yes(k.encrypted),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    write(
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        )
    )
    return 0


def cmd_keys_show(ctx: Context) -> int:
    """Describe a stored key, with its JWK thumbprint and public key."""
    name = ctx.args.name
    info = ctx.store.info(name)
    if not info.pin:
        return _describe(ctx, info, ctx.load(name), title="Key")
    if info.kind == "tpm":  # TPM2_Load asks for no authorization: no dictionary-attack try
        return _describe(ctx, info, ctx.store.load(name, pin=LOAD_ONLY_PIN), title="Key")
    return _describe(ctx, info, None, title="Key")


def cmd_keys_delete(ctx: Context) -> int:
    """Delete a stored key."""
    name = ctx.args.name
    ctx.store.delete(name)
    if ctx.json:
        write_json({"deleted": name})
    else:
        write(f"Deleted key {name!r} from {ctx.store.path}")
    return 0


def cmd_keys_import(ctx: Context) -> int:
    """Store a TSS2 PRIVATE KEY made by another tool (tpm2-openssl, tpm2-tools)."""
    args = ctx.args
    data = read_input(args.input, 64 * 1024, what="key file")
    key = ctx.store.import_key_file(
        args.name, data, replace=args.replace, allow_imported=args.allow_imported
    )
    return _describe(ctx, ctx.store.info(args.name), key, title="Key Imported")


def cmd_keys_export(ctx: Context) -> int:
    """Write a key's public half to stdout in the chosen format."""
    name, fmt = ctx.args.name, ctx.args.format
    key = ctx.load(name)
    data: bytes
    if fmt == "jwk":
        document = formats.jwk(key)
        if ctx.json:
            write_json({"name": name, "format": fmt, "data": document})
        else:
            write_json(document)
        return 0
    if fmt == "pem":
        data = formats.public_pem(key)
    elif fmt == "der":
        data = formats.public_der(key)
    elif fmt == "tpm":  # TPM2B_PUBLIC: what tpm2-tools reads and writes with -u
        data = len(key.tpm_public).to_bytes(2, "big") + key.tpm_public
    else:
        data = formats.bcrypt_rsakey_blob(key)
    if ctx.json:
        text = data.decode("ascii") if fmt == "pem" else base64.b64encode(data).decode("ascii")
        write_json({"name": name, "format": fmt, "data": text})
    elif fmt == "pem":
        write(data.decode("ascii"))
    elif fmt in ("der", "tpm"):
        write_bytes(data)
    else:
        write(base64.b64encode(data).decode("ascii"))
    return 0


# -- csr, sign ------------------------------------------------------------------------------


def cmd_csr(ctx: Context) -> int:
    """Write a PKCS#10 request signed by the key (SHA-256) as PEM."""
    key = ctx.load(ctx.args.name)
    csr = formats.build_csr(key, ctx.args.subject)
    pem = formats.csr_pem(csr).decode("ascii")
    if ctx.json:
        write_json({"name": ctx.args.name, "subject": csr.subject.rfc4514_string(), "csr": pem})
    else:
        write(pem)
    return 0


def cmd_sign(ctx: Context) -> int:
    """Sign the input's bytes; write the raw signature (PKCS#1, PSS or DER ECDSA). Without
    ``--out`` it goes to stdout, but not to a terminal (as gpg refuses to): there it takes
    ``--out -``; ``--json`` writes it as base64."""
    args = ctx.args
    if args.output is None and not ctx.json and sys.stdout.isatty():
        raise CommandError(
            "the signature is binary and stdout is a terminal: give --out FILE, or --out - to "
            "write it to the terminal anyway"
        )
    key = ctx.load(args.name)
    data = read_input(args.input)
    signature = formats.sign_raw(key, data, args.alg)
    to_stdout = args.output in (None, "-")
    if not to_stdout:
        write_output(args.output, signature)
    if ctx.json:
        document: dict[str, Any] = {"name": args.name, "alg": args.alg, "length": len(signature)}
        if to_stdout:
            document["signature"] = base64.b64encode(signature).decode("ascii")
        else:
            document["out"] = args.output
        write_json(document)
    elif to_stdout:
        write_bytes(signature)
    return 0


# -- the parsers ----------------------------------------------------------------------------


def add_key_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``keys create|list|show|delete|import|export``, ``csr`` and ``sign``."""
    keys = commands.add_parser("keys", help="create, list, show, delete and export keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = key_commands.add_parser("create", help="create a key and store it")
    create.add_argument("name")
    create.add_argument("--type", required=True, choices=[t.value for t in KeyType.asymmetric()])
    create.add_argument(
        "--usage",
        default="sign",
        choices=[u.value for u in KeyUsage if u is not KeyUsage.DERIVE],
        help="sign (device key), decrypt (transport key) or attest (attestation key)",
    )
    create.add_argument("--replace", action="store_true", help="overwrite a key of that name")
    add_command(create, cmd_keys_create)

    listing = key_commands.add_parser("list", help="list the stored keys (reads files: no TPM)")
    add_command(listing, cmd_keys_list, opens_provider=False)

    show = key_commands.add_parser("show", help="describe a key and print its public key")
    show.add_argument("name")
    add_command(show, cmd_keys_show)

    delete = key_commands.add_parser("delete", help="delete a stored key")
    delete.add_argument("name")
    add_command(delete, cmd_keys_delete)

    imported = key_commands.add_parser(
        "import", help="store a TSS2 PRIVATE KEY of tpm2-openssl or tpm2-tools (type from the key)"
    )
    imported.add_argument("name")
    imported.add_argument("--in", dest="input", metavar="FILE", required=True, help="'-' for stdin")
    imported.add_argument("--replace", action="store_true", help="overwrite a key of that name")
    imported.add_argument(
        "--allow-imported",
        action="store_true",
        help="accept a key not made in the TPM (TPM2_Import'ed); it is not hardware-backed",
    )
    add_command(imported, cmd_keys_import)

    export = key_commands.add_parser(
        "export", help="write the public key to stdout (tpm: its TPM2B_PUBLIC, for verify)"
    )
    export.add_argument("name")
    export.add_argument("--format", default="pem", choices=_EXPORT_FORMATS)
    add_command(export, cmd_keys_export)

    csr = commands.add_parser("csr", help="write a PKCS#10 request signed by the key (PEM)")
    csr.add_argument("name")
    csr.add_argument(
        "--subject",
        default=formats.REGISTRATION_SUBJECT,
        help=f"RFC 4514 subject (default: {formats.REGISTRATION_SUBJECT})",
    )
    add_command(csr, cmd_csr)

    sign = commands.add_parser("sign", help="write a raw signature over a file's bytes")
    sign.add_argument("name")
    sign.add_argument("--alg", required=True, choices=formats.SIGNATURE_ALGORITHMS)
    sign.add_argument("--in", dest="input", metavar="FILE", default="-", help="'-' for stdin")
    sign.add_argument(
        "--out",
        dest="output",
        metavar="FILE",
        default=None,
        help="'-' for stdout (default: stdout, unless it is a terminal)",
    )
    add_command(sign, cmd_sign)
