"""Provider selection: argument, environment, the TPM the machine has, then software."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import entra_keys
from entra_keys import HardwareUnavailable, ProviderError, open_provider
from entra_keys.testing.swtpm import Swtpm

from .helpers import transient_handles


@pytest.fixture
def no_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no TPM named anywhere (and none at /dev/tpmrm0 in this sandbox)."""
    for var in ("ENTRA_KEYS_PROVIDER", "TPM2TOOLS_TCTI", "TSS2_TCTI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("entra_keys.providers.tpm.TPM_DEVICE", "/nonexistent/tpmrm0")


def test_no_tpm_falls_back_to_software_with_a_warning(
    no_tpm: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        provider = open_provider()
    assert provider.kind == "software" and not provider.hardware_backed
    assert "no TPM found" in caplog.text and "not hardware-backed" in caplog.text


def test_requiring_hardware_without_a_tpm_says_why(no_tpm: None) -> None:
    with pytest.raises(HardwareUnavailable, match="/dev/tpmrm0 does not exist"):
        open_provider(require_hardware=True)
    with pytest.raises(HardwareUnavailable, match="software provider was chosen"):
        open_provider("software", require_hardware=True)


def test_requiring_hardware_with_a_dead_tcti_says_why(tmp_path: Path) -> None:
    with pytest.raises(HardwareUnavailable, match="cannot open the TPM"):
        open_provider(tcti=f"swtpm:path={tmp_path / 'gone'}", require_hardware=True)


def test_environment_chooses_the_provider(no_tpm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PROVIDER", "software")
    assert open_provider().kind == "software"
    monkeypatch.setenv("ENTRA_KEYS_PROVIDER", "quantum")
    with pytest.raises(ProviderError, match="unknown provider 'quantum'"):
        open_provider()


def test_tpm2tools_tcti_selects_the_tpm(
    swtpm: Swtpm, no_tpm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPM2TOOLS_TCTI", swtpm.tcti)
    with open_provider() as provider:
        assert provider.kind == "tpm" and provider.hardware_backed
        assert provider.info().tcti == swtpm.tcti
    assert transient_handles(swtpm.tcti) == []


def test_import_works_without_tpm2_pytss() -> None:
    """The package and the software provider work where tpm2-pytss (or libtss2) is absent."""
    code = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "import entra_keys\n"
        "p = entra_keys.open_provider('software')\n"
        "k = p.create_key(entra_keys.KeyType.ECC256, entra_keys.KeyUsage.SIGN)\n"
        "try:\n"
        "    entra_keys.open_provider('tpm', tcti='swtpm:path=/nonexistent')\n"
        "except entra_keys.HardwareUnavailable as e:\n"
        "    print('unavailable:', e)\n"
    )
    src = str(Path(entra_keys.__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert "unavailable: tpm2-pytss is not usable" in out


def test_public_api_is_complete() -> None:
    exported = set(entra_keys.__all__)
    errors = {name for name in vars(entra_keys.errors) if name[0].isupper() and
              isinstance(getattr(entra_keys.errors, name), type)}  # fmt: skip
    assert errors <= exported, errors - exported
    for name in exported:
        assert hasattr(entra_keys, name), name
