"""The one boundary where a tpm2-pytss ``TSS2_Exception`` becomes an entra_keys error.

Every error keeps the TSS response code as ``.rc``. What maps to what::

    TSS2_Exception (rc)
    ├── TCTI layer, or any TSS layer's NO_CONNECTION / TRY_AGAIN / IO_ERROR  → TPMUnreachable
    ├── ESAPI MALFORMED_RESPONSE / INSUFFICIENT_RESPONSE (answer broken off) → TPMUnreachable
    ├── TPM_RC_OBJECT_MEMORY                                                 → TPMObjectMemory
    ├── TPM_RC_LOCKOUT                                                       → TPMLockout
    ├── TPM_RC_AUTH_FAIL / TPM_RC_BAD_AUTH                                   → TPMAuthFailure
    └── anything else                                                        → TPMError

A TPM code counts in every layer that carries one (``tpm_code``): the TPM's own, and a resource
manager's (tpm2-abrmd answers its own quota refusal as 0xb0902, TPM_RC_OBJECT_MEMORY in its
layer). ``is_stale`` says which errors mean the TPM restarted or was reset under the connection:
they are recovered from (``Connection.recover``), never taken for lost keys.

The codes are tpm2-pytss's names (``TPM2_RC``, ``TSS2_RC``, TPM 2.0 Part 2, 6.6); tpm2_pytss is
imported here only once a TSS error exists, so this module loads without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ...errors import (
    EntraKeysError,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
)

__all__ = [
    "is_object_memory",
    "is_stale",
    "is_tpm_refusal",
    "open_failed",
    "owner_password",
    "refused_as",
    "timed_out",
    "tpm_code",
    "translate",
    "with_lockout_state",
]


def _codes() -> tuple[Any, Any]:
    from tpm2_pytss.constants import TPM2_RC, TSS2_RC

    return TPM2_RC, TSS2_RC


def _base(rc: int, tss2_rc: Any) -> int:
    """The TSS base code: the response code without its layer."""
    return rc & ((1 << int(tss2_rc.RC_LAYER_SHIFT)) - 1)


def tpm_code(rc: int | None) -> int | None:
    """The TPM response code (TPM 2.0 Part 2, 6.6) that ``rc`` carries, with a format-one
    code's handle, parameter or session number stripped; None for a code of a TSS layer that
    carries none. The TPM's layer counts, and a resource manager's (tpm2-abrmd's quota refusal
    is TPM_RC_OBJECT_MEMORY in its own layer, 0xb0902; errors it passes on from the TPM may
    come in the RESMGR_TPM layer)."""
    if rc is None:
        return None
    tpm2_rc, tss2_rc = _codes()
    layer = rc & int(tss2_rc.RC_LAYER_MASK)
    layers = (tss2_rc.TPM_RC_LAYER, tss2_rc.RESMGR_RC_LAYER, tss2_rc.RESMGR_TPM_RC_LAYER)
    if layer not in {int(x) for x in layers}:
        return None
    base = rc & 0xFFFF
    if base & int(tpm2_rc.FMT1):
        return int(tpm2_rc.FMT1) + (base & 0x3F)
    return base


def translate(exc: Exception, what: str, tcti: str | None) -> TPMError:
    """Map a ``TSS2_Exception`` to the library's TPM errors, keeping its response code."""
    tpm2_rc, tss2_rc = _codes()
    rc = int(getattr(exc, "rc", 0))
    detail = f"{exc} (rc 0x{rc:x})"
    layer = rc & tss2_rc.RC_LAYER_MASK
    base = _base(rc, tss2_rc)
    code = tpm_code(rc)
    unreachable = (
        tss2_rc.BASE_RC_NO_CONNECTION,
        tss2_rc.BASE_RC_TRY_AGAIN,
        tss2_rc.BASE_RC_IO_ERROR,
    )
    if layer == tss2_rc.TCTI_RC_LAYER or (code is None and layer and base in unreachable):
        return TPMUnreachable(f"{what}: cannot reach the TPM at {tcti}: {detail}", rc)
    broken = (tss2_rc.BASE_RC_MALFORMED_RESPONSE, tss2_rc.BASE_RC_INSUFFICIENT_RESPONSE)
    if layer == tss2_rc.ESAPI_RC_LAYER and base in broken:
        return TPMUnreachable(f"{what}: the TPM at {tcti} broke off its answer: {detail}", rc)
    if code == tpm2_rc.OBJECT_MEMORY:
        return TPMObjectMemory(
            f"{what}: the TPM has no free object slot: keys are pinned with loaded() or "
            "another program left objects loaded (flush them with 'tpm2_flushcontext -t' "
            f"or restart the simulator) {detail}",
            rc,
        )
    if code == tpm2_rc.LOCKOUT:
        return TPMLockout(
            f"{what}: the TPM is in dictionary-attack lockout; it recovers after its "
            f"recovery interval, or clear it with the lockout authorization "
            f"('tpm2_dictionarylockout -c') {detail}",
            rc,
        )
    if code in (tpm2_rc.AUTH_FAIL, tpm2_rc.BAD_AUTH):
        return TPMAuthFailure(f"{what}: wrong authorization value {detail}", rc)
    return TPMError(f"{what} failed: {detail}", rc)


def owner_password(error: TPMAuthFailure) -> TPMAuthFailure:
    """The error for a storage primary the owner hierarchy refused: it has a password (not a
    wrong PIN: no key PIN was used), so persist the SRK once with it, or give the SRK."""
    return TPMAuthFailure(
        "the TPM's owner hierarchy has a password, so the provider cannot create its storage "
        "primary: persist the SRK once with 'entra-keys tpm init --owner-auth-file FILE' (API: "
        f"persist_storage_key(owner_auth=...)), or provision the SRK at 0x81000001 ({error})",
        error.rc,
    )


def open_failed(exc: Exception, tcti: str) -> TPMUnreachable:
    """The error for an ESAPI context that could not be opened on the TCTI."""
    rc = int(getattr(exc, "rc", 0))
    return TPMUnreachable(f"cannot open the TPM at {tcti}: {exc} (rc 0x{rc:x})", rc)


def timed_out(what: str, tcti: str | None, timeout: float, rc: int | None) -> TPMUnreachable:
    """The error for a command the watchdog ended: the TPM did not answer in time."""
    return TPMUnreachable(f"{what}: the TPM at {tcti} did not answer within {timeout:g} s", rc)


def is_object_memory(exc: Exception) -> bool:
    """True for TPM_RC_OBJECT_MEMORY in any layer: every transient object slot is taken (the
    TPM's), or the resource manager's quota for this connection is (tpm2-abrmd's)."""
    tpm2_rc, _ = _codes()
    return tpm_code(getattr(exc, "rc", None)) == int(tpm2_rc.OBJECT_MEMORY)


def is_stale(error: TPMError) -> bool:
    """True for what a TPM restart or reset does to a connection that outlives it: an object or
    session handle the TPM no longer holds (TPM_RC_HANDLE, TPM_RC_REFERENCE_H0..H6 and
    S0..S6), a TPM that waits for TPM2_Startup (TPM_RC_INITIALIZE), or a simulator's broken
    connection (an I/O error). The keys may be fine: the connection reloads what it needs and
    looks (``Connection.recover``)."""
    if isinstance(error, TPMUnreachable):
        return True
    tpm2_rc, _ = _codes()
    code = tpm_code(error.rc)
    if code is None:
        return False
    references = range(int(tpm2_rc.REFERENCE_H0), int(tpm2_rc.REFERENCE_S6) + 1)
    return code in references or code in (int(tpm2_rc.HANDLE), int(tpm2_rc.INITIALIZE))


def is_tpm_refusal(error: TPMError) -> bool:
    """True when the TPM itself refused the command's parameters: not a TSS or I/O error, and
    not a format-zero warning (TPM_RC_WARN: resources, retry, yielded, canceled; Part 2, 6.6.3),
    which is never about the parameters."""
    if isinstance(error, TPMUnreachable | TPMObjectMemory | TPMLockout | TPMAuthFailure):
        return False
    if error.rc is None:
        return False
    tpm2_rc, tss2_rc = _codes()
    if error.rc & tss2_rc.RC_LAYER_MASK not in (0, int(tss2_rc.RESMGR_TPM_RC_LAYER)):
        return False
    # A format-zero code (FMT1 clear) with the severity bit, which sits where format one keeps
    # its session flag (TPM2_RC.S), is a warning.
    return error.rc & int(tpm2_rc.FMT1 | tpm2_rc.S) != int(tpm2_rc.S)


def with_lockout_state(error: TPMError, what: str, esys: Any) -> TPMError:
    """Add the TPM's dictionary-attack state (TPM2_PT_LOCKOUT_COUNTER and the three properties
    after it) to an authorization error: tries left, or when the TPM lets one more try in and
    how to clear the lockout. The error as it is where the TPM does not answer."""
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import TPM2_CAP, TPM2_PT

    try:
        _, data = esys.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.LOCKOUT_COUNTER, 4)
    except TSS2_Exception:
        return error
    props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
    failures = props.get(int(TPM2_PT.LOCKOUT_COUNTER), 0)
    max_tries = props.get(int(TPM2_PT.MAX_AUTH_FAIL), 0)
    interval = props.get(int(TPM2_PT.LOCKOUT_INTERVAL), 0)
    if isinstance(error, TPMLockout):
        return TPMLockout(
            f"{what}: the TPM is in dictionary-attack lockout after {max_tries} wrong "
            f"authorizations; it forgives one every {interval} s, or clear the lockout with "
            "the lockout authorization ('tpm2_dictionarylockout -c')",
            error.rc,
            retry_after=interval,
        )
    left = max(max_tries - failures, 0)
    return TPMAuthFailure(
        f"{what}: wrong PIN; {left} tries left before the TPM locks out", error.rc, left
    )


@contextlib.contextmanager
def refused_as(error: type[EntraKeysError], message: str) -> Iterator[None]:
    """Turn the TPM's refusal of the commands in the block into ``error(f"{message} ({exc})")``:
    for commands whose refusal means something to the caller (a credential not made for it)."""
    from tpm2_pytss import TSS2_Exception

    try:
        yield
    except TSS2_Exception as exc:
        raise error(f"{message} ({exc})") from exc
