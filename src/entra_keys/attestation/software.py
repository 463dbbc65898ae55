"""Attestation in software: the TPM's wire formats, signed by a software AK and marked as such.

The software provider makes the same objects as a TPM (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE
with RSASSA-SHA256 or ECDSA-SHA256), so that one verifier and the same tools read both. Every
TPMS_ATTEST made here carries two marks a TPM never produces: ``qualifiedSigner`` begins with
TPM_ALG_NULL and "entra_keys software", and ``firmwareVersion`` is "SOFTWARE" in ASCII. The
verifier refuses an attestation with either mark unless its policy allows software.

Also here: the JSON form of quotes, certifications and EKs (base64 fields), and the files
``tpm2_checkquote -m MSG -s SIG -f PCRS`` reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import InvalidData, UnsupportedAlgorithm
from ..provider import (
    Certification,
    EndorsementKey,
    EntraPrivateKey,
    KeyType,
    KeyUsage,
    Quote,
    check_nonce,
)
from .structures import (
    TPM_ALG_AES,
    TPM_ALG_CFB,
    TPM_ALG_ECDSA,
    TPM_ALG_NULL,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMA_OBJECT,
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
    "EK_POLICY_HIGH_SHA384",
    "EK_POLICY_LOW",
    "SOFTWARE_FIRMWARE_VERSION",
    "SOFTWARE_SIGNER_PREFIX",
    "CheckquoteFiles",
    "certification_from_json",
    "certification_to_json",
    "endorsement_key_from_json",
    "endorsement_key_to_json",
    "is_software_attestation",
    "is_software_marked",
    "parse_tpm2_pcrs_file",
    "quote_from_json",
    "quote_to_json",
    "software_certify",
    "software_endorsement_key",
    "software_quote",
    "software_tpmt_public",
    "tpm2_pcrs_file",
    "write_checkquote_files",
]

#: firmwareVersion of every software TPMS_ATTEST: "SOFTWARE" in ASCII.
SOFTWARE_FIRMWARE_VERSION = int.from_bytes(b"SOFTWARE", "big")
#: The start of every software qualifiedSigner: TPM_ALG_NULL, which begins no TPM name, then a
#: label; the software AK's name follows.
SOFTWARE_SIGNER_PREFIX = struct.pack(">H", TPM_ALG_NULL) + b"entra_keys software"

#: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the low-range EK templates' authPolicy.
EK_POLICY_LOW = bytes.fromhex("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA")
#: The SHA-384 policy of the high-range EK templates (EK Credential Profile 2.0, H-3..).
EK_POLICY_HIGH_SHA384 = bytes.fromhex(
    "B26E7D28D11A50BC53D882BCF5FD3A1A074148BB35D3B4E4CB1C0AD9BDE419CA"
    "CB47BA09699646150F9FC000F3F80E12"
)
_EK_ATTRS_LOW = 0x000300B2
_EK_ATTRS_HIGH = _EK_ATTRS_LOW | TPMA_OBJECT.USERWITHAUTH
_TPM_RH_OWNER = struct.pack(">I", 0x40000001)

_BASE_ATTRS = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)


def is_software_attestation(attest: TPMSAttest) -> bool:
    """True when a TPMS_ATTEST carries either software mark (signer prefix or firmware)."""
    return is_software_marked(attest.qualified_signer, attest.firmware_version)


def is_software_marked(qualified_signer: bytes, firmware_version: int) -> bool:
    """True when either field carries the software provider's mark."""
    return firmware_version == SOFTWARE_FIRMWARE_VERSION or qualified_signer.startswith(
        SOFTWARE_SIGNER_PREFIX
    )


# --- public areas --------------------------------------------------------------------------


def software_tpmt_public(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, usage: KeyUsage, *, pin: bool = False
) -> bytes:
    """The TPMT_PUBLIC the TPM provider gives a key of this use (nameAlg SHA-256, no
    symmetric; an AK restricted with RSASSA-SHA256 or ECDSA-SHA256; noDA without a PIN)."""
    key_type = KeyType.of(public_key)
    attrs = _BASE_ATTRS if pin else _BASE_ATTRS | TPMA_OBJECT.NODA
    scheme = TPMTScheme()
    if usage is KeyUsage.DECRYPT:
        attrs |= TPMA_OBJECT.DECRYPT
    elif usage is KeyUsage.SIGN:
        attrs |= TPMA_OBJECT.SIGN_ENCRYPT
    elif usage is KeyUsage.ATTEST:
        attrs |= TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED
        scheme = TPMTScheme(TPM_ALG_RSASSA if key_type.is_rsa else TPM_ALG_ECDSA, TPM_ALG_SHA256)
    else:
        raise UnsupportedAlgorithm(f"a {usage.value} key has no asymmetric TPMT_PUBLIC")
    return TPMTPublic.from_public_key(public_key, attrs, scheme=scheme).to_bytes()


def software_endorsement_key(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> EndorsementKey:
    """A software EK in the EK Credential Profile's form: RSA-2048 and P-256 as the low-range
    templates (L-1, L-2), P-384 as the high-range one (H-3); no certificate, not hardware."""
    public = private_key.public_key()
    key_type = KeyType.of(public)
    if key_type in (KeyType.RSA2048, KeyType.ECC256):
        name_alg, attrs, policy, bits = TPM_ALG_SHA256, _EK_ATTRS_LOW, EK_POLICY_LOW, 128
    elif key_type is KeyType.ECC384:
        name_alg, attrs, policy, bits = TPM_ALG_SHA384, _EK_ATTRS_HIGH, EK_POLICY_HIGH_SHA384, 256
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
    sig_alg = TPM_ALG_RSASSA if isinstance(public, rsa.RSAPublicKey) else TPM_ALG_ECDSA
    return TPMTSignature.from_signature(sig_alg, TPM_ALG_SHA256, der_or_raw, public).to_bytes()


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
    if bank not in ("sha1", "sha256", "sha384", "sha512"):
        raise UnsupportedAlgorithm(f"PCR bank {bank!r}")
    return hash_info_by_name(bank)


def software_quote(
    ak: EntraPrivateKey,
    pcrs: Sequence[int],
    nonce: bytes,
    bank: str = "sha256",
    pcr_values: Mapping[int, bytes] | None = None,
) -> Quote:
    """A TPM2_Quote-shaped quote over software PCRs (all zero unless values are given), signed
    by a software AK; a nonce over 32 bytes is refused as a TPM refuses it."""
    check_nonce(nonce)
    _attest_signer(ak)
    if not pcrs or any(not 0 <= p <= 23 for p in pcrs) or len(set(pcrs)) != len(pcrs):
        raise InvalidData(f"PCR indices must be distinct and 0..23, not {list(pcrs)}")
    info = _bank(bank)
    values = {p: bytes(info.digest_size) for p in pcrs} if pcr_values is None else dict(pcr_values)
    if sorted(values) != sorted(pcrs):
        raise InvalidData(f"PCR values are given for {sorted(values)}, not {sorted(pcrs)}")
    for index, value in values.items():
        if len(value) != info.digest_size:
            raise InvalidData(f"PCR {bank}:{index} is {len(value)} bytes, not {info.digest_size}")
    selection = TPMLPCRSelection((TPMSPCRSelection(info.alg, frozenset(pcrs)),))
    digest = hash_info(TPM_ALG_SHA256).digest(b"".join(values[p] for p in sorted(values)))
    attest = _software_attest(ak, nonce, TPM_ST_ATTEST_QUOTE, TPMSQuoteInfo(selection, digest))
    return Quote(
        attest=attest,
        signature=_sign_attest(ak, attest),
        pcr_bank=bank,
        pcr_values={p: values[p] for p in sorted(values)},
        nonce=bytes(nonce),
        hardware_backed=False,
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


# --- JSON ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Fields:
    """Reads the members of a JSON object strictly; every problem is an exact InvalidData."""

    def __init__(self, source: str | bytes | Mapping[str, Any], kind: str, names: set[str]):
        self.kind = kind
        if isinstance(source, str | bytes):
            try:
                source = json.loads(source)
            except (ValueError, RecursionError) as exc:
                raise InvalidData(f"{kind} JSON: not JSON ({exc})") from exc
        if not isinstance(source, Mapping):
            raise InvalidData(f"{kind} JSON: an object was expected")
        self.data = source
        if source.get("kind") != kind:
            raise InvalidData(f"{kind} JSON: 'kind' is {source.get('kind')!r}, not {kind!r}")
        if source.get("version") != 1:
            raise InvalidData(f"{kind} JSON: version {source.get('version')!r} is not 1")
        unknown = sorted(set(source) - names - {"kind", "version"})
        missing = sorted(names - set(source))
        if unknown or missing:
            raise InvalidData(f"{kind} JSON: unknown members {unknown}, missing members {missing}")

    def raw(self, name: str, kinds: type | tuple[type, ...]) -> Any:
        value = self.data[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
            raise InvalidData(f"{self.kind} JSON: {name!r} has the wrong type")
        return value

    def b64(self, name: str) -> bytes:
        return self.decode(name, self.data[name])

    def decode(self, name: str, text: object) -> bytes:
        if not isinstance(text, str):
            raise InvalidData(f"{self.kind} JSON: {name!r} is not a base64 string")
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidData(f"{self.kind} JSON: {name!r} is not valid base64") from exc


_PCR_NAMES = frozenset(str(i) for i in range(24))


def quote_to_json(quote: Quote) -> str:
    """A quote as JSON: TPMS_ATTEST, TPMT_SIGNATURE, nonce and PCR values in base64."""
    return json.dumps(
        {
            "kind": "quote",
            "version": 1,
            "attest": _b64(quote.attest),
            "signature": _b64(quote.signature),
            "pcr_bank": quote.pcr_bank,
            "pcr_values": {str(i): _b64(v) for i, v in sorted(quote.pcr_values.items())},
            "nonce": _b64(quote.nonce),
            "hardware_backed": quote.hardware_backed,
        },
        indent=2,
    )


def quote_from_json(source: str | bytes | Mapping[str, Any]) -> Quote:
    """A quote from ``quote_to_json``'s form. ``hardware_backed`` is the sender's claim: only
    verification (``verify_quote``) decides what the quote proves."""
    f = _Fields(
        source,
        "quote",
        {"attest", "signature", "pcr_bank", "pcr_values", "nonce", "hardware_backed"},
    )
    raw_values = f.raw("pcr_values", dict)
    values: dict[int, bytes] = {}
    for index, value in raw_values.items():
        if not isinstance(index, str) or index not in _PCR_NAMES:
            raise InvalidData(f"quote JSON: PCR index {index!r} is not 0..23")
        values[int(index)] = f.decode(f"pcr_values[{index}]", value)
    return Quote(
        attest=f.b64("attest"),
        signature=f.b64("signature"),
        pcr_bank=f.raw("pcr_bank", str),
        pcr_values=dict(sorted(values.items())),
        nonce=f.b64("nonce"),
        hardware_backed=f.raw("hardware_backed", bool),
    )


def certification_to_json(certification: Certification) -> str:
    """A certification as JSON: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC and nonce in base64."""
    return json.dumps(
        {
            "kind": "certification",
            "version": 1,
            "attest": _b64(certification.attest),
            "signature": _b64(certification.signature),
            "key_public": _b64(certification.key_public),
            "nonce": _b64(certification.nonce),
            "hardware_backed": certification.hardware_backed,
        },
        indent=2,
    )


def certification_from_json(source: str | bytes | Mapping[str, Any]) -> Certification:
    """A certification from ``certification_to_json``'s form (``hardware_backed`` is a claim)."""
    f = _Fields(
        source, "certification", {"attest", "signature", "key_public", "nonce", "hardware_backed"}
    )
    return Certification(
        attest=f.b64("attest"),
        signature=f.b64("signature"),
        key_public=f.b64("key_public"),
        nonce=f.b64("nonce"),
        hardware_backed=f.raw("hardware_backed", bool),
    )


def endorsement_key_to_json(ek: EndorsementKey) -> str:
    """An EK as JSON: TPMT_PUBLIC and the DER certificate (or null) in base64."""
    return json.dumps(
        {
            "kind": "endorsement_key",
            "version": 1,
            "key_type": ek.key_type.value,
            "public": _b64(ek.public),
            "certificate": None if ek.certificate is None else _b64(ek.certificate),
            "nv_index": ek.nv_index,
            "handle": ek.handle,
            "hardware_backed": ek.hardware_backed,
        },
        indent=2,
    )


def endorsement_key_from_json(source: str | bytes | Mapping[str, Any]) -> EndorsementKey:
    """An EK from ``endorsement_key_to_json``'s form (``hardware_backed`` is a claim)."""
    f = _Fields(
        source,
        "endorsement_key",
        {"key_type", "public", "certificate", "nv_index", "handle", "hardware_backed"},
    )
    try:
        key_type = KeyType(f.raw("key_type", str))
    except ValueError as exc:
        raise InvalidData(f"endorsement_key JSON: unknown key_type {f.data['key_type']!r}") from exc
    cert = f.data["certificate"]
    return EndorsementKey(
        key_type=key_type,
        public=f.b64("public"),
        certificate=None if cert is None else f.b64("certificate"),
        nv_index=None if f.data["nv_index"] is None else f.raw("nv_index", int),
        handle=None if f.data["handle"] is None else f.raw("handle", int),
        hardware_backed=f.raw("hardware_backed", bool),
    )


# --- tpm2-tools files ----------------------------------------------------------------------

# tpm2-tools 5.x "serialized" PCR file: the C structures in host (little-endian) order.
# TPML_PCR_SELECTION: count, then 16 TPMS_PCR_SELECTION {hash, sizeofSelect, pcrSelect[4], pad};
# a count of TPML_DIGEST; each TPML_DIGEST: count, then 8 TPM2B_DIGEST {size, buffer[64]}.
_FILE_SELECTION = struct.Struct("<HB4sx")
_FILE_DIGEST = struct.Struct("<H64s")
_FILE_BANKS, _FILE_DIGESTS = 16, 8
_SELECTION_SIZE = 4 + _FILE_BANKS * _FILE_SELECTION.size
_DIGEST_LIST_SIZE = 4 + _FILE_DIGESTS * _FILE_DIGEST.size


def tpm2_pcrs_file(selection: TPMLPCRSelection, values: Mapping[int, Mapping[int, bytes]]) -> bytes:
    """The PCR file of ``tpm2_quote -o`` / ``tpm2_checkquote -f`` (tpm2-tools 5.x "serialized"
    form), with ``values`` as {hash alg: {PCR: value}} in the selection's order."""
    if len(selection.selections) > _FILE_BANKS:
        raise InvalidData(f"a PCR file holds at most {_FILE_BANKS} banks")
    out = [struct.pack("<I", len(selection.selections))]
    ordered: list[bytes] = []
    for sel in selection.selections:
        bits = sum(1 << p for p in sel.pcrs).to_bytes(4, "little")
        out.append(_FILE_SELECTION.pack(sel.hash, sel.size_of_select, bits))
        bank = values.get(sel.hash, {})
        for pcr in sorted(sel.pcrs):
            if pcr not in bank:
                raise InvalidData(f"no value for PCR {pcr} of bank 0x{sel.hash:04x}")
            ordered.append(bank[pcr])
    out.append(bytes(_FILE_SELECTION.size * (_FILE_BANKS - len(selection.selections))))
    groups = [ordered[i : i + _FILE_DIGESTS] for i in range(0, len(ordered), _FILE_DIGESTS)]
    out.append(struct.pack("<I", len(groups)))
    for group in groups:
        out.append(struct.pack("<I", len(group)))
        for value in group:
            if len(value) > 64:
                raise InvalidData(f"a PCR value is {len(value)} bytes, more than 64")
            out.append(_FILE_DIGEST.pack(len(value), value))
        out.append(bytes(_FILE_DIGEST.size * (_FILE_DIGESTS - len(group))))
    return b"".join(out)


def parse_tpm2_pcrs_file(data: bytes) -> tuple[TPMLPCRSelection, dict[int, dict[int, bytes]]]:
    """(selection, {hash alg: {PCR: value}}) from a tpm2-tools 5.x "serialized" PCR file."""
    what = "tpm2-tools PCR file"
    if len(data) < _SELECTION_SIZE + 4:
        raise InvalidData(f"{what}: {len(data)} bytes, shorter than its headers")
    (count,) = struct.unpack_from("<I", data, 0)
    if count > _FILE_BANKS:
        raise InvalidData(f"{what}: {count} banks, more than {_FILE_BANKS}")
    selections = []
    for i in range(count):
        alg, size, bits = _FILE_SELECTION.unpack_from(data, 4 + i * _FILE_SELECTION.size)
        if size > 4:
            raise InvalidData(f"{what}: sizeofSelect {size} is more than 4")
        mask = int.from_bytes(bits[:size], "little")
        selections.append(
            TPMSPCRSelection(alg, frozenset(p for p in range(8 * size) if mask >> p & 1), size)
        )
    selection = TPMLPCRSelection(tuple(selections))
    (groups,) = struct.unpack_from("<I", data, _SELECTION_SIZE)
    if len(data) != _SELECTION_SIZE + 4 + groups * _DIGEST_LIST_SIZE:
        raise InvalidData(f"{what}: {len(data)} bytes do not hold {groups} digest lists")
    digests: list[bytes] = []
    for g in range(groups):
        base = _SELECTION_SIZE + 4 + g * _DIGEST_LIST_SIZE
        (n,) = struct.unpack_from("<I", data, base)
        if n > _FILE_DIGESTS:
            raise InvalidData(f"{what}: a digest list of {n}, more than {_FILE_DIGESTS}")
        for k in range(n):
            size, buffer = _FILE_DIGEST.unpack_from(data, base + 4 + k * _FILE_DIGEST.size)
            if size > 64:
                raise InvalidData(f"{what}: a digest of {size} bytes, more than 64")
            digests.append(buffer[:size])
    wanted = sum(len(s.pcrs) for s in selections)
    if len(digests) != wanted:
        raise InvalidData(f"{what}: {len(digests)} PCR values for {wanted} selected PCRs")
    values: dict[int, dict[int, bytes]] = {}
    it = iter(digests)
    for sel in selections:
        bank = values.setdefault(sel.hash, {})
        for pcr in sorted(sel.pcrs):
            bank[pcr] = next(it)
    return selection, values


@dataclass(frozen=True)
class CheckquoteFiles:
    """The three files ``tpm2_checkquote -m MESSAGE -s SIGNATURE -f PCRS`` reads."""

    message: Path
    signature: Path
    pcrs: Path


def write_checkquote_files(
    quote: Quote, directory: str | Path, stem: str = "quote"
) -> CheckquoteFiles:
    """Writes STEM.msg (TPMS_ATTEST), STEM.sig (TPMT_SIGNATURE) and STEM.pcrs (PCR values)."""
    attest = TPMSAttest.parse(quote.attest)
    if not isinstance(attest.attested, TPMSQuoteInfo):
        raise InvalidData("the attestation is not a quote")
    bank = hash_info_by_name(quote.pcr_bank).alg
    pcrs = tpm2_pcrs_file(attest.attested.pcr_select, {bank: quote.pcr_values})
    folder = Path(directory)
    files = CheckquoteFiles(folder / f"{stem}.msg", folder / f"{stem}.sig", folder / f"{stem}.pcrs")
    files.message.write_bytes(quote.attest)
    files.signature.write_bytes(quote.signature)
    files.pcrs.write_bytes(pcrs)
    return files
