"""The providers, and how one is chosen: an explicit choice, the environment, a TPM, software.

``open_provider`` follows, in order: the ``kind`` argument; ``ENTRA_KEYS_PROVIDER``; the TPM
named by ``tcti``, ``TPM2TOOLS_TCTI`` or ``TSS2_TCTI``, or at /dev/tpmrm0; and last the software
provider, with a logged warning. A TPM that is named (``tcti``, or either variable) is a
requirement: when it cannot be opened the result is ``HardwareUnavailable`` with the reason,
never software keys, and ``ENTRA_KEYS_PROVIDER=software`` does not override it
(``HardwareUnavailable``; only an explicit ``kind`` does).
Only ``auto`` with no TPM named falls back, and ``require_hardware=True``
turns that fallback into a ``HardwareUnavailable`` error that says why there is no TPM. A key
store that holds TPM keys asks for exactly that (``KeyStore.open``): no silent downgrade of a
TPM join to software keys.
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HardwareUnavailable, TPMError, UnsupportedAlgorithm
from ..provider import Provider

if TYPE_CHECKING:
    from .tpm.tcti import Tcti

__all__ = ["PROVIDER_KINDS", "TCTI_VARIABLES", "open_provider", "tpm_unusable_reason"]

log = logging.getLogger(__name__)

PROVIDER_KINDS = ("auto", "tpm", "software")
#: The environment variables that name a TPM (tpm2-tools' and tpm2-tss's), as ``default_tcti``
#: reads them: a TPM named by one is required, as one named by ``tcti`` is.
TCTI_VARIABLES = ("TPM2TOOLS_TCTI", "TSS2_TCTI")


def open_provider(
    kind: str | None = None,
    *,
    tcti: str | None = None,
    require_hardware: bool = False,
) -> Provider:
    """Opens the provider chosen by argument, environment, or what the machine has; with
    ``require_hardware``, or a TPM named by ``tcti`` or the environment, only a TPM
    (``HardwareUnavailable`` says why it cannot be used)."""
    chosen = kind or os.environ.get("ENTRA_KEYS_PROVIDER") or "auto"
    if chosen not in PROVIDER_KINDS:
        raise UnsupportedAlgorithm(
            f"unknown provider {chosen!r}: choose one of {', '.join(PROVIDER_KINDS)}"
        )
    if chosen == "software":
        if require_hardware:
            raise HardwareUnavailable("hardware was required but the software provider was chosen")
        by = _named_by(tcti) if kind is None else None
        if by is not None:  # a named TPM is a requirement; a stale variable does not undo it
            raise HardwareUnavailable(
                f"a TPM is named by {by}, but $ENTRA_KEYS_PROVIDER chooses the software "
                "provider: a named TPM is required (no software keys for it); unset one of them "
                "or choose the provider explicitly (--provider, kind=)"
            )
        return _software()
    try:
        from .tpm import TPMProvider
        from .tpm.tcti import NO_TPM, Tcti, default_tcti
    except ImportError as exc:  # pragma: no cover - the package itself is missing
        raise HardwareUnavailable(f"the TPM provider cannot be loaded ({exc})") from exc

    named = Tcti.parse(tcti) if tcti else default_tcti()
    if chosen == "tpm":
        return TPMProvider(named)
    if named is not None:
        try:
            return TPMProvider(named)
        except (HardwareUnavailable, TPMError) as exc:
            reason = tpm_unusable_reason(named, exc)
            by = _named_by(tcti)
            if by is not None:  # a TPM the caller named is a requirement: no fallback
                raise HardwareUnavailable(
                    f"the TPM named by {by} ({named}) cannot be used: {reason}; a named TPM "
                    "is required (no fallback to software keys)"
                ) from exc
    else:
        reason = NO_TPM
    if require_hardware:
        raise HardwareUnavailable(f"the TPM cannot be used: {reason}")
    log.warning("%s; using the software provider (keys are not hardware-backed)", reason)
    return _software()


def _named_by(tcti: str | None) -> str | None:
    """What named the TPM: the ``tcti`` argument, else the variable ``default_tcti`` read; None
    when nothing did (the default device)."""
    if tcti:
        return "--tcti (tcti=)"
    return next((f"${var}" for var in TCTI_VARIABLES if os.environ.get(var)), None)


def _software() -> Provider:
    """The software provider, imported only where chosen: a TPM process never loads it."""
    from .software import SoftwareProvider

    return SoftwareProvider()


def tpm_unusable_reason(tcti: Tcti, exc: Exception) -> str:
    """Why the TPM at ``tcti`` did not open, in words a user acts on: tpm2-pytss missing, the
    device missing, a permission problem (which group to join), or the TCTI's own error."""
    text = str(exc)
    if "tpm2-pytss is not usable" in text:
        return text
    if tcti.device is None:
        return f"the TCTI {tcti} failed: {text}"
    device = Path(tcti.device)
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return f"the TPM device {device} does not exist (no TPM, or its driver is not loaded)"
    except OSError as err:
        return f"the TPM device {device} cannot be examined: {err.strerror}"
    if not os.access(device, os.R_OK | os.W_OK):
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o060 != 0o060:
            return (
                f"permission denied: {device} is open to its owner (uid {st.st_uid}) only (mode "
                f"{mode:o}); a udev rule should give it to group tss (mode 660)"
            )
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return (
            f"permission denied: {device} belongs to group {group} (mode {mode:o}): add the "
            f"user to it (usermod -aG {group} USER) "
            "and log in again"
        )
    return f"the TCTI {tcti} failed: {text}"
