"""Endorsement keys and what a TPM attests with them: EKs and their NV certificates, credential
activation, PCR quotes and key certification.

EKs are the persistent ones where provisioned, else made from the TCG EK Credential Profile
templates by ``tpm2_pytss.utils.create_ek_template``, which honours the template and nonce NV
indices a manufacturer may provision. Every TPM command counts on a chip: a persistent EK is read
once per connection (one TPM2_ReadPublic, ``Connection.persistent``), an NV index with one
TPM2_NV_ReadPublic and as few TPM2_NV_Read as its size needs (``_nv_read``), an index the
listing does not hold is not asked for, and the policy session of an EK ends with the command
it authorizes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ...errors import AttestationError, InvalidData
from ...provider import Certification, EndorsementKey, KeyType, Quote
from ...tcg import model
from . import _errors
from ._connection import Connection, tr_public
from ._keys import TPMECKey, TPMRSAKey, public_key_of

__all__ = ["activate_credential", "certify", "endorsement_keys", "pcr_selection", "quote"]

#: How often a quote is retried when a PCR changes between the PCR read and the quote.
QUOTE_TRIES = 3


def endorsement_keys(conn: Connection, key_type: KeyType | None = None) -> list[EndorsementKey]:
    """The TPM's EKs (persistent where provisioned, else made from the TCG templates), each
    with its certificate from NV where one is there (or why it is unreadable) and the EK
    certificate chain indices' certificates; with ``key_type``, only that one, and the other
    family's indices and keys are not read (three commands fewer on a TPM with both)."""
    return conn.retrying(lambda: _endorsement_keys(conn, key_type))


def _endorsement_keys(conn: Connection, key_type: KeyType | None) -> list[EndorsementKey]:
    families = {True, False} if key_type is None else {key_type.is_rsa}
    found: list[EndorsementKey] = []
    with conn.command("read the endorsement keys") as esys:
        nv = _nv_certificates(conn, esys, families)
        first, last = model.EK_PERSISTENT_FIRST, model.EK_PERSISTENT_LAST
        for handle in _handles(conn, esys, first, last):
            if key_type is not None and any(ek.key_type is key_type for ek in found):
                break  # the one asked for is found: the other persistent keys are not read
            _, public = conn.persistent(esys, handle)
            area = public.publicArea
            wanted = int(model.EK_ATTRIBUTES_LOW)
            if int(area.objectAttributes) & wanted != wanted:
                continue  # another kind of persistent key (an AK, a device key)
            found.append(_ek(conn, area, handle, nv))
        kinds = {ek.key_type.is_rsa for ek in found}
        for made in (KeyType.RSA2048, KeyType.ECC256):
            if made.is_rsa in families and made.is_rsa not in kinds:
                with _transient_ek(conn, esys, made, nv.defined) as (_, public):
                    found.append(_ek(conn, public.publicArea, None, nv))
    return [ek for ek in found if key_type is None or ek.key_type is key_type]


#: The EK certificate indices of RSA EKs (TCG EK Credential Profile 2.2.1.4: low range RSA-2048,
#: high range RSA-2048, RSA-3072, RSA-4096); the others are for ECC EKs.
_RSA_CERT_INDICES = frozenset({model.EK_CERT_NV_RSA, 0x01C00012, 0x01C0001C, 0x01C0001E})
#: The EK certificate chain indices (TCG EK Credential Profile 2.2.1.5).
_CHAIN_FIRST, _CHAIN_LAST = 0x01C00100, 0x01C001FF


class _NVCertificates:
    """What the EK certificate indices hold: the certificates read, the indices that could not
    be read (with the reason), and the chain indices' certificates and failures."""

    def __init__(self) -> None:
        #: The NV indices the TPM listed in the EK ranges (none other is asked for).
        self.defined: frozenset[int] = frozenset()
        self.certs: dict[int, tuple[bytes, tuple[str, ...]]] = {}
        self.errors: dict[int, str] = {}
        self.chain: list[bytes] = []
        self.chain_errors: list[str] = []


def _ek(conn: Connection, area: Any, handle: int | None, nv: _NVCertificates) -> EndorsementKey:
    public = public_key_of(conn.tss.TPM2B_PUBLIC(publicArea=area))
    key_type = KeyType.of(public)
    index, cert = None, None
    repairs: tuple[str, ...] = ()
    for nv_index, (der, done) in nv.certs.items():
        if _certified_key(der) == public:
            index, cert, repairs = nv_index, der, done
            break
    error = None
    if cert is None:  # an unreadable index of this EK's kind is why it has no certificate
        mine = [i for i in nv.errors if (i in _RSA_CERT_INDICES) == key_type.is_rsa]
        if mine:
            index, error = mine[0], nv.errors[mine[0]]
    return EndorsementKey(
        key_type=key_type,
        public=bytes(area.marshal()),
        certificate=cert,
        nv_index=index,
        handle=handle,
        hardware_backed=True,
        certificate_repairs=repairs,
        certificate_error=error,
        chain=tuple(nv.chain),
        chain_errors=tuple(nv.chain_errors),
    )


def _certified_key(der: bytes) -> Any:
    from cryptography import x509  # costly to import; only attestation needs it

    from ...tcg.nvcert import strict_der

    try:
        return x509.load_der_x509_certificate(strict_der(der)[0]).public_key()
    except (ValueError, InvalidData):
        return None


def _handles(conn: Connection, esys: Any, first: int, last: int) -> list[int]:
    _, data = esys.get_capability(conn.tss.TPM2_CAP.HANDLES, first, 256)
    return [int(h) for h in data.data.handles if first <= int(h) <= last]


def _nv_certificates(conn: Connection, esys: Any, families: set[bool]) -> _NVCertificates:
    """The EK certificate indices (low and high range) of the EK families asked for (``True``
    for RSA) and the chain indices, each read and made a certificate (``nvcert``: header and
    padding removed, non-strict DER made readable); an index that still is no certificate is
    kept with the reason, never dropped."""
    from tpm2_pytss.utils import NoSuchIndex

    from ...tcg.nvcert import nv_certificates, strict_der

    out = _NVCertificates()
    listed = _handles(conn, esys, model.EK_CERT_NV_RSA, _CHAIN_LAST)
    out.defined = frozenset(listed)
    indices = [
        h for h in listed if h in model.EK_CERT_NV_INDICES and (h in _RSA_CERT_INDICES) in families
    ]
    chain = [h for h in listed if _CHAIN_FIRST <= h <= _CHAIN_LAST]
    for index in (*indices, *chain):
        try:
            data = _nv_read(conn, esys, index)
        except NoSuchIndex:  # undefined since it was listed
            continue
        try:
            stored = nv_certificates(data, many=index in chain)
            repairs = [(s.der, (*s.repairs, *strict_der(s.der)[1])) for s in stored]
        except InvalidData as exc:
            reason = f"NV 0x{index:08x} ({len(data)} bytes): {exc}"
            if index in chain:
                out.chain_errors.append(reason)
            else:
                out.errors[index] = reason
            continue
        if index in chain:
            out.chain.extend(der for der, _ in repairs)
        else:
            out.certs[index] = repairs[0]
    return out


#: Bytes one TPM2_NV_Read asks for: MAX_NV_BUFFER_SIZE of most TPMs (1024); where a TPM refuses
#: that size, 512 (what every TPM reads: tpm2-pytss's own default).
_NV_CHUNKS = (1024, 512)


def _nv_read(conn: Connection, esys: Any, index: int) -> bytes:
    """An NV index's data: one TPM2_NV_ReadPublic (its size, from what ESYS keeps of the
    answer) and the TPM2_NV_Read its size needs. NoSuchIndex where there is none."""
    from tpm2_pytss.utils import NoSuchIndex

    t = conn.tss
    try:
        tr = esys.tr_from_tpmpublic(index)
    except t.TSS2_Exception as exc:
        if _errors.tpm_code(int(exc.rc)) == int(t.TPM2_RC.HANDLE):
            raise NoSuchIndex(index) from exc
        raise
    try:
        try:
            size = int(tr_public(t, esys, tr, nv=True).nvPublic.dataSize)
        except ValueError:  # metadata in another layout: ask the TPM
            size = int(esys.nv_read_public(tr)[0].nvPublic.dataSize)
        data = b""
        chunks = list(_NV_CHUNKS)
        while len(data) < size:
            want = min(chunks[0], size - len(data))
            try:
                data += bytes(esys.nv_read(tr, want, len(data)))
            except t.TSS2_Exception as exc:
                refused = _errors.is_tpm_refusal(_errors.translate(exc, "", None))
                if not refused or len(chunks) == 1 or want <= chunks[1]:
                    raise
                chunks.pop(0)  # a TPM with a smaller NV buffer
        return data
    finally:
        esys.tr_close(tr)


def _ek_template(
    conn: Connection, esys: Any, key_type: KeyType, defined: frozenset[int] | None = None
) -> Any:
    """The low-range TCG EK template (L-1 RSA-2048, L-2 P-256) with the manufacturer's template
    and nonce from NV where provisioned (``create_ek_template``); ``defined``, the NV indices
    the TPM listed, spares asking for the others."""
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template

    if key_type.is_rsa:
        name, cert_index = "EK-RSA2048", model.EK_CERT_NV_RSA
    else:
        name, cert_index = "EK-ECC256", model.EK_CERT_NV_ECC

    def read(index: int) -> bytes:
        if index == cert_index or (defined is not None and index not in defined):
            raise NoSuchIndex(index)  # certificates are matched to EKs by key, not read here
        return _nv_read(conn, esys, index)

    _, template = create_ek_template(name, read)
    return template


@contextlib.contextmanager
def _transient_ek(
    conn: Connection, esys: Any, key_type: KeyType, defined: frozenset[int] | None = None
) -> Iterator[tuple[Any, Any]]:
    """The EK made from its TCG template in the endorsement hierarchy (flushed after)."""
    t = conn.tss
    template = _ek_template(conn, esys, key_type, defined)
    handle, public, _, _, _ = conn.with_room(
        lambda: esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.ENDORSEMENT),
        1,
    )
    conn.objects += 1
    try:
        yield handle, public
    finally:
        conn.flush_object(esys, handle)


def _check_same_ek(public: Any, ek: EndorsementKey) -> None:
    if bytes(public.publicArea.marshal()) != ek.public:
        raise AttestationError("this TPM's endorsement key is not the one given")


@contextlib.contextmanager
def _ek_handle(conn: Connection, esys: Any, ek: EndorsementKey) -> Iterator[Any]:
    """A handle on this TPM's copy of the EK, refusing an EK this TPM does not hold."""
    if ek.handle is not None:
        tr, public = conn.persistent(esys, ek.handle)
        _check_same_ek(public, ek)
        conn.room(1)  # the TPM loads a persistent key into an object slot for the command
        yield tr
        return
    with _transient_ek(conn, esys, ek.key_type) as (handle, public):
        _check_same_ek(public, ek)
        yield handle


@contextlib.contextmanager
def _ek_auth(conn: Connection, esys: Any, ek: EndorsementKey) -> Iterator[Any]:
    """The EK's authorization: its empty password where userWithAuth is set (high-range
    EKs), else a policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT), which the command
    it authorizes ends (continueSession clear: no TPM2_FlushContext)."""
    t = conn.tss
    area, _ = t.TPMT_PUBLIC.unmarshal(ek.public)
    if int(area.objectAttributes) & int(t.TPMA_OBJECT.USERWITHAUTH):
        yield t.ESYS_TR.PASSWORD
        return
    session = esys.start_auth_session(
        tpm_key=t.ESYS_TR.NONE,
        bind=t.ESYS_TR.NONE,
        session_type=t.TPM2_SE.POLICY,
        symmetric=t.TPMT_SYM_DEF(algorithm=t.TPM2_ALG.NULL),
        auth_hash=area.nameAlg,
    )
    try:
        esys.trsess_set_attributes(session, 0)  # continueSession clear
        esys.policy_secret(t.ESYS_TR.ENDORSEMENT, session)
        yield session
    except BaseException:
        with contextlib.suppress(Exception):
            esys.flush_context(session)
        raise
    esys.tr_close(session)  # the TPM ended it with the command


def activate_credential(
    conn: Connection,
    ak: TPMRSAKey | TPMECKey,
    ek: EndorsementKey,
    credential_blob: bytes,
    encrypted_secret: bytes,
) -> bytes:
    """TPM2_ActivateCredential with this AK and EK (authorized by PolicySecret(endorsement))."""
    t = conn.tss
    try:
        blob, _ = t.TPM2B_ID_OBJECT.unmarshal(credential_blob)
        secret, _ = t.TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    except Exception as exc:  # the unmarshalers raise several types on short input
        raise InvalidData(f"not a TPM2B_ID_OBJECT / TPM2B_ENCRYPTED_SECRET ({exc})") from exc
    refused = "the TPM refused the credential: it was not made for this EK and this AK"

    def activate() -> bytes:
        with (
            ak._use("activate the credential") as (esys, ak_handle, ak_session),
            _ek_handle(conn, esys, ek) as ek_handle,
            _errors.refused_as(AttestationError, refused),
            _ek_auth(conn, esys, ek) as ek_session,
        ):
            cert_info = esys.activate_credential(
                ak_handle, ek_handle, blob, secret, session1=ak_session, session2=ek_session
            )
        return bytes(cert_info)

    return conn.retrying(activate)


def pcr_selection(conn: Connection, pcrs: Sequence[int], bank: str) -> Any:
    """The TPML_PCR_SELECTION of distinct PCRs 0..23 in one bank (tcg.model's checks)."""
    model.check_pcr_indices(pcrs)
    model.check_pcr_bank(bank)
    return conn.tss.TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, sorted(pcrs)))}")


def quote(
    conn: Connection,
    ak: TPMRSAKey | TPMECKey,
    selection: Any,
    pcrs: Sequence[int],
    nonce: bytes,
    bank: str,
) -> Quote:
    """TPM2_Quote over the selection with the PCR values read in the same run; retried while a
    PCR changes between the read and the quote."""
    return conn.retrying(lambda: _quote(conn, ak, selection, pcrs, nonce, bank))


def _quote(
    conn: Connection,
    ak: TPMRSAKey | TPMECKey,
    selection: Any,
    pcrs: Sequence[int],
    nonce: bytes,
    bank: str,
) -> Quote:
    t = conn.tss
    with ak._use("quote") as (esys, ak_handle, ak_session):
        for _ in range(QUOTE_TRIES):
            before, values = _pcr_values(conn, esys, bank, pcrs)
            attest, signature = esys.quote(
                ak_handle, selection, t.TPM2B_DATA(nonce), session1=ak_session
            )
            after, _ = _pcr_values(conn, esys, bank, pcrs[:1])
            if before == after:
                return Quote(
                    attest=bytes(attest),
                    signature=bytes(signature.marshal()),
                    pcr_bank=bank,
                    pcr_values=values,
                    nonce=bytes(nonce),
                    # An imported AK's private half is known outside: so is its word.
                    hardware_backed=ak.hardware_backed,
                )
    raise AttestationError(f"the PCRs kept changing while they were quoted ({QUOTE_TRIES} tries)")


def _pcr_values(
    conn: Connection, esys: Any, bank: str, pcrs: Sequence[int]
) -> tuple[int, dict[int, bytes]]:
    """The PCR update counter and values (TPM2_PCR_Read gives at most 8 per call)."""
    wanted = sorted(pcrs)
    values: dict[int, bytes] = {}
    counter = None
    for start in range(0, len(wanted), 8):
        part = wanted[start : start + 8]
        spec = f"{bank}:{','.join(map(str, part))}"
        update, _, digests = esys.pcr_read(conn.tss.TPML_PCR_SELECTION.parse(spec))
        if counter is None:
            counter = int(update)
        elif counter != int(update):
            counter = -1  # changed mid-read: the caller's comparison fails and retries
        values.update(zip(part, (bytes(d) for d in digests), strict=True))
    return counter if counter is not None else -1, values


def certify(
    conn: Connection, key: TPMRSAKey | TPMECKey, ak: TPMRSAKey | TPMECKey, nonce: bytes
) -> Certification:
    """TPM2_Certify: the AK signs that this key (by name) lives in this TPM. The AK is taken
    first, so that loading the key never pushes it out: certifying several keys in a row keeps
    the AK loaded."""
    t = conn.tss

    def run() -> tuple[Any, Any]:
        with (
            ak._use("certify") as (esys, ak_handle, ak_session),
            key._use("certify") as (_, key_handle, key_session),
        ):
            return esys.certify(  # type: ignore[no-any-return]
                key_handle,
                ak_handle,
                t.TPM2B_DATA(nonce),
                t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL),
                session1=key_session,
                session2=ak_session,
            )

    attest, signature = conn.retrying(run)
    return Certification(
        attest=bytes(attest),
        signature=bytes(signature.marshal()),
        key_public=key.tpm_public,
        nonce=bytes(nonce),
        # An imported key (or AK) is certified as what it is, never as hardware; a verifier
        # refuses it anyway (not sensitiveDataOrigin, or the AK not trusted).
        hardware_backed=key.hardware_backed and ak.hardware_backed,
    )
