"""The ``entra-keys session`` commands: import, derive, sign and decrypt with the PRT session key.

A thin layer over ``entra_keys.session``. Input is read only up to what a command needs:
``decrypt`` refuses a response over ``--max-size`` unread, ``import``, ``sign`` and ``derive``
an input over ``MAX_JSON_SIZE`` (1 MiB, the most a token response or a payload may be).
"""

from __future__ import annotations

import argparse

from .. import session
from .._json import MAX_JSON_SIZE, Members
from .common import (
    CommandError,
    Context,
    SubParsers,
    add_command,
    hex_argument,
    read_input,
    write,
    write_bytes,
    write_json,
)

__all__ = ["add_session_commands"]


def _size(text: str) -> int:
    """``--max-size`` as argparse reads it: a bad value is a usage error (exit 2)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the limit is at least 1 byte, not {value}")
    return value


def _text(data: bytes, path: str) -> str:
    """The input as ASCII text, stripped."""
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not ASCII text (a compact JWE)") from None


def _ctx_argument(text: str) -> bytes:
    """``--ctx`` as argparse reads it: a bad value is a usage error (exit 2)."""
    value = hex_argument(text)
    if not value:
        raise argparse.ArgumentTypeError("the ctx is empty")
    return value


def _read_json_input(path: str, what: str) -> bytes:
    """An input that holds at most a JSON document: one byte past ``MAX_JSON_SIZE`` is read
    (never a whole /dev/zero) and refused."""
    return read_input(path, MAX_JSON_SIZE, what=what)


def _session_key_jwe(data: bytes, path: str) -> str:
    """The JWE in a file: the compact JWE itself, or a token response holding session_key_jwe."""
    text = _text(data, path)
    if text.startswith("{"):
        return Members.load(text, path).text("session_key_jwe")
    return text


def cmd_session_import(ctx: Context) -> int:
    """Import the PRT session key from a session_key_jwe and store it under its name."""
    args = ctx.args
    jwe = _session_key_jwe(_read_json_input(args.input, "session_key_jwe"), args.input)
    transport_key = ctx.load(args.transport_key)
    prt = session.PRTSession.create(
        ctx.store,
        args.name,
        transport_key,
        jwe,
        passphrase=ctx.passphrase(),
        replace=args.replace,
    )
    info = ctx.store.info(args.name)
    if ctx.json:
        write_json(
            {
                "name": args.name,
                "provider": info.kind,
                "hardware_backed": prt.hardware_backed,
                "encrypted": info.encrypted,
                "path": str(info.path),
            }
        )
    else:
        backing = "in the TPM" if prt.hardware_backed else "in software"
        write(f"Imported session key {args.name!r} ({backing}) into {ctx.store.path}")
    return 0


def cmd_session_derive(ctx: Context) -> int:
    """Print the derived key for a ctx (and payload) in hex: a diagnostic."""
    args = ctx.args
    payload = None if args.payload is None else _read_json_input(args.payload, "payload")
    kdf = args.kdf if args.kdf is not None else (1 if payload is None else 2)
    if kdf == 2 and payload is None:
        raise CommandError("KDF v2 hashes the payload: give it with --payload FILE")
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    derived = session.derive_key(key, args.ctx, kdf_version=kdf, payload=payload)
    if ctx.json:
        write_json({"name": args.name, "kdf_ver": kdf, "derived_key": derived.hex()})
    else:
        write(derived.hex())
    return 0


def cmd_session_sign(ctx: Context) -> int:
    """Write a compact JWS (HS256, KDF v2) over the exact bytes of the payload file."""
    args = ctx.args
    payload = _read_json_input(args.input, "payload")
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    token = session.sign_request(key, payload)
    if ctx.json:
        write_json({"name": args.name, "jws": token})
    else:
        write(token)
    return 0


def cmd_session_decrypt(ctx: Context) -> int:
    """Write the plaintext of an encrypted token-service response (a plain JSON body is
    refused: the service's error object as its error; the AES-CBC form only with
    ``--allow-cbc``); the input is read only up to ``--max-size`` bytes, and the plaintext is
    always a JSON object."""
    args = ctx.args
    body = read_input(args.input, limit=args.max_size)
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    plain = session.decrypt_response(
        key,
        body,
        max_response_size=args.max_size,
        require_gcm=args.require_gcm,
        allow_cbc=args.allow_cbc,
    )
    if ctx.json:
        # decrypt_response returns only a UTF-8 JSON object, so the text always decodes.
        write_json({"name": args.name, "plaintext": plain.decode("utf-8")})
    else:
        write_bytes(plain)
    return 0


def add_session_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``session import|derive|sign|decrypt`` to the ``entra-keys`` subcommands."""
    group = commands.add_parser(
        "session", help="import the PRT session key; derive, sign and decrypt with it"
    )
    actions = group.add_subparsers(dest="session_command", metavar="ACTION", required=True)

    imp = actions.add_parser(
        "import",
        help="import the session key of a PRT (session_key_jwe) with the transport key",
        description="Decrypt the session key with the transport key and store it under NAME: "
        "in a TPM it becomes a keyed-hash object that only this TPM can use.",
    )
    imp.add_argument("name")
    imp.add_argument("--transport-key", required=True, metavar="KEY", help="the transport key")
    imp.add_argument(
        "--in",
        dest="input",
        required=True,
        metavar="JWE_FILE",
        help="the compact session_key_jwe, or the token response JSON holding it ('-' for stdin)",
    )
    imp.add_argument("--replace", action="store_true", help="replace a stored key of that name")
    add_command(imp, cmd_session_import)

    derive = actions.add_parser(
        "derive",
        help="print a derived key in hex (diagnostics only)",
        description="Print the derived key for a ctx in hex. For diagnostics only: a derived "
        "key signs requests and opens responses, so keep it out of logs and tickets.",
    )
    derive.add_argument("name")
    derive.add_argument(
        "--ctx", required=True, type=_ctx_argument, metavar="HEX", help="the ctx, in hex"
    )
    derive.add_argument(
        "--payload", metavar="FILE", help="the exact JWT payload bytes (KDF v2 hashes them)"
    )
    derive.add_argument(
        "--kdf",
        type=int,
        choices=(1, 2),
        default=None,
        help="KDF version (default: 2 with --payload, else 1)",
    )
    add_command(derive, cmd_session_derive)

    sign = actions.add_parser(
        "sign", help="write a compact JWS (HS256, KDF v2) over a payload file to stdout"
    )
    sign.add_argument("name")
    sign.add_argument(
        "--in",
        dest="input",
        required=True,
        metavar="PAYLOAD_JSON",
        help="the JSON payload; its exact bytes are signed ('-' for stdin)",
    )
    add_command(sign, cmd_session_sign)

    decrypt = actions.add_parser(
        "decrypt", help="write the plaintext of an encrypted token-service response to stdout"
    )
    decrypt.add_argument("name")
    decrypt.add_argument(
        "--in", dest="input", required=True, metavar="JWE_FILE", help="the response ('-': stdin)"
    )
    decrypt.add_argument(
        "--max-size",
        type=_size,
        default=session.MAX_RESPONSE_SIZE,
        metavar="BYTES",
        help=f"refuse a larger response, unread (default {session.MAX_RESPONSE_SIZE}: 1 MiB)",
    )
    decrypt.add_argument(
        "--require-gcm",
        action="store_true",
        help="refuse the unauthenticated AES-CBC form Entra also sends (for a GCM reply)",
    )
    decrypt.add_argument(
        "--allow-cbc",
        action="store_true",
        help="open the unauthenticated AES-CBC form Entra sends renewals in: whether it opens "
        "tells whoever altered it about its plaintext (SECURITY.md)",
    )
    add_command(decrypt, cmd_session_decrypt)
