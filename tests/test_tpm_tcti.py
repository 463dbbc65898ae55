"""TCTI strings, parsed once: what the provider reads of them (the TPM under a ``pcap:`` wrapper,
the simulator's socket for the watchdog, the device for the no-TPM reason), and which TPM is
used when none is named. Needs no TPM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import entra_keys
from entra_keys.providers.tpm import Tcti, default_tcti
from entra_keys.providers.tpm import tcti as tcti_module


def test_a_simulator_on_a_unix_socket() -> None:
    tcti = Tcti.parse("swtpm:path=/run/tpm/sock")
    assert (tcti.name, tcti.conf, tcti.options) == ("swtpm", "path=/run/tpm/sock",
                                                    (("path", "/run/tpm/sock"),))  # fmt: skip
    assert tcti.inner == tcti.string == str(tcti) == "swtpm:path=/run/tpm/sock"
    assert tcti.simulator and tcti.socket_path == "/run/tpm/sock"
    assert tcti.port == 2321  # the default command port, watched as well
    assert tcti.device is None


def test_a_pcap_wrapper_names_the_tpm_under_it() -> None:
    tcti = Tcti.parse("pcap:pcap:mssim:host=localhost,port=2341")
    assert tcti.name == "pcap" and tcti.conf == "pcap:mssim:host=localhost,port=2341"
    assert tcti.inner == "mssim:host=localhost,port=2341"
    assert tcti.simulator and tcti.socket_path is None and tcti.port == 2341
    # The saved primary context and the process's other connections go by the inner TPM.
    assert Tcti.parse(tcti.inner).inner == tcti.inner


@pytest.mark.parametrize(
    ("string", "device"),
    [("device:/dev/tpmrm0", "/dev/tpmrm0"), ("device", "/dev/tpm0"), ("tabrmd", None),
     ("tabrmd:bus_type=session", None), ("pcap:device:/dev/tpmrm0", None)],
)  # fmt: skip
def test_devices_and_resource_managers_are_not_watched(string: str, device: str | None) -> None:
    tcti = Tcti.parse(string)
    assert not tcti.simulator and tcti.socket_path is None and tcti.port is None
    assert tcti.device == device


def test_a_port_that_is_no_number_is_not_watched() -> None:
    assert Tcti.parse("mssim:port=tpm").port is None


def test_the_default_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TPM2TOOLS_TCTI", "TSS2_TCTI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tcti_module, "TPM_DEVICE", "/nonexistent/tpmrm0")
    assert default_tcti() is None
    monkeypatch.setattr(tcti_module, "TPM_DEVICE", sys.executable)  # a file that exists
    assert default_tcti() == Tcti.parse(f"device:{sys.executable}")
    monkeypatch.setenv("TSS2_TCTI", "tabrmd")
    assert default_tcti() == Tcti.parse("tabrmd")
    monkeypatch.setenv("TPM2TOOLS_TCTI", "swtpm:path=/x")  # read first
    assert default_tcti() == Tcti.parse("swtpm:path=/x")


def test_the_tcti_module_loads_without_tpm2_pytss() -> None:
    """open_provider reads it to say why there is no TPM, where tpm2-pytss may be missing."""
    code = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "from entra_keys.providers.tpm.tcti import NO_TPM, Tcti\n"
        "print(Tcti.parse('device:/dev/tpmrm0').device, NO_TPM)"
    )
    src = str(Path(entra_keys.__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.stdout.startswith("/dev/tpmrm0 no TPM found: /dev/tpmrm0 does not exist")
