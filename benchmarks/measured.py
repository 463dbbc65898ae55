"""Measured boot: reading the largest real event log, and verify_quote with and without a log.

Parse, parse + replay, and parse + replay + boot facts of the largest real log in
``tests/vectors/realworld`` (go-attestation's ``option_rom_eventlog``, an HP machine's SHA-1
log, 72 KB), in MB/s, against SHA-256 over the same bytes (every reader reads each byte once).
Then ``verify_quote`` (RSA-2048 AK, one core) of a quote of a real log's replayed PCRs: without
the log (the baseline), with the log (tied to the quote, boot facts read), and with a synthetic
Secure Boot log and a boot policy over every fact. The quotes are the software provider's,
which quotes any PCR values it is given: verification is pure Python, and a TPM would only add
the time of making the quote, which these figures do not measure. No TPM is needed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from entra_keys import KeyType, KeyUsage, open_provider
from entra_keys.attestation import BootPolicy, QuoteResult, TrustPolicy, verify_quote
from entra_keys.providers.software_attest import software_quote
from entra_keys.tcg.eventlog import parse_event_log
from entra_keys.testing.measured_boot import synthetic_boot

from .context import Context
from .measure import Case, Contender, Result, Target, interleave, timed_loop

__all__ = ["CASES"]

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "realworld"
#: The largest real log, and the real log a quote is made of (crypto-agile, three banks).
LARGEST = VECTORS / "go-attestation" / "option_rom_eventlog"
QUOTED_LOG = VECTORS / "tpm2-tools" / "event-gce-ubuntu-2104-log.bin"
_NONCE = bytes(range(16))
_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14]
_READ = {n: f"measured.{n}" for n in ("sha256", "parse", "replay", "facts")}
_VERIFY = {n: f"measured.{n}" for n in ("verify_quote", "verify_quote_log", "verify_quote_policy")}


def _run_read(ctx: Context) -> list[Result]:
    data = LARGEST.read_bytes()
    log = parse_event_log(data)
    assert log.replay() and log.facts().windows is not None  # the figures read a real boot
    contenders = [
        Contender(
            _READ["sha256"],
            "SHA-256 over the log's bytes",
            timed_loop(lambda: hashlib.sha256(data).digest()),
        ),
        Contender(
            _READ["parse"],
            "parse_event_log",
            timed_loop(lambda: parse_event_log(data)),
            baseline=_READ["sha256"],
        ),
        Contender(
            _READ["replay"],
            "parse_event_log + replay (every bank)",
            timed_loop(lambda: parse_event_log(data).replay()),
            baseline=_READ["sha256"],
        ),
        Contender(
            _READ["facts"],
            "parse_event_log + replay + boot facts (every event decoded)",
            timed_loop(lambda: _facts(data)),
            baseline=_READ["sha256"],
        ),
    ]
    group = f"Event log: {LARGEST.name} ({len(data) / 1000:.1f} KB, {len(log.events)} events)"
    results = interleave(ctx, group, contenders)
    megabytes = len(data) / 1e6
    for result in results:  # logs per second, as MB per second
        result.samples = [rate * megabytes for rate in result.samples]
        result.unit = "MB/s"
        result.extra["log_bytes"] = len(data)
    return results


def _facts(data: bytes) -> object:
    log = parse_event_log(data)
    log.replay()
    return log.facts()


def _run_verify(ctx: Context) -> list[Result]:
    software = open_provider("software")
    ak = software.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    policy = TrustPolicy(allow_software=True)
    data = QUOTED_LOG.read_bytes()
    values = parse_event_log(data).replay()["sha256"]
    quote = software_quote(ak, _PCRS, _NONCE, "sha256", {p: values[p] for p in _PCRS})
    expected = {"sha256": quote.pcr_values}
    boot = synthetic_boot()
    booted_values = boot.replay()["sha256"]
    booted = software_quote(ak, _PCRS, _NONCE, "sha256", {p: booted_values[p] for p in _PCRS})
    boot_log = boot.log()
    boot_policy = BootPolicy(
        secure_boot=True,
        allowed_boot_loaders=[boot.authenticode("shim"), boot.authenticode("grub")],
        allowed_kernels=[boot.authenticode("kernel")],
        allowed_signers=[hashlib.sha256(boot.certificates[r]).hexdigest() for r in ("db", "shim")],
        allowed_kernel_cmdline_patterns=[r"/boot/vmlinuz-\S+ root=UUID=[0-9a-f-]+ ro quiet"],
        required_dbx=[boot.dbx[0].hex()],
        allowed_firmware_versions=[boot.firmware_version],
    )

    def plain() -> QuoteResult:
        return verify_quote(quote.attest, quote.signature, ak.tpm_public, _NONCE, expected,
                            policy=policy)  # fmt: skip

    def with_log() -> QuoteResult:
        return verify_quote(quote.attest, quote.signature, ak.tpm_public, _NONCE, expected,
                            policy=policy, event_log=data)  # fmt: skip

    def with_policy() -> QuoteResult:
        return verify_quote(booted.attest, booted.signature, ak.tpm_public, _NONCE,
                            {"sha256": booted.pcr_values}, policy=policy, event_log=boot_log,
                            boot_policy=boot_policy)  # fmt: skip

    assert with_log().boot_facts is not None
    assert with_policy().checks[-1] == "boot-policy"
    contenders = [
        Contender(_VERIFY["verify_quote"], "verify_quote, no event log", timed_loop(plain)),
        Contender(
            _VERIFY["verify_quote_log"],
            f"verify_quote with the event log ({QUOTED_LOG.name}, {len(data) // 1000} KB)",
            timed_loop(with_log),
            baseline=_VERIFY["verify_quote"],
        ),
        Contender(
            _VERIFY["verify_quote_policy"],
            f"verify_quote with a Secure Boot log ({len(boot_log) // 1000} KB) and a boot "
            "policy over every fact",
            timed_loop(with_policy),
            baseline=_VERIFY["verify_quote"],
        ),
    ]
    return interleave(ctx, "verify_quote with and without an event log (RSA-2048 AK)", contenders)


CASES = (
    Case(
        id="measured-read",
        title="event log parse and replay throughput, the largest real log",
        figures=tuple(_READ.values()),
        run=_run_read,
        needs=frozenset(),
        targets=(
            Target("event log parse + replay (MB/s)", _READ["replay"]),
            Target(
                "event log parse + replay / SHA-256 of its bytes",
                _READ["replay"],
                over=_READ["sha256"],
            ),
        ),
    ),
    Case(
        id="measured-verify",
        title="verify_quote with and without an event log and a boot policy",
        figures=tuple(_VERIFY.values()),
        run=_run_verify,
        needs=frozenset(),
        targets=(
            Target(
                "verify_quote with a log / without",
                _VERIFY["verify_quote_log"],
                over=_VERIFY["verify_quote"],
            ),
            Target(
                "verify_quote with a log and a boot policy / without a log",
                _VERIFY["verify_quote_policy"],
                over=_VERIFY["verify_quote"],
            ),
        ),
    ),
)
