"""``entra-keys status``: the join, the provider and the keys, as ``dsregcmd /status`` shows them.

It checks that every key works: it signs a test message with every signing key, decrypts with
every transport key, derives once with the session key, loading each key once (a key that
does not load is reported, and a TPM that no longer holds the keys' storage hierarchy is one
state: leave and join again). A key that needs a PIN (the NGC key), or may have one (a TPM key
without noDA, whatever its file's emptyAuth says), is only loaded, never used: a use without its
PIN would count toward the TPM's dictionary-attack lockout. Loading (TPM2_Load) asks for no
authorization, so ``status`` never spends a try, however often it runs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .. import formats
from ..errors import EntraKeysError, KeysUnusable, WrongPassphrase
from ..provider import KeyUsage, ProviderInfo, SessionKey
from ..store import KeyInfo
from .common import (
    Context,
    SubParsers,
    add_command,
    info_json,
    one_line,
    sections,
    write,
    write_json,
    yes,
)

__all__ = ["SIGN_TEST_MESSAGE", "add_status_command", "cmd_status"]

#: What ``status`` signs with every signing key to show that it works.
SIGN_TEST_MESSAGE = b"entra-keys KeySignTest"

log = logging.getLogger(__name__)


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


#: What a key's health check does, by usage.
_HEALTH_TESTS = {
    KeyUsage.SIGN: "sign",
    KeyUsage.DECRYPT: "decrypt",
    KeyUsage.DERIVE: "derive",
    KeyUsage.ATTEST: "load",
}
#: What ``status`` says of a PIN-protected key it loaded (and did not use).
PIN_LOADS = "PIN-protected: loads, not used"
#: What it says of a software key file encrypted under its PIN (it cannot open it without).
PIN_NOT_OPENED = "PIN-protected: encrypted under its PIN, not opened"
#: What it says of a TPM key it only loaded because a wrong authorization would count toward
#: lockout (no noDA): it may have a PIN whatever its file says.
LOCKOUT_LOADS = "counts wrong PINs toward lockout (no noDA): loads, not used"
#: A stand-in authorization value: a TPM key loads without its PIN being checked (the TPM checks
#: it at each use), and a key loaded with this one is never used.
LOAD_ONLY_PIN = b"status: load only"
#: The message ``unusable`` keys report, and the state ``status`` shows for them.
UNUSABLE = "keys unusable on this TPM: leave and join again"


def _use_key(ctx: Context, info: KeyInfo, session_keys: dict[str, SessionKey]) -> None:
    """Use a stored key once as its job needs (sign and verify, a decrypt round trip, one
    derivation); an attestation key signs only TPM-made data, so it is loaded. A session key
    the device state loaded already is not loaded again (each load is a TPM command)."""
    if info.usage is KeyUsage.DERIVE:
        session_key = session_keys.get(info.name) or ctx.store.load_session_key(
            info.name, passphrase=ctx.passphrase()
        )
        if len(session_key.hmac_sha256(SIGN_TEST_MESSAGE)) != 32:
            raise EntraKeysError("the session key derives a key that is not 32 bytes")
        return
    key = ctx.load(info.name)
    if info.usage is KeyUsage.SIGN:
        alg = formats.algorithms_for(key)[0]
        signature = formats.sign_raw(key, SIGN_TEST_MESSAGE, alg)
        formats.verify_raw(key.public_key(), SIGN_TEST_MESSAGE, signature, alg)
    elif info.usage is KeyUsage.DECRYPT and isinstance(key, rsa.RSAPrivateKey):
        sha1 = hashes.SHA1()  # noqa: S303 - RSA-OAEP-SHA1 is what Entra encrypts with
        oaep = padding.OAEP(padding.MGF1(sha1), sha1, None)
        if key.decrypt(key.public_key().encrypt(SIGN_TEST_MESSAGE, oaep), oaep) != (
            SIGN_TEST_MESSAGE
        ):
            raise EntraKeysError("the transport key decrypts to other bytes")


def _load_pin_key(ctx: Context, info: KeyInfo) -> str:
    """Load a PIN-protected key without using it; what ``status`` says of it. A TPM key loads
    (its PIN is checked only at use); a software key file is written under its PIN, so it is
    not opened without it."""
    if info.kind == "tpm":
        if info.usage is KeyUsage.DERIVE:
            ctx.store.load_session_key(info.name)
        else:
            ctx.store.load(info.name, pin=LOAD_ONLY_PIN)
        return PIN_LOADS
    try:
        ctx.load(info.name)
    except WrongPassphrase:
        return PIN_NOT_OPENED
    return PIN_LOADS


def _load_only(ctx: Context, info: KeyInfo) -> None:
    """Load a key that may have a PIN without using it (its file says it has none: loaded as
    such; it is never used, so no authorization is ever sent)."""
    if info.usage is KeyUsage.DERIVE:
        ctx.store.load_session_key(info.name, passphrase=ctx.passphrase())
    else:
        ctx.load(info.name)


def _health(
    ctx: Context, keys: Sequence[KeyInfo], session_keys: dict[str, SessionKey]
) -> dict[str, dict[str, Any]]:
    """Each key's health by name: ``ok``, ``pin-protected`` (loaded only, with a ``note``),
    ``unusable`` (KeysUnusable) or ``failed``, with the test run and the error. A key that
    needs or may need a PIN is only loaded (``test`` says ``load``)."""
    out: dict[str, dict[str, Any]] = {}
    for info in keys:
        health: dict[str, Any] = {"result": "ok", "test": _HEALTH_TESTS[info.usage]}
        try:
            if info.pin:
                note = _load_pin_key(ctx, info)
                test = "load" if note == PIN_LOADS else "none"
                health.update(result="pin-protected", test=test, note=note)
            elif info.lockout:
                _load_only(ctx, info)
                health.update(test="load", note=LOCKOUT_LOADS)
            else:
                _use_key(ctx, info, session_keys)
        except KeysUnusable as exc:
            log.debug("key %r is unusable", info.name, exc_info=True)
            health.update(result="unusable", error=one_line(str(exc)))
        except EntraKeysError as exc:
            log.debug("the health check of key %r failed", info.name, exc_info=True)
            health.update(result="failed", error=one_line(str(exc)))
        out[info.name] = health
    return out


def _sign_test(keys: Sequence[KeyInfo], health: dict[str, dict[str, Any]]) -> _SignTest:
    """The KeySignTest: the health checks of the signing keys (a PIN-protected one is not
    signed with, so not tested)."""
    tested = [n.name for n in keys if n.usage is KeyUsage.SIGN and health[n.name]["test"] == "sign"]
    failures = [(n, health[n]["error"]) for n in tested if health[n]["result"] != "ok"]
    return _SignTest(tested=tested, failures=failures)


def _provider_rows(info: ProviderInfo) -> list[tuple[str, str]]:
    """The Provider State section: whether the provider is a TPM (``TpmPresent``: the report's
    one ``TpmProtected`` is the device key's, in Device State) and the TPM's identity."""
    rows = [("Provider", info.kind), ("TpmPresent", yes(info.hardware_backed))]
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


def _device_state(
    ctx: Context, keys: Sequence[KeyInfo], session_keys: dict[str, SessionKey]
) -> dict[str, Any]:
    """What ``dsregcmd /status`` shows of a join, from the join state the store recorded; the
    session key it loads goes into ``session_keys`` for the health check to use."""
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
            out["session_key_error"] = one_line(str(exc))
        else:
            session_keys[name] = key
            out["session_key_present"] = True
            out["session_key_tpm_bound"] = key.hardware_backed
    return out


def _device_sections(device: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The Device, Attestation and SSO State sections of the join state."""

    def text(value: Any) -> str:
        return "" if value is None else yes(value) if isinstance(value, bool) else str(value)

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
    session_keys: dict[str, SessionKey] = {}
    device = _device_state(ctx, keys, session_keys)
    # The session key the device state loaded is checked first, while it is still loaded.
    health = _health(ctx, sorted(keys, key=lambda k: k.name not in session_keys), session_keys)
    test = _sign_test(keys, health)
    unusable = any(h["result"] == "unusable" for h in health.values())
    code = 1 if any(h["result"] not in ("ok", "pin-protected") for h in health.values()) else 0
    if ctx.json:
        write_json(
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
                "keys": [{**info_json(key), "health": health[key.name]} for key in keys],
                "keys_unusable": unusable,
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
            ("HardwareBacked", yes(key.hardware_backed)),
            ("KeyHealth", health[key.name].get("note") or health[key.name]["result"].upper()),
        ]
        if "error" in health[key.name]:
            key_rows.append(("KeyHealthError", health[key.name]["error"]))
    if unusable:
        key_rows += [("", ""), ("KeysUnusable", UNUSABLE)]
    for name, error in broken:
        key_rows += [("", ""), ("BrokenKey", name), ("BrokenKeyError", one_line(error))]
    test_rows = [("KeySignTest", test.result)]
    test_rows += [("KeySignTestError", f"{name}: {error}") for name, error in test.failures]
    write(
        sections(
            [
                *_device_sections(device),
                ("Provider State", _provider_rows(info)),
                ("Key State", key_rows),
                ("Diagnostic Data", test_rows),
            ]
        )
    )
    return code


def add_status_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``status`` to the ``entra-keys`` subcommands."""
    status = commands.add_parser("status", help="provider, TPM and keys; test-sign every key")
    add_command(status, cmd_status)
