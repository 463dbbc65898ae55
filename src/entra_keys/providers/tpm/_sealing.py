"""Sealed secrets: a keyed-hash data object under the storage key, bound to a PIN and PCRs.

The sealed object is fixedTPM and fixedParent with no sign or decrypt attribute; it is created
and unsealed over salted sessions that encrypt the secret on the wire, so it never crosses the
TPM interface in the clear. A PIN is its authValue with noDA clear, so wrong PINs count toward
dictionary-attack lockout in the TPM (TPMAuthFailure says how many tries are left). PCRs bind it
by a policy: TPM2_PolicyPCR over the sha256 bank, then TPM2_PolicyAuthValue when there is a PIN.

The TPM seals a random AES-256 key, and the secret is encrypted with AES-256-GCM under it (a
sealed data object holds at most 128 bytes, and the TPM authenticates no data of ours): the GCM
tag covers the object, its parent, PIN flag and PCRs, and the name the blob was sealed as, so a
blob copied under another name is refused. Blobs of earlier releases (``_sealed_blob.UNBOUND``:
a secret of up to 128 bytes sealed in the object itself, no name) are refused unless the caller
vouches for them (``allow_unbound``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import (
    EntraKeysError,
    ForeignKey,
    KeyFileCorrupt,
    PCRMismatch,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    WrongPassphrase,
)
from ...tcg import model
from .. import _sealed_blob
from .._checks import check_pin, pcr_list
from . import _errors
from ._connection import Connection

__all__ = ["MAX_SEALED_DATA", "recorded_parent", "seal", "unseal"]

#: What a TPM sealed data object holds (MAX_SYM_DATA, TPM 2.0 Part 2, 10.4.4).
MAX_SEALED_DATA = 128
#: A PIN is the object's authValue, at most the size of its name algorithm's digest.
MAX_PIN = 32
_KIND = "tpm"
_PIN = 0x01  # flag: the object has a PIN
_ENVELOPE = 0x02  # flag: the object holds an AES-256-GCM key, the secret follows it encrypted
_BANK = "sha256"


def seal(
    conn: Connection,
    data: bytes,
    *,
    pin: bytes | None,
    pcrs: Sequence[int] | None,
    name: str = "",
) -> bytes:
    """Seal ``data`` to this TPM's storage key (and PIN and PCRs), bound to ``name``; returns
    the blob text."""
    _sealed_blob.check_secret(data)
    named = _sealed_blob.name_field(name)
    pin = check_pin(pin, limit=MAX_PIN, what="a TPM PIN")
    pcrs = pcr_list(pcrs) if pcrs is not None else None
    t = conn.tss
    selection = _selection(conn, pcrs) if pcrs is not None else None
    secret = bytearray(os.urandom(32))  # the envelope's key: what the TPM seals
    sensitive = t.TPM2B_SENSITIVE_CREATE(
        sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(bytes(secret)))
    )
    if pin:
        sensitive.sensitive.userAuth = t.TPM2B_AUTH(bytes(pin))

    def create() -> tuple[Any, Any]:
        with conn.command("seal a secret") as esys:
            policy = _policy_digest(conn, esys, selection, bool(pin))
            template = _template(t, pin=bool(pin), policy=policy)
            with conn.hmac_session(esys, encrypt=True) as session:
                _, private, public = conn.create(esys, sensitive, template, session, loaded=False)
        return private, public

    try:
        private, public = conn.retrying(create)
    finally:
        with contextlib.suppress(Exception):
            sensitive.sensitive.data.buffer[:] = bytes(len(secret))
            sensitive.sensitive.userAuth.buffer[:] = bytes(len(pin or b""))
    fields = [
        _sealed_blob.NAMED,
        conn.storage_parent.to_bytes(4, "big"),
        bytes([(_PIN if pin else 0) | _ENVELOPE]),
        bytes(sorted(pcrs or ())),
        bytes(public.marshal()),
        bytes(private.marshal()),
        named,
    ]
    nonce = os.urandom(12)
    aad = _sealed_blob.frame(_KIND, fields)
    fields += [nonce, AESGCM(bytes(secret)).encrypt(nonce, bytes(data), aad)]
    secret[:] = bytes(len(secret))
    return _sealed_blob.frame(_KIND, fields)


def recorded_parent(blob: bytes) -> int:
    """The storage parent a TPM sealed blob names (the handle it was sealed under), read
    without a TPM; KeyFileCorrupt for what is not one."""
    fields = _sealed_blob.unframe(blob, _KIND)
    if len(fields) < 2 or len(fields[1]) != 4:
        raise KeyFileCorrupt("not a TPM sealed secret")
    return int.from_bytes(fields[1], "big")


def unseal(
    conn: Connection,
    blob: bytes,
    *,
    pin: bytes | None,
    name: str = "",
    allow_unbound: bool = False,
) -> bytes:
    """The secret of a blob sealed by ``seal`` on this TPM as ``name``; typed errors for
    another name (KeyFileCorrupt, before the TPM is asked), another TPM (ForeignKey), a wrong
    PIN (TPMAuthFailure, with tries left), changed PCRs (PCRMismatch)."""
    pin = check_pin(pin, limit=MAX_PIN, what="a TPM PIN")
    fields = _sealed_blob.unframe(blob, _KIND)
    version = fields[0] if fields else b""
    if version == _sealed_blob.UNBOUND and len(fields) in (6, 8):
        _sealed_blob.refuse_unbound(allow_unbound)
        object_fields = 6
    elif version == _sealed_blob.NAMED and len(fields) == 9:
        _sealed_blob.check_name(fields[6], name)
        object_fields = 7
    else:
        raise KeyFileCorrupt("not a TPM sealed secret of a version entra_keys reads")
    if len(fields[1]) != 4:
        raise KeyFileCorrupt("the sealed blob's parent is damaged")
    parent = int.from_bytes(fields[1], "big")
    if len(fields[2]) != 1:
        raise KeyFileCorrupt("the sealed blob's flags are damaged")
    flags = fields[2][0]
    envelope = bool(flags & _ENVELOPE)
    if envelope is not (len(fields) == object_fields + 2):
        raise KeyFileCorrupt("the sealed blob is truncated")
    if flags & _PIN and not pin:
        raise WrongPassphrase("the secret was sealed with a PIN; give it to unseal")
    t = conn.tss
    try:
        public, _ = t.TPM2B_PUBLIC.unmarshal(fields[4])
        private, _ = t.TPM2B_PRIVATE.unmarshal(fields[5])
        selection = _selection(conn, list(fields[3])) if fields[3] else None
    except EntraKeysError as exc:
        raise KeyFileCorrupt(f"the sealed blob's PCR list is damaged ({exc})") from exc
    except Exception as exc:  # the unmarshalers raise several types on bad input
        raise KeyFileCorrupt(f"the sealed blob's TPM object does not parse ({exc})") from exc
    auth = pin if flags & _PIN else None
    secret = conn.retrying(lambda: _unseal_object(conn, private, public, parent, auth, selection))
    if not envelope:
        return secret
    try:
        aad = _sealed_blob.frame(_KIND, fields[:object_fields])
        nonce, ciphertext = fields[object_fields:]
        return AESGCM(secret).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise KeyFileCorrupt("the sealed secret was altered: its AES-GCM tag fails") from exc


def _unseal_object(
    conn: Connection, private: Any, public: Any, parent: int, pin: bytes | None, selection: Any
) -> bytes:
    """Load the sealed object under the parent the blob names, unseal it over an encrypting
    session, flush all of it."""
    with conn.lock:  # the load and the unseal in one run: nothing else uses the slot between
        try:
            with conn.command("load the sealed object") as esys:
                handle = conn.load(esys, private, public, bytes(pin) if pin else None, parent)
        except TPMError as exc:
            if isinstance(exc, TPMObjectMemory | TPMLockout) or _errors.is_stale(exc):
                raise
            raise ForeignKey(
                "this TPM refuses the sealed object: it was sealed by another TPM or under "
                f"another storage key, or the blob was altered ({exc})"
            ) from exc
        try:
            with conn.command("unseal a secret") as esys:
                try:
                    data = _unseal_in_session(conn, esys, handle, bool(pin), selection)
                finally:
                    conn.flush_object(esys, handle)
        except TPMError as exc:
            if selection is not None and _is_policy_fail(conn, exc):
                raise PCRMismatch(
                    f"the PCRs {_pcr_text(selection)} are not the values the secret was sealed "
                    "to (the boot chain or a PCR changed since); seal it again once the new "
                    "state is trusted",
                    exc.rc,
                ) from exc
            raise
    secret = bytes(data)
    with contextlib.suppress(Exception):
        data.buffer[:] = bytes(len(secret))
    return secret


def _unseal_in_session(conn: Connection, esys: Any, handle: Any, pin: bool, selection: Any) -> Any:
    """TPM2_Unseal in a salted session that encrypts the response's first parameter (the
    secret; TPM2_Unseal has no command parameter to encrypt): the connection's continued
    session where one is started, else one of its own that the unseal ends (continueSession
    clear: the TPM flushes it, no TPM2_FlushContext). With PCRs, a policy session of its own,
    satisfied by PolicyPCR (and PolicyAuthValue with a PIN) and ended the same way."""
    t = conn.tss
    if selection is None and conn.has_session:
        with conn.hmac_session(esys, encrypt=True, command=False) as session:
            return esys.unseal(handle, session1=session)
    kind = t.TPM2_SE.POLICY if selection is not None else t.TPM2_SE.HMAC
    session = conn.start_session(esys, kind)
    try:
        esys.trsess_set_attributes(session, t.TPMA_SESSION.ENCRYPT)
        if selection is not None:
            esys.policy_pcr(session, t.TPM2B_DIGEST(), selection)
            if pin:
                esys.policy_auth_value(session)
        data = esys.unseal(handle, session1=session)
    except BaseException:
        with contextlib.suppress(Exception):
            esys.flush_context(session)
        raise
    esys.tr_close(session)  # the TPM ended it with the command: only ESYS's record is left
    return data


def _policy_digest(conn: Connection, esys: Any, selection: Any, pin: bool) -> bytes | None:
    """The authPolicy of a PCR-bound object: PolicyPCR over the PCRs' values now, then
    PolicyAuthValue with a PIN, computed in a trial session (flushed); None without PCRs."""
    if selection is None:
        return None
    t = conn.tss
    trial = esys.start_auth_session(
        tpm_key=t.ESYS_TR.NONE,
        bind=t.ESYS_TR.NONE,
        session_type=t.TPM2_SE.TRIAL,
        symmetric=t.TPMT_SYM_DEF(algorithm=t.TPM2_ALG.NULL),
        auth_hash=t.TPM2_ALG.SHA256,
    )
    try:
        esys.policy_pcr(trial, t.TPM2B_DIGEST(), selection)
        if pin:
            esys.policy_auth_value(trial)
        return bytes(esys.policy_get_digest(trial))
    finally:
        esys.flush_context(trial)


def _template(t: Any, *, pin: bool, policy: bytes | None) -> Any:
    """The TPM2B_PUBLIC of a sealed data object: keyed-hash, scheme NULL, no sign or decrypt.

    With PCRs only the policy authorizes it (userWithAuth clear); without a PIN it is noDA, as
    an empty authValue has nothing to guess, and with one every wrong try counts.
    """
    a = t.TPMA_OBJECT
    attrs = a.FIXEDTPM | a.FIXEDPARENT
    if policy is None:
        attrs |= a.USERWITHAUTH
    if not pin:
        attrs |= a.NODA
    public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=model.NAME_ALG)
    public.objectAttributes = attrs
    public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.NULL
    if policy is not None:
        public.authPolicy = t.TPM2B_DIGEST(policy)
    return t.TPM2B_PUBLIC(publicArea=public)


def _selection(conn: Connection, pcrs: Sequence[int]) -> Any:
    """The TPML_PCR_SELECTION of distinct PCRs 0..23 in the sha256 bank."""
    model.check_pcr_indices(pcrs)
    return conn.tss.TPML_PCR_SELECTION.parse(f"{_BANK}:{','.join(map(str, sorted(pcrs)))}")


def _pcr_text(selection: Any) -> str:
    """'sha256:0,7' for messages."""
    picked = selection.pcrSelections[0]
    bits = int.from_bytes(bytes(picked.pcrSelect)[: picked.sizeofSelect], "little")
    return f"{_BANK}:" + ",".join(str(i) for i in range(24) if bits >> i & 1)


def _is_policy_fail(conn: Connection, error: TPMError) -> bool:
    """True for TPM_RC_POLICY_FAIL (a format-one code, whatever session it names)."""
    if isinstance(error, TPMUnreachable | TPMObjectMemory | TPMLockout) or error.rc is None:
        return False
    rc = conn.tss.TPM2_RC
    return error.rc & int(rc.FMT1) != 0 and error.rc & 0xBF == int(rc.POLICY_FAIL)
