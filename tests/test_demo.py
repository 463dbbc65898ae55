"""The main job: ``entra-keys demo`` runs a whole join to the end, on both providers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import entra_keys
from entra_keys.cli import main
from entra_keys.testing.swtpm import Swtpm

from .helpers import transient_handles

STEPS = 13
GUID = re.compile(r"DeviceId : ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def field(output: str, name: str) -> str:
    found = re.search(rf"^\s*{name} : (.*)$", output, re.MULTILINE)
    assert found, f"{name} missing from:\n{output}"
    return found.group(1).strip()


def assert_joined(output: str, *, hardware: bool) -> None:
    assert output.count(": PASSED (") == STEPS, output
    assert "FAILED" not in output
    assert GUID.search(output), output
    assert field(output, "AzureAdJoined") == "YES"
    assert re.fullmatch(r"[0-9A-F]{40}", field(output, "Thumbprint"))
    assert field(output, "TpmProtected") == ("YES" if hardware else "NO")
    assert field(output, "AkEnrolled") == "YES"
    assert field(output, "SessionKeyPresent") == "YES"
    assert field(output, "SessionKeyTpmBound") == ("YES" if hardware else "NO")
    assert field(output, "KeySignTest") == "PASSED"


def test_demo_on_a_swtpm_it_starts_itself(
    swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --tcti: the demo provisions, starts and stops its own swtpm."""
    code = main(["--store", str(tmp_path / "keys"), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "Starting a throwaway swtpm" in output
    assert_joined(output, hardware=True)
    assert field(output, "EkCertificateChain") == "verified"
    assert field(output, "KeyProvider") == "Microsoft Platform Crypto Provider"


def test_demo_on_the_software_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--provider", "software", "--store", str(tmp_path / "keys"), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert_joined(output, hardware=False)
    assert field(output, "KeyProvider") == "Microsoft Software Key Storage Provider"


def test_demo_on_a_given_tpm_and_status_afterwards(
    swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tcti: the demo uses that TPM; a later ``status`` reports the join from the store."""
    base = ["--tcti", swtpm.tcti, "--store", str(tmp_path / "keys")]
    cas = [arg for path in swtpm.ca_certificates for arg in ("--ek-ca", str(path))]
    assert main([*base, "demo", *cas]) == 0
    demo_output = capsys.readouterr().out
    assert_joined(demo_output, hardware=True)
    assert transient_handles(swtpm.tcti) == []

    assert main([*base, "--json", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    device = status["device"]
    assert device["azure_ad_joined"] is True
    assert device["device_id"] in demo_output
    assert device["tpm_protected"] is True
    assert device["ak_enrolled"] is True
    assert device["ek_certificate_chain"] == "verified"
    assert device["session_key_present"] is True
    assert device["session_key_tpm_bound"] is True
    assert status["key_sign_test"]["result"] == "PASSED"
    assert transient_handles(swtpm.tcti) == []


def test_demo_on_a_given_tpm_without_its_ca_stops_with_one_clear_line(
    swtpm: Swtpm, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", "--tcti", swtpm.tcti,
         "--store", str(tmp_path / "keys"), "demo"],
        env={"PYTHONPATH": str(Path(entra_keys.__file__).parent.parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    assert done.stderr.strip().splitlines() == [
        "entra-keys: error: no EK CA to check the chain against: give it with --ek-ca"
    ]
    assert transient_handles(swtpm.tcti) == []
