"""Attestation in software: the TPM's wire formats, signed by a software AK and marked as such.

The software provider makes the same objects as a TPM (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE
with RSASSA-SHA256 or ECDSA-SHA256), so that one verifier and the same tools read both; what the
objects look like comes from ``tcg.model``, the facts the TPM provider builds its templates from.
Every TPMS_ATTEST made here carries two marks a TPM never produces (``tcg.records``): the
``qualifiedSigner`` begins with TPM_ALG_NULL and "entra_keys software", and ``firmwareVersion`` is
"SOFTWARE" in ASCII. The verifier refuses an attestation with either mark unless its policy
allows software.

This is the producer only: it signs with a provider's key, so it sits above the keys, while the
records it makes and their JSON forms (``tcg.records``) and the tpm2-tools files
(``tcg.tpm2_tools``) sit below them, where the verifier reads them.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import HardwareUnavailable, InvalidData, UnsupportedAlgorithm
from ..provider import EntraPrivateKey, KeyType, KeyUsage, check_nonce
from ..tcg.eventlog import read_event_log
from ..tcg.model import (
    AK_HASH,
    EK_ATTRIBUTES_HIGH,
    EK_ATTRIBUTES_LOW,
    EK_POLICY_HIGH_SHA384,
    EK_POLICY_LOW,
    NAME_ALG,
    TPM_RH_OWNER,
    ak_signature_scheme,
    check_pcr_bank,
    check_pcr_indices,
    key_attributes,
)
from ..tcg.records import (
    SOFTWARE_FIRMWARE_VERSION,
    SOFTWARE_SIGNER_PREFIX,
    Certification,
    EndorsementKey,
    Quote,
)
from ..tcg.structures import (
    TPM_ALG_AES,
    TPM_ALG_CFB,
    TPM_ALG_SHA384,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    HashInfo,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSClockInfo,
    TPMSPCRSelection,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTScheme,
    TPMTSignature,
    TPMTSymDefObject,
    hash_info,
    hash_info_by_name,
)

__all__ = [
    "software_certify",
    "software_endorsement_key",
    "software_quote",
    "software_tpmt_public",
]

_TPM_RH_OWNER = struct.pack(">I", TPM_RH_OWNER)


# --- public areas --------------------------------------------------------------------------


def software_tpmt_public(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, usage: KeyUsage, *, pin: bool = False
) -> bytes:
    """The TPMT_PUBLIC the TPM provider gives a key of this use (nameAlg SHA-256, no
    symmetric; an AK restricted with RSASSA-SHA256 or ECDSA-SHA256; noDA without a PIN)."""
    key_type = KeyType.of(public_key)
    attrs = key_attributes(usage, pin=pin)
    scheme = TPMTScheme()
    if usage is KeyUsage.ATTEST:
        scheme = TPMTScheme(*ak_signature_scheme(key_type))
    public = TPMTPublic.from_public_key(public_key, attrs, name_alg=NAME_ALG, scheme=scheme)
    return public.to_bytes()


def software_endorsement_key(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> EndorsementKey:
    """A software EK in the EK Credential Profile's form: RSA-2048 and P-256 as the low-range
    templates (L-1, L-2), P-384 as the high-range one (H-3); no certificate, not hardware."""
    public = private_key.public_key()
    key_type = KeyType.of(public)
    if key_type in (KeyType.RSA2048, KeyType.ECC256):
        name_alg, attrs, bits = NAME_ALG, EK_ATTRIBUTES_LOW, 128
        policy = EK_POLICY_LOW
    elif key_type is KeyType.ECC384:
        name_alg, attrs, bits = TPM_ALG_SHA384, EK_ATTRIBUTES_HIGH, 256
        policy = EK_POLICY_HIGH_SHA384
    else:
        raise UnsupportedAlgorithm(f"no EK template for {key_type.value}")
    tpmt = TPMTPublic.from_public_key(
        public,
        attrs,
        name_alg=name_alg,
        symmetric=TPMTSymDefObject(TPM_ALG_AES, bits, TPM_ALG_CFB),
        auth_policy=policy,
    )
    return EndorsementKey(
        key_type=key_type,
        public=tpmt.to_bytes(),
        certificate=None,
        nv_index=None,
        handle=None,
        hardware_backed=False,
    )


# --- quotes and certifications ---------------------------------------------------------------


def _attest_signer(ak: EntraPrivateKey) -> Callable[[bytes], bytes]:
    """The software AK's signing of TPM-format bytes; refuses a TPM key or another use."""
    sign: Callable[[bytes], bytes] | None = getattr(ak, "_attest_sign", None)
    if sign is None or ak.hardware_backed:
        raise UnsupportedAlgorithm("the attestation key must be a software key")
    if ak.usage is not KeyUsage.ATTEST:
        raise UnsupportedAlgorithm(f"a {ak.usage.value} key is not an attestation key")
    return sign


def _sign_attest(ak: EntraPrivateKey, attest: bytes) -> bytes:
    """TPMT_SIGNATURE over the attest bytes with the AK's TPM scheme (RSASSA/ECDSA-SHA256)."""
    der_or_raw = _attest_signer(ak)(attest)
    public = ak.public_key()
    sig_alg, hash_alg = ak_signature_scheme(KeyType.of(public))
    return TPMTSignature.from_signature(sig_alg, hash_alg, der_or_raw, public).to_bytes()


def _software_attest(
    ak: EntraPrivateKey, nonce: bytes, kind: int, attested: TPMSQuoteInfo | TPMSCertifyInfo
) -> bytes:
    ak_public = ak.public_key()
    ak_name = TPMTPublic.parse(software_tpmt_public(ak_public, KeyUsage.ATTEST)).name()
    clock = TPMSClockInfo(int(time.monotonic() * 1000), 0, 0, True)
    return TPMSAttest(
        magic=TPM_GENERATED_VALUE,
        type=kind,
        qualified_signer=SOFTWARE_SIGNER_PREFIX + ak_name,
        extra_data=bytes(nonce),
        clock_info=clock,
        firmware_version=SOFTWARE_FIRMWARE_VERSION,
        attested=attested,
    ).to_bytes()


def _bank(bank: str) -> HashInfo:
    check_pcr_bank(bank)
    return hash_info_by_name(bank)


def software_quote(
    ak: EntraPrivateKey,
    pcrs: Sequence[int],
    nonce: bytes,
    bank: str = "sha256",
    pcr_values: Mapping[int, bytes] | None = None,
    *,
    event_log: bool | str | os.PathLike[str] = False,
) -> Quote:
    """A TPM2_Quote-shaped quote over software PCRs (all zero unless values are given), signed
    by a software AK; a nonce over 32 bytes is refused as a TPM refuses it. There is no boot
    log: ``event_log=True`` is HardwareUnavailable; a path's log is read and carried."""
    if event_log is True:
        raise HardwareUnavailable(
            "the software provider has no TPM: no boot was measured, so there is no event log "
            "(give the path of one to carry it)"
        )
    check_nonce(nonce)
    _attest_signer(ak)
    check_pcr_indices(pcrs)
    info = _bank(bank)
    values = {p: bytes(info.digest_size) for p in pcrs} if pcr_values is None else dict(pcr_values)
    if sorted(values) != sorted(pcrs):
        raise InvalidData(f"PCR values are given for {sorted(values)}, not {sorted(pcrs)}")
    for index, value in values.items():
        if len(value) != info.digest_size:
            raise InvalidData(f"PCR {bank}:{index} is {len(value)} bytes, not {info.digest_size}")
    selection = TPMLPCRSelection((TPMSPCRSelection(info.alg, frozenset(pcrs)),))
    digest = hash_info(AK_HASH).digest(b"".join(values[p] for p in sorted(values)))
    attest = _software_attest(ak, nonce, TPM_ST_ATTEST_QUOTE, TPMSQuoteInfo(selection, digest))
    return Quote(
        attest=attest,
        signature=_sign_attest(ak, attest),
        pcr_bank=bank,
        pcr_values={p: values[p] for p in sorted(values)},
        nonce=bytes(nonce),
        hardware_backed=False,
        event_log=None if event_log is False else read_event_log(event_log),
    )


def software_certify(key_public_tpmt: bytes, ak: EntraPrivateKey, nonce: bytes) -> Certification:
    """A TPM2_Certify-shaped statement naming the key, signed by a software AK. The qualified
    name is computed as for a key directly under the owner hierarchy."""
    check_nonce(nonce)
    _attest_signer(ak)
    public = TPMTPublic.parse(key_public_tpmt)
    name = public.name()
    qualified = name[:2] + hash_info(public.name_alg).digest(_TPM_RH_OWNER + name)
    attest = _software_attest(ak, nonce, TPM_ST_ATTEST_CERTIFY, TPMSCertifyInfo(name, qualified))
    return Certification(
        attest=attest,
        signature=_sign_attest(ak, attest),
        key_public=bytes(key_public_tpmt),
        nonce=bytes(nonce),
        hardware_backed=False,
    )
