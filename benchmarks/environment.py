"""What the figures were measured on: the machine, library and tool versions, the TPM."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from typing import Any

import entra_keys

__all__ = ["machine", "tpm_info", "versions"]


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS and Python, and the load when the run started."""
    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    memory_mib = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_mib = int(f.readline().split()[1]) // 1024
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mib": memory_mib,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _tool(*args: str, pattern: str = r"(\d+(?:\.\d+)+)") -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else None


def versions() -> dict[str, str | None]:
    """entra_keys, its dependencies, matplotlib, libtss2, tpm2-tools and swtpm."""
    return {
        "entra_keys": entra_keys.__version__,
        "python": sys.version.split()[0],
        "cryptography": _package("cryptography"),
        "tpm2-pytss": _package("tpm2-pytss"),
        "asn1crypto": _package("asn1crypto"),
        "matplotlib": _package("matplotlib"),
        "libtss2-esys": _tool("pkg-config", "--modversion", "tss2-esys"),
        "tpm2-tools": _tool("tpm2_sign", "--version", pattern=r'version="([^"]+)"'),
        "swtpm": _tool("swtpm", "--version"),
    }


def tpm_info(tcti: str | None) -> dict[str, Any] | None:
    """The TPM's maker, firmware and specification version, as the provider reports them."""
    if tcti is None:
        return None
    with entra_keys.open_provider("tpm", tcti=tcti) as provider:
        info = provider.info()
    return {
        "manufacturer": info.manufacturer,
        "vendor": info.vendor,
        "firmware_version": info.firmware_version,
        "spec_version": info.spec_version,
        "storage_key": info.storage_key,
    }
