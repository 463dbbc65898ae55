"""A TCTI string (tpm2-tss's "name:conf"), parsed once, and the TPM to use when none is named.

This module does not import tpm2_pytss: ``open_provider`` reads it to say why there is no TPM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["NO_TPM", "SIMULATORS", "TPM_DEVICE", "Tcti", "default_tcti"]

#: The kernel's resource-managed TPM device, used when no TCTI is named.
TPM_DEVICE = "/dev/tpmrm0"

#: The environment variables that name a TCTI, in the order they are read.
_VARIABLES = ("TPM2TOOLS_TCTI", "TSS2_TCTI")

#: Why there is no TPM when none is named and there is no device.
NO_TPM = f"no TPM found: {TPM_DEVICE} does not exist and neither {' nor '.join(_VARIABLES)} is set"

#: The TCTIs of software TPMs, reached over a socket (the watchdog's business).
SIMULATORS = ("swtpm", "mssim")

#: A TCTI that wraps another one, named after its colon (``pcap:swtpm:path=...``).
_WRAPPERS = ("pcap",)

#: The simulators' TCP command port when none is named (the platform port is the next one).
_DEFAULT_PORT = 2321


@dataclass(frozen=True)
class Tcti:
    """One TCTI string and what the provider reads from it.

    ``name``, ``conf`` and ``options`` are the string's own (``device:/dev/tpmrm0`` has the
    option ``/dev/tpmrm0`` with an empty value); ``inner``, ``simulator``, ``socket_path`` and
    ``port`` are of the TCTI under ``pcap:`` wrappers, the one that does the I/O.
    """

    string: str
    name: str
    conf: str
    options: tuple[tuple[str, str], ...]
    #: The TCTI that does the I/O: the string without its ``pcap:`` wrappers.
    inner: str
    #: True for a software TPM on a socket (swtpm, mssim).
    simulator: bool
    #: A simulator's unix socket (``path=``), or None.
    socket_path: str | None
    #: A simulator's TCP command port (``port=``, 2321 when none is named), or None.
    port: int | None
    #: The device a ``device:`` TCTI opens (tpm2-tss's default /dev/tpm0 when none is named).
    device: str | None

    @classmethod
    def parse(cls, string: str) -> Tcti:
        """The TCTI of a string as tpm2-tss takes it (``name`` or ``name:conf``)."""
        name, _, conf = string.partition(":")
        inner = string
        while inner.partition(":")[0] in _WRAPPERS:
            inner = inner.partition(":")[2]
        inner_name, _, inner_conf = inner.partition(":")
        inner_options = _options(inner_conf)
        simulator = inner_name in SIMULATORS
        port = inner_options.get("port", str(_DEFAULT_PORT))
        return cls(
            string=string,
            name=name,
            conf=conf,
            options=tuple(_options(conf).items()),
            inner=inner,
            simulator=simulator,
            socket_path=inner_options.get("path") if simulator else None,
            port=int(port) if simulator and port.isdigit() else None,
            device=(conf.partition(",")[0] or "/dev/tpm0") if name == "device" else None,
        )

    def __str__(self) -> str:
        return self.string


def _options(conf: str) -> dict[str, str]:
    """A conf's comma-separated ``key=value`` options (a bare word has the value "")."""
    return dict(part.partition("=")[::2] for part in conf.split(",") if part)


def default_tcti() -> Tcti | None:
    """The TPM to use when none is named: ``TPM2TOOLS_TCTI``, ``TSS2_TCTI``, or /dev/tpmrm0."""
    for var in _VARIABLES:
        value = os.environ.get(var)
        if value:
            return Tcti.parse(value)
    if os.path.exists(TPM_DEVICE):
        return Tcti.parse(f"device:{TPM_DEVICE}")
    return None
