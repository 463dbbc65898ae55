"""The providers, and how one is chosen: an explicit choice, the environment, a TPM, software.

``open_provider`` follows, in order: the ``kind`` argument; ``ENTRA_KEYS_PROVIDER``; the TPM
named by ``tcti``, ``TPM2TOOLS_TCTI`` or ``TSS2_TCTI``, or at /dev/tpmrm0; and last the software
provider, with a logged warning. ``require_hardware=True`` turns that last step into a
``HardwareUnavailable`` error that says why there is no TPM.
"""

from __future__ import annotations

import logging
import os

from ..errors import HardwareUnavailable, ProviderError
from ..provider import Provider
from .software import SoftwareProvider

__all__ = ["PROVIDER_KINDS", "open_provider"]

log = logging.getLogger(__name__)

PROVIDER_KINDS = ("auto", "tpm", "software")


def open_provider(
    kind: str | None = None, *, tcti: str | None = None, require_hardware: bool = False
) -> Provider:
    """Opens the provider chosen by argument, environment, or what the machine has."""
    chosen = kind or os.environ.get("ENTRA_KEYS_PROVIDER") or "auto"
    if chosen not in PROVIDER_KINDS:
        raise ProviderError(
            f"unknown provider {chosen!r}: choose one of {', '.join(PROVIDER_KINDS)}"
        )
    if chosen == "software":
        if require_hardware:
            raise HardwareUnavailable("hardware was required but the software provider was chosen")
        return SoftwareProvider()
    from .tpm import TPMProvider, default_tcti

    if chosen == "tpm":
        return TPMProvider(tcti)
    if tcti or default_tcti() is not None:
        try:
            return TPMProvider(tcti)
        except ProviderError as exc:
            if require_hardware:
                raise HardwareUnavailable(f"the TPM cannot be used: {exc}") from exc
            reason = f"the TPM cannot be used ({exc})"
    else:
        reason = (
            "no TPM found: /dev/tpmrm0 does not exist and neither TPM2TOOLS_TCTI nor "
            "TSS2_TCTI is set"
        )
        if require_hardware:
            raise HardwareUnavailable(reason)
    log.warning("%s; using the software provider (keys are not hardware-backed)", reason)
    return SoftwareProvider()
