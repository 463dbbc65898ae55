"""The ``entra-keys session`` commands: import, derive, sign and decrypt with the PRT session key.

A thin layer over ``entra_keys.session``; ``cli.build_parser`` adds these commands with
``add_session_commands(commands)``. Errors are reported by ``cli.main`` as for every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from . import session

if TYPE_CHECKING:
    from .cli import Context

__all__ = ["add_session_commands"]

_SubParsers = argparse._SubParsersAction


def _command_error(message: str) -> Exception:
    from .cli import CommandError  # late: cli imports this module

    return CommandError(message)


def _read(path: str) -> bytes:
    from .cli import _read_input  # late: cli imports this module

    return _read_input(path)


def _read_bounded(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a file or stdin ('-'); more is an error, found by reading one
    byte past the limit, never the whole input."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise _command_error(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise _command_error(f"{path} holds more than {limit} bytes, the limit (--max-size)")
    return data


def _size(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the limit is at least 1 byte, not {value}")
    return value


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _command_error(f"{path} is not ASCII text (a compact JWE)") from None


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _write_json(document: dict[str, Any]) -> None:
    _write(json.dumps(document, indent=2))


def _hex(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
    if not value:
        raise argparse.ArgumentTypeError("the ctx is empty")
    return value


def _session_key_jwe(data: bytes, path: str) -> str:
    """The JWE in a file: the compact JWE itself, or a token response holding session_key_jwe."""
    text = _text(data, path)
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise _command_error(f"{path}: not JSON ({exc})") from exc
        jwe = document.get("session_key_jwe") if isinstance(document, dict) else None
        if not isinstance(jwe, str):
            raise _command_error(f"{path}: the JSON has no session_key_jwe string")
        return jwe
    return text


def cmd_session_import(ctx: Context) -> int:
    """Import the PRT session key from a session_key_jwe and store it under its name."""
    args = ctx.args
    jwe = _session_key_jwe(_read(args.input), args.input)
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
        _write_json(
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
        _write(f"Imported session key {args.name!r} ({backing}) into {ctx.store.path}")
    return 0


def cmd_session_derive(ctx: Context) -> int:
    """Print the derived key for a ctx (and payload) in hex: a diagnostic."""
    args = ctx.args
    payload = None if args.payload is None else _read(args.payload)
    kdf = args.kdf if args.kdf is not None else (1 if payload is None else 2)
    if kdf == 2 and payload is None:
        raise _command_error("KDF v2 hashes the payload: give it with --payload FILE")
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    derived = session.derive_key(key, args.ctx, kdf_version=kdf, payload=payload)
    if ctx.json:
        _write_json({"name": args.name, "kdf_ver": kdf, "derived_key": derived.hex()})
    else:
        _write(derived.hex())
    return 0


def cmd_session_sign(ctx: Context) -> int:
    """Write a compact JWS (HS256, KDF v2) over the exact bytes of the payload file."""
    args = ctx.args
    payload = _read(args.input)
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    token = session.sign_request(key, payload)
    if ctx.json:
        _write_json({"name": args.name, "jws": token})
    else:
        _write(token)
    return 0


def cmd_session_decrypt(ctx: Context) -> int:
    """Write the plaintext of an encrypted token-service response (plain JSON passes); the
    input is read only up to ``--max-size`` bytes, and the plaintext is always a JSON object."""
    args = ctx.args
    body = _read_bounded(args.input, args.max_size)
    key = ctx.store.load_session_key(args.name, passphrase=ctx.passphrase())
    plain = session.decrypt_response(key, body, max_response_size=args.max_size)
    if ctx.json:
        # decrypt_response returns only a UTF-8 JSON object, so the text always decodes.
        _write_json({"name": args.name, "plaintext": plain.decode("utf-8")})
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(plain)
        sys.stdout.buffer.flush()
    return 0


def add_session_commands(commands: _SubParsers[argparse.ArgumentParser]) -> None:
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
    imp.set_defaults(handler=cmd_session_import)

    derive = actions.add_parser(
        "derive",
        help="print a derived key in hex (diagnostics only)",
        description="Print the derived key for a ctx in hex. For diagnostics only: a derived "
        "key signs requests and opens responses, so keep it out of logs and tickets.",
    )
    derive.add_argument("name")
    derive.add_argument("--ctx", required=True, type=_hex, metavar="HEX", help="the ctx, in hex")
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
    derive.set_defaults(handler=cmd_session_derive)

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
    sign.set_defaults(handler=cmd_session_sign)

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
    decrypt.set_defaults(handler=cmd_session_decrypt)
