"""The ``entra-keys`` command: provider status, named keys, public keys, CSRs and raw signatures.

A thin layer over the public API (``open_provider``, ``KeyStore``, ``formats``). A library error
prints one line, ``entra-keys: error: <message>``, and exits 1; a usage error exits 2.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__, formats
from ._cli_attest import add_attest_commands
from ._cli_session import add_session_commands
from .errors import EntraKeysError
from .keystore import KeyInfo, KeyStore
from .provider import EntraPrivateKey, KeyType, KeyUsage, Provider, ProviderInfo
from .providers import PROVIDER_KINDS, open_provider

__all__ = ["PASSPHRASE_ENV", "build_parser", "main"]

PROG = "entra-keys"
#: The environment variable that holds the passphrase of software key files.
PASSPHRASE_ENV = "ENTRA_KEYS_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
#: The longest passphrase ``--passphrase-file`` reads (a longer first line is refused).
MAX_PASSPHRASE = 4096
#: What ``status`` signs with every signing key to show that it works.
SIGN_TEST_MESSAGE = b"entra-keys KeySignTest"

_EXPORT_FORMATS = ("pem", "der", "jwk", "bcrypt", "tpm")
_RULE = "+" + "-" * 78 + "+"

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure of the command itself (an unreadable --in file), reported as library errors are."""


@dataclass
class Context:
    """What a subcommand works with: the parsed arguments, the open provider and its store."""

    args: argparse.Namespace
    provider: Provider
    store: KeyStore

    @property
    def json(self) -> bool:
        """True when machine output (one JSON document) was asked for."""
        return bool(self.args.json)

    def passphrase(self) -> bytes | None:
        """The software-key passphrase: ``--passphrase-file``, else ``$ENTRA_KEYS_PASSPHRASE``;
        TPM key files take none, so neither is read for them."""
        if self.provider.kind != "software":
            return None
        return self._given_passphrase

    @functools.cached_property
    def _given_passphrase(self) -> bytes | None:
        """The passphrase the caller gave, read once (a file is read and checked only once)."""
        path: str | None = self.args.passphrase_file
        if path is not None:
            return _read_passphrase_file(path)
        value = os.environ.get(PASSPHRASE_ENV)
        return value.encode("utf-8") if value else None

    def load(self, name: str) -> EntraPrivateKey:
        """Loads a named key of the store with the passphrase, if any."""
        return self.store.load(name, passphrase=self.passphrase())


Handler = Callable[[Context], int]


# -- output ---------------------------------------------------------------------------------


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _write_json(document: object) -> None:
    _write(json.dumps(document, indent=2))


def _yes(flag: bool) -> str:
    return "YES" if flag else "NO"


def _section(title: str, rows: Sequence[tuple[str, str]], width: int) -> list[str]:
    """A dsregcmd-style section: a boxed title, then right-aligned ``Name : value`` lines."""
    lines = [_RULE, f"| {title}".ljust(len(_RULE) - 1) + "|", _RULE, ""]
    for name, value in rows:
        lines.append(f"{name:>{width}} : {value}" if name else "")
    lines.append("")
    return lines


def _sections(parts: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    width = max((len(name) for _, rows in parts for name, _ in rows), default=0) + 8
    return "\n".join(line for title, rows in parts for line in _section(title, rows, width))


# -- key descriptions -----------------------------------------------------------------------


def _info_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "type": info.key_type.value,
        "usage": info.usage.value,
        "provider": info.kind,
        "hardware_backed": info.hardware_backed,
        "encrypted": info.encrypted,
        "path": str(info.path),
    }


def _describe(ctx: Context, info: KeyInfo, key: EntraPrivateKey, *, title: str) -> int:
    """Print what the store and the key itself say about a key (``keys show``, ``create``)."""
    thumbprint = formats.jwk_thumbprint(key)
    pem = formats.public_pem(key).decode("ascii")
    if ctx.json:
        _write_json({**_info_json(info), "jwk_thumbprint": thumbprint, "public_key_pem": pem})
        return 0
    rows = [
        ("KeyName", info.name),
        ("KeyType", info.key_type.value),
        ("KeyUsage", info.usage.value),
        ("Provider", info.kind),
        ("HardwareBacked", _yes(info.hardware_backed)),
        ("Encrypted", _yes(info.encrypted)),
        ("Path", str(info.path)),
        ("JwkThumbprint", thumbprint),
    ]
    _write(_sections([(title, rows)]) + pem)
    return 0


# -- status ---------------------------------------------------------------------------------


@dataclass
class _SignTest:
    """The outcome of signing the test message with every signing key of the store."""

    tested: list[str]
    failures: list[tuple[str, str]]

    @property
    def result(self) -> str:
        if self.failures:
            return "FAILED"
        return "PASSED" if self.tested else "SKIPPED"


def _sign_test(ctx: Context, keys: Sequence[KeyInfo]) -> _SignTest:
    """Sign a fixed message with each signing key and verify it with the key's public half."""
    outcome = _SignTest(tested=[], failures=[])
    for info in keys:
        if info.usage is not KeyUsage.SIGN:
            continue
        outcome.tested.append(info.name)
        try:
            key = ctx.load(info.name)
            alg = formats.algorithms_for(key)[0]
            signature = formats.sign_raw(key, SIGN_TEST_MESSAGE, alg)
            formats.verify_raw(key.public_key(), SIGN_TEST_MESSAGE, signature, alg)
        except EntraKeysError as exc:
            log.debug("KeySignTest of key %r failed", info.name, exc_info=True)
            outcome.failures.append((info.name, _one_line(str(exc))))
    return outcome


def _provider_rows(info: ProviderInfo) -> list[tuple[str, str]]:
    rows = [("Provider", info.kind), ("TpmProtected", _yes(info.hardware_backed))]
    if info.hardware_backed:
        rows += [
            ("TpmManufacturer", info.manufacturer or ""),
            ("TpmVendor", info.vendor or ""),
            ("TpmFirmwareVersion", info.firmware_version or ""),
            ("TpmSpecVersion", info.spec_version or ""),
            ("TpmTcti", info.tcti or ""),
            ("StorageKey", info.storage_key or ""),
        ]
    return rows


def _device_state(ctx: Context, keys: Sequence[KeyInfo]) -> dict[str, Any]:
    """What ``dsregcmd /status`` shows of a join, from the join state the store recorded."""
    state = ctx.store.load_join_state() or {}
    device = next((k for k in keys if k.name == "device"), None)
    hardware = bool(device and device.hardware_backed)
    out: dict[str, Any] = {
        "azure_ad_joined": bool(state.get("device_id")),
        "device_id": state.get("device_id"),
        "thumbprint": state.get("thumbprint"),
        "key_provider": (
            "Microsoft Platform Crypto Provider" if hardware
            else "Microsoft Software Key Storage Provider" if device else None
        ),
        "tpm_protected": hardware,
        "ak_enrolled": bool(state.get("ak_enrolled")),
        "ek_certificate_chain": state.get("ek_certificate_chain"),
        "session_key_present": False,
        "session_key_tpm_bound": False,
    }  # fmt: skip
    name = state.get("session_key")
    if isinstance(name, str) and name in ctx.store:
        try:
            key = ctx.store.load_session_key(name, passphrase=ctx.passphrase())
        except EntraKeysError as exc:
            out["session_key_error"] = _one_line(str(exc))
        else:
            out["session_key_present"] = True
            out["session_key_tpm_bound"] = key.hardware_backed
    return out


def _device_sections(device: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    def text(value: Any) -> str:
        return "" if value is None else _yes(value) if isinstance(value, bool) else str(value)

    rows = [
        ("AzureAdJoined", text(device["azure_ad_joined"])),
        ("DeviceId", text(device["device_id"])),
        ("Thumbprint", text(device["thumbprint"])),
        ("KeyProvider", text(device["key_provider"])),
        ("TpmProtected", text(device["tpm_protected"])),
    ]
    attestation = [
        ("AkEnrolled", text(device["ak_enrolled"])),
        ("EkCertificateChain", text(device["ek_certificate_chain"])),
    ]
    sso = [
        ("SessionKeyPresent", text(device["session_key_present"])),
        ("SessionKeyTpmBound", text(device["session_key_tpm_bound"])),
    ]
    if "session_key_error" in device:
        sso.append(("SessionKeyError", device["session_key_error"]))
    return [("Device State", rows), ("Attestation State", attestation), ("SSO State", sso)]


def cmd_status(ctx: Context) -> int:
    """Describe the join, the provider and the stored keys; check that every signing key signs."""
    info = ctx.provider.info()
    keys = ctx.store.list()
    broken = ctx.store.broken()
    device = _device_state(ctx, keys)
    test = _sign_test(ctx, keys)
    code = 1 if test.failures else 0
    if ctx.json:
        _write_json(
            {
                "device": device,
                "provider": {
                    "kind": info.kind,
                    "tpm_protected": info.hardware_backed,
                    "manufacturer": info.manufacturer,
                    "vendor": info.vendor,
                    "firmware_version": info.firmware_version,
                    "spec_version": info.spec_version,
                    "tcti": info.tcti,
                    "storage_key": info.storage_key,
                },
                "store": str(ctx.store.path),
                "keys": [_info_json(key) for key in keys],
                "broken_keys": [{"name": name, "error": error} for name, error in broken],
                "key_sign_test": {
                    "result": test.result,
                    "tested": test.tested,
                    "failures": [{"name": n, "error": e} for n, e in test.failures],
                },
            }
        )
        return code
    key_rows: list[tuple[str, str]] = [
        ("KeyStore", str(ctx.store.path)),
        ("KeyCount", str(len(keys))),
    ]
    for key in keys:
        key_rows += [
            ("", ""),
            ("KeyName", key.name),
            ("KeyType", key.key_type.value),
            ("KeyUsage", key.usage.value),
            ("KeyProvider", key.kind),
            ("HardwareBacked", _yes(key.hardware_backed)),
        ]
    for name, error in broken:
        key_rows += [("", ""), ("BrokenKey", name), ("BrokenKeyError", _one_line(error))]
    test_rows = [("KeySignTest", test.result)]
    test_rows += [("KeySignTestError", f"{name}: {error}") for name, error in test.failures]
    _write(
        _sections(
            [
                *_device_sections(device),
                ("Provider State", _provider_rows(info)),
                ("Key State", key_rows),
                ("Diagnostic Data", test_rows),
            ]
        )
    )
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the join demo, then show the status report of what it built."""
    from .demo import run_demo  # the demo pulls in attestation and the stand-in services

    out = sys.stderr if args.json else sys.stdout
    provider, store, cleanup = run_demo(args.provider, args.tcti, args.store, out, args.ek_ca)
    with cleanup:
        out.write("\n")
        return cmd_status(Context(args, provider, store))


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
    """List the keys of the store."""
    keys = ctx.store.list()
    for name, error in ctx.store.broken():
        log.warning("key %r cannot be read: %s", name, error)
    if ctx.json:
        _write_json({"store": str(ctx.store.path), "keys": [_info_json(key) for key in keys]})
        return 0
    if not keys:
        _write(f"No keys in {ctx.store.path}")
        return 0
    header = ("NAME", "TYPE", "USAGE", "PROVIDER", "HARDWARE", "ENCRYPTED")
    table = [header] + [
        (
            k.name,
            k.key_type.value,
            k.usage.value,
            k.kind,
            _yes(k.hardware_backed),
            _yes(k.encrypted),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    _write(
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        )
    )
    return 0


def cmd_keys_show(ctx: Context) -> int:
    """Describe a stored key, with its JWK thumbprint and public key."""
    name = ctx.args.name
    return _describe(ctx, ctx.store.info(name), ctx.load(name), title="Key")


def cmd_keys_delete(ctx: Context) -> int:
    """Delete a stored key."""
    name = ctx.args.name
    ctx.store.delete(name)
    if ctx.json:
        _write_json({"deleted": name})
    else:
        _write(f"Deleted key {name!r} from {ctx.store.path}")
    return 0


def cmd_keys_export(ctx: Context) -> int:
    """Write a key's public half to stdout in the chosen format."""
    name, fmt = ctx.args.name, ctx.args.format
    key = ctx.load(name)
    data: bytes
    if fmt == "jwk":
        document = formats.jwk(key)
        if ctx.json:
            _write_json({"name": name, "format": fmt, "data": document})
        else:
            _write_json(document)
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
        _write_json({"name": name, "format": fmt, "data": text})
    elif fmt == "pem":
        _write(data.decode("ascii"))
    elif fmt in ("der", "tpm"):
        _write_bytes(data)
    else:
        _write(base64.b64encode(data).decode("ascii"))
    return 0


# -- csr, sign ------------------------------------------------------------------------------


def cmd_csr(ctx: Context) -> int:
    """Write a PKCS#10 request signed by the key (SHA-256) as PEM."""
    key = ctx.load(ctx.args.name)
    csr = formats.build_csr(key, ctx.args.subject)
    pem = formats.csr_pem(csr).decode("ascii")
    if ctx.json:
        _write_json({"name": ctx.args.name, "subject": csr.subject.rfc4514_string(), "csr": pem})
    else:
        _write(pem)
    return 0


def cmd_sign(ctx: Context) -> int:
    """Sign the input's bytes; write the raw signature (PKCS#1, PSS or DER ECDSA)."""
    args = ctx.args
    key = ctx.load(args.name)
    data = _read_input(args.input)
    signature = formats.sign_raw(key, data, args.alg)
    to_stdout = args.output == "-"
    if not to_stdout:
        _write_output(args.output, signature)
    if ctx.json:
        document: dict[str, Any] = {"name": args.name, "alg": args.alg, "length": len(signature)}
        if to_stdout:
            document["signature"] = base64.b64encode(signature).decode("ascii")
        else:
            document["out"] = args.output
        _write_json(document)
    elif to_stdout:
        _write_bytes(signature)
    return 0


def _read_passphrase_file(path: str) -> bytes:
    """The first line of a passphrase file, without its newline; refused unless it is this
    user's own (mode 600 or stricter), as anyone who could read or change it has the keys."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise CommandError(f"the passphrase file {path} is not a regular file or a pipe")
            euid = os.geteuid()
            if st.st_uid != euid:
                raise CommandError(
                    f"the passphrase file {path} is owned by uid {st.st_uid}, "
                    f"not by this user (uid {euid})"
                )
            if st.st_mode & 0o077:
                raise CommandError(
                    f"the passphrase file {path} is open to other users "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
                )
            line = f.readline(MAX_PASSPHRASE + 1)
    except OSError as exc:
        raise CommandError(
            f"cannot read the passphrase file {path}: {exc.strerror or exc}"
        ) from exc
    passphrase = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(passphrase) > MAX_PASSPHRASE:
        raise CommandError(f"the passphrase in {path} is longer than {MAX_PASSPHRASE} bytes")
    if not passphrase:
        raise CommandError(f"the passphrase file {path} holds no passphrase on its first line")
    return passphrase


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write_output(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``entra-keys``, its global options and subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep Microsoft Entra device keys in a TPM 2.0 or in software.",
        epilog="A software key file is encrypted with the passphrase of --passphrase-file, else "
        f"${PASSPHRASE_ENV}, when one is given.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--provider",
        choices=PROVIDER_KINDS,
        default=None,
        help="where keys live (default: $ENTRA_KEYS_PROVIDER, else the TPM if there is one, "
        "else software)",
    )
    parser.add_argument("--tcti", help="the TPM to use, e.g. device:/dev/tpmrm0 or swtpm:path=SOCK")
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="key store directory (default: $ENTRA_KEYS_STORE or $XDG_DATA_HOME/entra-keys)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="the software-key passphrase, on the first line of FILE (yours alone: mode 600); "
        f"takes precedence over ${PASSPHRASE_ENV}, which stays readable in the environment",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="provider, TPM and keys; test-sign every key")
    status.set_defaults(handler=cmd_status)

    demo = commands.add_parser(
        "demo",
        help="run a whole join on a throwaway swtpm (or --tcti, or software) and show status",
    )
    demo.add_argument(
        "--ek-ca",
        metavar="PEM",
        action="append",
        default=[],
        help="a CA certificate the EK certificate chains to (for a TPM given with --tcti)",
    )
    demo.set_defaults(handler=None, run=cmd_demo)

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
    create.set_defaults(handler=cmd_keys_create)

    key_commands.add_parser("list", help="list the stored keys").set_defaults(handler=cmd_keys_list)

    show = key_commands.add_parser("show", help="describe a key and print its public key")
    show.add_argument("name")
    show.set_defaults(handler=cmd_keys_show)

    delete = key_commands.add_parser("delete", help="delete a stored key")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_keys_delete)

    export = key_commands.add_parser(
        "export", help="write the public key to stdout (tpm: its TPM2B_PUBLIC, for verify)"
    )
    export.add_argument("name")
    export.add_argument("--format", default="pem", choices=_EXPORT_FORMATS)
    export.set_defaults(handler=cmd_keys_export)

    csr = commands.add_parser("csr", help="write a PKCS#10 request signed by the key (PEM)")
    csr.add_argument("name")
    csr.add_argument(
        "--subject",
        default=formats.REGISTRATION_SUBJECT,
        help=f"RFC 4514 subject (default: {formats.REGISTRATION_SUBJECT})",
    )
    csr.set_defaults(handler=cmd_csr)

    sign = commands.add_parser("sign", help="write a raw signature over a file's bytes")
    sign.add_argument("name")
    sign.add_argument("--alg", required=True, choices=formats.SIGNATURE_ALGORITHMS)
    sign.add_argument("--in", dest="input", metavar="FILE", default="-", help="'-' for stdin")
    sign.add_argument("--out", dest="output", metavar="FILE", default="-", help="'-' for stdout")
    sign.set_defaults(handler=cmd_sign)
    add_session_commands(commands)
    add_attest_commands(commands)
    return parser


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _error(message: str) -> int:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``entra-keys`` on these arguments (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    if not args.verbose:
        # libtss2 logs its own errors to stderr; the one error line below already says what failed.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
    handler: Handler | None = args.handler
    provider: Provider | None = None
    try:
        if handler is None:  # a command that opens its own provider (demo)
            code: int = args.run(args)
            return code
        provider = open_provider(args.provider, tcti=args.tcti)
        ctx = Context(args, provider, KeyStore(provider, args.store))
        ctx.passphrase()  # a refused --passphrase-file fails the command before it starts
        return handler(ctx)
    except (EntraKeysError, CommandError) as exc:
        log.debug("%s failed", args.command, exc_info=True)
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        if provider is not None:
            provider.close()


if __name__ == "__main__":
    raise SystemExit(main())
