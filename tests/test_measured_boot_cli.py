"""``entra-keys attest eventlog``, ``attest quote --event-log`` and ``verify quote --event-log
--boot-policy``: the real logs read, and the synthetic boot quoted by a swtpm of the module's own
through the commands, verified, tampered with and refused (exit 1, one error line; with
``--json`` also ``{"valid": false, ...}``)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from entra_keys.cli import main
from entra_keys.tcg.eventlog import KERNEL_EVENT_LOG, parse_event_log
from entra_keys.testing.measured_boot import synthetic_boot
from entra_keys.testing.swtpm import Swtpm, SwtpmError, swtpm_available

from .helpers import transient_handles, unavailable

REALWORLD = Path(__file__).parent / "vectors" / "realworld"
NONCE = "00112233445566778899aabbccddeeff"
PCRS = "0,1,2,3,4,5,6,7,8,9,12,14"
BOOT = synthetic_boot()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("clean_cli_environment")
def test_eventlog_prints_events_and_boot_facts(capsys: pytest.CaptureFixture[str]) -> None:
    log = REALWORLD / "tpm2-tools" / "event-moklisttrusted.bin"
    code, out, err = run(capsys, "attest", "eventlog", "--in", str(log))
    assert code == 0, err
    assert out.startswith("Event log: crypto-agile, 97 events, banks sha256")
    assert "Secure Boot: on" in out
    assert "verified by (Shim): 1.2.840.113549.1.9.1=secalert@redhat.com,CN=Red Hat" in out
    assert "kernel command line: (hd0,gpt2)/vmlinuz-5.14.0-130.el9.x86_64 root=UUID=" in out
    code, out, err = run(capsys, "--json", "attest", "eventlog", "--in", str(log))
    assert code == 0, err
    document = json.loads(out)  # one document
    assert document["format"] == "crypto-agile" and len(document["events"]) == 97
    facts = document["boot_facts"]
    assert facts["secure_boot"] is True and facts["data_mismatches"] == []
    line = facts["kernel_cmdlines"][0]  # GRUB's kernel_cmdline, and its linux command's arguments
    assert line.startswith("(hd0,gpt2)/vmlinuz") and facts["command_lines"] == [line, line]
    assert (
        facts["dbx"][0]["hash"]
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert sorted(document["pcrs"]["sha256"], key=int) == [str(pcr) for pcr in range(24)]


@pytest.mark.usefixtures("clean_cli_environment")
def test_eventlog_of_a_windows_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    raw = json.loads((REALWORLD / "go-attestation/windows_gcp_shielded_vm.json").read_text())
    path = tmp_path / "windows.bin"
    path.write_bytes(base64.b64decode(raw["Log"]["Raw"]))
    code, out, err = run(capsys, "--json", "attest", "eventlog", "--in", str(path))
    assert code == 0, err
    windows = json.loads(out)["boot_facts"]["windows"]
    assert windows["code_integrity"] is True and windows["test_signing"] is False
    assert windows["elam_drivers"] == ["Windows Defender"] and windows["bitlocker"] is True
    code, out, _ = run(capsys, "attest", "eventlog", "--in", str(path))
    assert "code integrity: on" in out and "ELAM: Windows Defender" in out


@pytest.mark.usefixtures("clean_cli_environment")
def test_eventlog_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(BOOT.log()[:-5])
    code, out, err = run(capsys, "attest", "eventlog", "--in", str(bad))
    assert (code, out) == (1, "")
    assert err.startswith("entra-keys: error: event log: event ") and "offset" in err
    code, _, err = run(capsys, "attest", "eventlog", "--in", str(tmp_path / "missing"))
    assert code == 1 and "cannot read the event log" in err
    code, _, err = run(capsys, "attest", "eventlog")  # the kernel's: absent, or root only
    if not Path(KERNEL_EVENT_LOG).exists():
        assert code == 1 and "no event log at /sys/kernel/security" in err


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Swtpm, Path]]:
    """A swtpm of this module's own with the synthetic boot extended into it, and its log."""
    if not swtpm_available():
        unavailable("swtpm is not installed")
    directory = tmp_path_factory.mktemp("measured-cli")
    tpm = Swtpm(directory / "tpm")
    try:
        tpm.start()
    except SwtpmError as exc:
        unavailable(f"swtpm does not start: {exc}")
    path = directory / "binary_bios_measurements"
    try:
        BOOT.extend(tpm.tcti, path)
        yield tpm, path
    finally:
        left = transient_handles(tpm.tcti)
        tpm.stop()
        assert left == [], f"transient objects left in the TPM: {left}"


def _policy(tmp_path: Path, **overrides: object) -> Path:
    document = {
        "secure_boot": True,
        "allowed_boot_loaders": [BOOT.authenticode("shim"), BOOT.authenticode("grub")],
        "allowed_kernels": [BOOT.authenticode("kernel")],
        "allowed_signers": [
            hashlib.sha256(BOOT.certificates[r]).hexdigest() for r in ("db", "shim")
        ],
        "allowed_kernel_cmdline_patterns": [r"/boot/vmlinuz-\S+ root=UUID=[0-9a-f-]+ ro quiet"],
        "required_dbx": [BOOT.dbx[0].hex()],
        **overrides,
    }
    path = tmp_path / f"policy-{len(list(tmp_path.glob('policy-*')))}.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.usefixtures("clean_cli_environment")
def test_quote_with_its_log_verifies_against_a_boot_policy(
    booted: tuple[Swtpm, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tpm, log = booted
    cli = ["--provider", "tpm", "--tcti", tpm.tcti, "--store", str(tmp_path / "store")]
    assert run(capsys, *cli, "attest", "ak", "create", "ak")[0] == 0
    code, out, _ = run(capsys, *cli, "--json", "keys", "export", "ak", "--format", "tpm")
    (tmp_path / "ak.tpm").write_bytes(base64.b64decode(json.loads(out)["data"]))
    quote = tmp_path / "quote.json"
    code, _, err = run(capsys, *cli, "attest", "quote", "--ak", "ak", "--pcrs", PCRS,
                       "--nonce", NONCE, "--out", str(quote), "--event-log", str(log))  # fmt: skip
    assert code == 0, err
    assert base64.b64decode(json.loads(quote.read_text())["event_log"]) == log.read_bytes()

    verify = ["verify", "quote", str(quote), "--ak-public", str(tmp_path / "ak.tpm"),
              "--nonce", NONCE]  # fmt: skip
    code, out, err = run(capsys, "--json", *verify, "--boot-policy", str(_policy(tmp_path)))
    assert code == 0, err
    document = json.loads(out)
    assert document["valid"] is True and document["checks"][-2:] == ["event-log", "boot-policy"]
    assert document["event_log"]["events_after_quote"] == 0
    assert document["boot_facts"]["secure_boot"] is True
    code, out, err = run(capsys, *verify, "--boot-policy", str(_policy(tmp_path)))
    assert code == 0 and "boot policy: met" in out and "Secure Boot: on" in out, err

    # another kernel allowed: the boot is refused, and says which fact
    other = _policy(tmp_path, allowed_kernels=["ab" * 32])
    code, out, err = run(capsys, "--json", *verify, "--boot-policy", str(other))
    assert code == 1 and json.loads(out)["valid"] is False
    assert "is not an allowed kernel" in json.loads(out)["error"]
    assert err.startswith("entra-keys: error: boot policy: the kernel")

    # an event's data edited, its digest kept: the replay matches, the text is not what was
    # measured: no fact is read from it (said), and a boot policy refuses the log
    edited = bytearray(log.read_bytes())
    at = edited.index(b"grub_cmd: set prefix")
    edited[at + 10 : at + 13] = b"SET"
    (tmp_path / "edited.bin").write_bytes(edited)
    code, out, err = run(capsys, *verify, "--event-log", str(tmp_path / "edited.bin"))
    assert code == 0 and "data not what its digest measured (no fact read)" in out, err
    code, _, err = run(capsys, *verify, "--event-log", str(tmp_path / "edited.bin"),
                       "--boot-policy", str(_policy(tmp_path)))  # fmt: skip
    assert code == 1 and "data is not what its digest measured" in err

    # an event's digest edited: the log does not replay to the quoted values
    events = parse_event_log(log.read_bytes()).events
    event = next(e for e in events if e.data.startswith(b"grub_cmd: set prefix"))
    digest = event.digests["sha256"]
    position = log.read_bytes().index(digest, event.offset)
    tampered = bytearray(log.read_bytes())
    tampered[position] ^= 0x01
    (tmp_path / "tampered.bin").write_bytes(tampered)
    code, out, err = run(capsys, "--json", *verify, "--event-log", str(tmp_path / "tampered.bin"))
    assert code == 1 and json.loads(out)["valid"] is False
    assert "does not replay to the quoted PCR values: sha256 PCR 8 is " in err


@pytest.mark.usefixtures("clean_cli_environment")
def test_a_boot_policy_needs_a_log_and_software_quotes_prove_no_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = ["--provider", "software", "--store", str(tmp_path / "store")]
    assert run(capsys, *cli, "attest", "ak", "create", "ak")[0] == 0
    code, out, _ = run(capsys, *cli, "--json", "keys", "export", "ak", "--format", "tpm")
    (tmp_path / "ak.tpm").write_bytes(base64.b64decode(json.loads(out)["data"]))
    quote = tmp_path / "quote.json"
    code, _, err = run(capsys, *cli, "attest", "quote", "--ak", "ak", "--nonce", NONCE,
                       "--out", str(quote), "--event-log")  # fmt: skip
    assert code == 1 and "no boot was measured" in err
    assert run(capsys, *cli, "attest", "quote", "--ak", "ak", "--nonce", NONCE,
               "--out", str(quote))[0] == 0  # fmt: skip
    verify = ["verify", "quote", str(quote), "--ak-public", str(tmp_path / "ak.tpm"),
              "--nonce", NONCE, "--allow-software"]  # fmt: skip
    policy = _policy(tmp_path)
    code, _, err = run(capsys, *verify, "--boot-policy", str(policy))
    assert code == 1 and "boot policy: no event log was given" in err
    (tmp_path / "log.bin").write_bytes(BOOT.log())
    code, _, err = run(capsys, *verify, "--event-log", str(tmp_path / "log.bin"),
                       "--boot-policy", str(policy))  # fmt: skip
    assert code == 1 and "boot policy:" in err  # no boot in software PCRs: nothing proved
    (tmp_path / "bad.json").write_text('{"secure_boot": 1}')
    code, _, err = run(capsys, *verify, "--boot-policy", str(tmp_path / "bad.json"))
    assert code == 1 and "'secure_boot' is a boolean" in err
