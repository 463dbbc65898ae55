"""EK, AK and platform certificates: the chain to a TPM maker's CA, and what they say.

``verify_ek_certificate`` checks an EK certificate against the TCG EK Credential Profile and its
chain to the CA certificates given (or the policy's); ``verify_ak_certificate`` checks an AK
certificate's profile and chain; ``parse_platform_certificate`` reads a TCG platform certificate.

Every certificate is read by ``read_certificate``: cryptography's object for reading and the
bytes its issuer signed. A certificate in non-strict DER (Nuvoton's EK certificates and roots,
Intel's OnDie root) is read through a reading copy (``nvcert.strict_der``), and its issuer's
signature is checked over its tbsCertificate as stored (``nvcert.verify_signed_by``).

A chain of certificates cryptography reads as they are is built and verified by cryptography's
X.509 verifier (``x509.verification``), with extension policies made for TCG certificates,
which carry no id-kp-clientAuth and may lack the extensions the WebPKI profiles require. Other
chains are walked here (``_walk``): with a reading copy below the trust anchor, or where an
issuer is its CA's subject written in other string types (RFC 5280 §7.1 matches them;
cryptography's verifier compares bytes). A walk takes from each certificate the first CA whose
name matches and whose key signed it over the bytes as signed, each CA in date, a CA
(basicConstraints) within its path length and allowed keyCertSign; when cryptography's verifier
refuses a chain, the walk names the certificate at fault. What neither checks is checked here
first: the end entity's profile (not a CA, no keyCertSign or cRLSign, a strong key, for this EK
or AK, the key purpose), the TPM's names, and that no certificate of the chain has a critical
extension this module does not know (``_KNOWN_CRITICAL``). ``cryptography.x509`` is imported
when a certificate is checked.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import AttestationCheckFailed, Check, InvalidData
from ..formats import public_der
from ..tcg.nvcert import oid_text, read_tlv, strict_der, verify_signed_by
from ..tcg.public import PublicKey, TPMTPublic, tpmt_bytes
from .platformcert import PlatformCertificateInfo, parse_platform_certificate

if TYPE_CHECKING:  # cryptography.x509 is costly to import: only certificate checks need it
    from cryptography import x509
    from cryptography.x509.verification import ExtensionPolicy


class EKCAPolicy(Protocol):
    """What the EK checks need of a trust policy (``TrustPolicy`` is one): its EK CAs and the
    intermediates that help reach them, its validation time, and whether it accepts legacy EK
    certificates without the EK key purpose."""

    @property
    def allow_ek_without_eku(self) -> bool:
        """Accept an EK certificate without extendedKeyUsage (its result says so)."""
        ...

    @property
    def at(self) -> datetime | None:
        """The time certificates are checked at (None: now)."""
        ...

    def ek_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates EK certificates must chain to."""
        ...

    def ek_intermediate_certificates(self) -> Sequence[ReadCertificate]:
        """Intermediate CA certificates that help an EK certificate reach a trusted CA."""
        ...


__all__ = [
    "DEFAULT_AK_KEY_PURPOSES",
    "TCG_KP_AIK_CERTIFICATE",
    "TCG_KP_EK_CERTIFICATE",
    "AKCertificateInfo",
    "CertificateInput",
    "EKCAPolicy",
    "EKCertificateInfo",
    "EKPublic",
    "PlatformCertificateInfo",
    "ReadCertificate",
    "load_certificate",
    "parse_platform_certificate",
    "read_certificate",
    "resolve_ek",
    "tpm_vendor_name",
    "verify_ak_certificate",
    "verify_ek_certificate",
]

#: An EK as a caller may give it: a ``cryptography`` key, its TPMT_PUBLIC or TPM2B_PUBLIC.
EKPublic = PublicKey | TPMTPublic | bytes | bytearray | memoryview

#: tcg-kp-EKCertificate (TCG EK Credential Profile): the key purpose of an EK certificate, which
#: Google's cloud CA also writes in its vTPMs' AK certificates.
TCG_KP_EK_CERTIFICATE = "2.23.133.8.1"
#: tcg-kp-AIKCertificate: the key purpose Microsoft's AIK CA writes in AK certificates.
TCG_KP_AIK_CERTIFICATE = "2.23.133.8.3"
#: The key purposes an AK certificate may carry to be taken as one, unless a policy says
#: otherwise: Microsoft's (AIK) and Google's (EK) CAs' choices. Trusting a CA for AKs is the
#: policy's decision (``TrustPolicy.ak_key_purposes``).
DEFAULT_AK_KEY_PURPOSES = frozenset({TCG_KP_AIK_CERTIFICATE, TCG_KP_EK_CERTIFICATE})
_TPM_MANUFACTURER, _TPM_MODEL, _TPM_VERSION = "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"
_TPM_SPECIFICATION = "2.23.133.2.16"
#: The most certificates below a trust anchor: the leaf and seven intermediates.
_MAX_CHAIN = 8
# Extensions this check understands, so they may be critical (RFC 5280 4.2): the EK profile
# makes subjectAltName critical when the subject is empty.
_KNOWN_CRITICAL = frozenset(
    {
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName
        "2.5.29.19",  # basicConstraints
        "2.5.29.32",  # certificatePolicies
        "2.5.29.37",  # extKeyUsage
        "2.5.29.9",  # subjectDirectoryAttributes
        "2.5.29.14",  # subjectKeyIdentifier
        "2.5.29.35",  # authorityKeyIdentifier
    }
)
#: TPM makers by their TCG vendor id (TCG TPM Vendor ID Registry): four ASCII characters.
_VENDORS = {
    "AMD": "AMD", "ATML": "Atmel", "BRCM": "Broadcom", "CSCO": "Cisco", "FLYS": "Flyslice",
    "GOOG": "Google", "HISI": "Huawei", "HPE": "HPE", "IBM": "IBM", "IFX": "Infineon",
    "INTC": "Intel", "LEN": "Lenovo", "MSFT": "Microsoft", "NSM": "National Semiconductor",
    "NTZ": "Nationz", "NTC": "Nuvoton", "QCOM": "Qualcomm", "ROCC": "Fuzhou Rockchip",
    "SMSC": "SMSC", "SMSN": "Samsung", "SNS": "Sinosun", "STM": "STMicroelectronics",
    "TXN": "Texas Instruments", "WEC": "Winbond",
}  # fmt: skip


def tpm_vendor_name(manufacturer_id: int | None) -> str | None:
    """The TPM maker of a TCG vendor id (0x4E544300: "Nuvoton"), its ASCII characters when
    the registry's name is not known here, None when there is no id or it is not ASCII."""
    if manufacturer_id is None or not 0 <= manufacturer_id < 1 << 32:
        return None
    code = manufacturer_id.to_bytes(4, "big").rstrip(b"\x00 ")
    if not code or not all(0x20 < c < 0x7F for c in code):
        return None
    return _VENDORS.get(code.decode("ascii"), code.decode("ascii"))


@dataclass(frozen=True)
class EKCertificateInfo:
    """A checked EK certificate: its key, its chain (leaf first, a trusted CA last) and the TPM
    it names (manufacturer, model, version from subjectAltName; TPM specification)."""

    certificate: x509.Certificate
    public_key: PublicKey
    chain: tuple[x509.Certificate, ...]
    manufacturer: str | None
    model: str | None
    version: str | None
    #: The TCG vendor id when the manufacturer is written "id:XXXXXXXX" (swtpm: 0x00001014).
    manufacturer_id: int | None
    #: TPMSpecification (family, level, revision) from subjectDirectoryAttributes, if present.
    tpm_specification: tuple[str, int, int] | None
    #: True when the certificate names the EK key purpose (tcg-kp-EKCertificate, 2.23.133.8.1)
    #: in extendedKeyUsage, as real chips' do; False only for a legacy certificate without
    #: extendedKeyUsage that the caller accepted (``allow_ek_without_eku``).
    ek_key_purpose: bool = True
    #: What was done to read the certificates (non-strict DER re-encoded); empty for clean DER.
    repairs: tuple[str, ...] = ()
    #: The EK certificate as its CA signed it (DER): ``certificate`` may be a reading copy.
    der: bytes = b""

    @property
    def vendor(self) -> str | None:
        """The TPM maker's name from ``manufacturer_id`` (``tpm_vendor_name``)."""
        return tpm_vendor_name(self.manufacturer_id)


@dataclass(frozen=True)
class AKCertificateInfo:
    """A checked AK certificate and the TPM it names: what a result says of a certified AK.
    It holds bytes and text only, so that results pickle (to and from a ``VerifierPool``)."""

    #: The AK certificate as its CA signed it (DER).
    certificate: bytes
    #: The chain as DER, leaf first, the trusted CA last.
    chain: tuple[bytes, ...]
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    #: The TPM's manufacturer, model and version (its firmware) from subjectAltName (TPM names
    #: 2.23.133.2.1-3), None when the certificate has no subjectAltName.
    manufacturer: str | None
    model: str | None
    version: str | None
    #: The TCG vendor id when the manufacturer is written "id:XXXXXXXX" (Nuvoton: 0x4E544300).
    manufacturer_id: int | None
    #: The certificate's extendedKeyUsage purposes (dotted OIDs).
    key_purposes: tuple[str, ...]
    #: The time the chain was checked at.
    checked_at: datetime
    #: What was done to read the certificates (non-strict DER re-encoded); empty for clean DER.
    repairs: tuple[str, ...] = ()

    @property
    def vendor(self) -> str | None:
        """The TPM maker's name from ``manufacturer_id`` (``tpm_vendor_name``)."""
        return tpm_vendor_name(self.manufacturer_id)


# --- reading certificates ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReadCertificate:
    """A certificate as read: cryptography's object to read it by (a reading copy when it is not
    strict DER), the DER bytes its issuer signed, and what was done to read it. It pickles as
    those bytes."""

    certificate: x509.Certificate
    der: bytes
    repairs: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[object, ...]:
        return read_certificate, (self.der,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadCertificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    @property
    def name(self) -> str:
        """The subject, for messages ("the certificate" when it is empty)."""
        return self.certificate.subject.rfc4514_string() or "the certificate"

    def check_signed_by(self, issuer: ReadCertificate) -> None:
        """Raises cryptography's InvalidSignature (or ValueError, InvalidData) unless
        ``issuer``'s key signed this certificate, over its TBS as signed (names are not
        compared here)."""
        verify_signed_by(self.der, issuer.certificate)


#: A certificate as a caller may give it: DER or PEM (bytes, a bytearray or a memoryview), a
#: ``cryptography`` certificate, or one already read.
CertificateInput = Any

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")


def _parse_errors() -> tuple[type[Exception], ...]:
    """What cryptography raises for a certificate it cannot read (it parses lazily)."""
    from cryptography import x509

    return (
        ValueError,
        TypeError,
        _PycaUnsupported,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    )


def read_certificate(data: CertificateInput, what: str = "a certificate") -> ReadCertificate:
    """A certificate given as DER or PEM (bytes, a bytearray or a memoryview, copied), as a
    ``cryptography`` certificate or a ``ReadCertificate``, read (non-strict DER through a
    reading copy); a CERTIFICATE failure naming ``what`` when it is not one."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if isinstance(data, ReadCertificate):
        return data
    if isinstance(data, x509.Certificate):
        return ReadCertificate(data, data.public_bytes(Encoding.DER))
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AttestationCheckFailed(
            f"{what} is DER or PEM bytes, not {type(data).__name__}", Check.CERTIFICATE
        )
    try:
        der = bytes(data)
    except ValueError:  # a released memoryview
        raise AttestationCheckFailed(
            f"{what} is a released memoryview", Check.CERTIFICATE
        ) from None
    if der.lstrip()[:1] == b"-":
        found = _PEM.search(der)
        try:
            if found is None:
                raise ValueError("no PEM CERTIFICATE block")
            der = binascii.a2b_base64(b"".join(found.group(1).split()), strict_mode=True)
        except (ValueError, binascii.Error) as exc:
            raise AttestationCheckFailed(
                f"{what} is not an X.509 certificate ({exc})", Check.CERTIFICATE
            ) from exc
    refusals: tuple[type[Exception], ...] = (InvalidData, *_parse_errors())
    try:
        readable, repairs = strict_der(der)
        return ReadCertificate(x509.load_der_x509_certificate(readable), der, repairs)
    except refusals as exc:
        raise AttestationCheckFailed(
            f"{what} is not an X.509 certificate ({exc})", Check.CERTIFICATE
        ) from exc


def load_certificate(data: CertificateInput) -> x509.Certificate:
    """The ``cryptography`` certificate to read ``data`` by (``read_certificate``)."""
    return read_certificate(data).certificate


# --- EK certificates ---------------------------------------------------------------------------


def verify_ek_certificate(
    certificate: CertificateInput,
    ca_certs: Iterable[CertificateInput] | None = None,
    *,
    intermediates: Iterable[CertificateInput] = (),
    ek_public: EKPublic | None = None,
    at: datetime | None = None,
    policy: EKCAPolicy | None = None,
    allow_without_eku: bool | None = None,
) -> EKCertificateInfo:
    """Checks that an EK certificate chains to one of the CA certificates (or the policy's),
    is in date (at ``at``, else the policy's time, else now), is for the EK (when
    ``ek_public`` is given), and reads the TPM it names. Every certificate in ``ca_certs`` is a
    trust anchor; ``intermediates`` (and the policy's) only help build the chain. It must name
    the EK key purpose (tcg-kp-EKCertificate) in extendedKeyUsage unless ``allow_without_eku``
    (default: the policy's ``allow_ek_without_eku``, else False) accepts a legacy certificate
    without extendedKeyUsage; ``ek_key_purpose`` in the result says which.
    """
    try:
        if allow_without_eku is None:
            allow_without_eku = bool(getattr(policy, "allow_ek_without_eku", False))
        if ca_certs is None:  # the default policy trusts no EK CA
            ca_certs = policy.ek_ca_certificates() if policy is not None else ()
        if policy is not None:
            intermediates = (*intermediates, *policy.ek_intermediate_certificates())
            at = at or policy.at
        return _verify_ek_certificate(
            certificate, ca_certs, intermediates, ek_public, at, allow_without_eku
        )
    except _parse_errors() as exc:
        # cryptography parses certificates lazily: a damaged part shows when it is read.
        raise AttestationCheckFailed(
            f"a certificate does not parse ({exc})", Check.CERTIFICATE
        ) from exc


def _verify_ek_certificate(
    certificate: CertificateInput,
    ca_certs: Iterable[CertificateInput],
    intermediates: Iterable[CertificateInput],
    ek_public: EKPublic | None,
    at: datetime | None,
    allow_without_eku: bool,
) -> EKCertificateInfo:
    leaf, anchors, others, when = _end_entity(
        certificate, ca_certs, intermediates, at, "the EK certificate"
    )
    ek_key_purpose = _check_ek_key_purpose(leaf.certificate, allow_without_eku)
    chain = _chain(leaf, anchors, others, when)
    public_key = _strong_certified_key(leaf.certificate, "the EK certificate")
    if ek_public is not None and public_der(resolve_ek(ek_public)) != public_der(public_key):
        raise AttestationCheckFailed(
            "the certificate is for another key than this EK", Check.CERTIFICATE
        )
    names = _tpm_names(leaf.certificate, "the EK certificate")
    manufacturer = names.get(_TPM_MANUFACTURER)
    return EKCertificateInfo(
        certificate=leaf.certificate,
        public_key=public_key,
        chain=tuple(c.certificate for c in chain),
        manufacturer=manufacturer,
        model=names.get(_TPM_MODEL),
        version=names.get(_TPM_VERSION),
        manufacturer_id=_manufacturer_id(manufacturer),
        tpm_specification=_tpm_specification(leaf.certificate),
        ek_key_purpose=ek_key_purpose,
        repairs=tuple(r for c in chain for r in c.repairs),
        der=leaf.der,
    )


def _manufacturer_id(manufacturer: str | None) -> int | None:
    """The vendor id of a manufacturer written "id:XXXXXXXX" (hex), else None."""
    if manufacturer is None or not manufacturer.lower().startswith("id:"):
        return None
    digits = manufacturer[3:]
    if not 1 <= len(digits) <= 8 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


def _check_ek_key_purpose(leaf: x509.Certificate, allow_without_eku: bool) -> bool:
    """Whether the EK certificate names the EK key purpose (tcg-kp-EKCertificate) in
    extendedKeyUsage, as the EK Credential Profile and real chips' certificates do. Other key
    purposes are refused; no extendedKeyUsage at all is refused unless ``allow_without_eku``
    (legacy certificates), and then the result says False."""
    purposes = _extension(leaf, "2.5.29.37")
    if purposes is None:
        if not allow_without_eku:
            raise AttestationCheckFailed(
                "the EK certificate has no extendedKeyUsage: an EK certificate names the EK key "
                "purpose (tcg-kp-EKCertificate, 2.23.133.8.1); a legacy one without it needs "
                "allow_ek_without_eku",
                Check.CERTIFICATE,
            )
        return False
    if TCG_KP_EK_CERTIFICATE not in {p.dotted_string for p in purposes}:
        raise AttestationCheckFailed(
            "the certificate's key purposes do not include EK (2.23.133.8.1)", Check.CERTIFICATE
        )
    return True


def _check_end_entity(cert: x509.Certificate, what: str) -> None:
    """Refuses a CA certificate in a leaf's place: basicConstraints CA, keyCertSign or cRLSign."""
    from cryptography import x509

    constraints = _extension(cert, "2.5.29.19")
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise AttestationCheckFailed(
            f"{what} is a CA certificate, not an end-entity certificate", Check.CERTIFICATE
        )
    usage = _extension(cert, "2.5.29.15")
    if isinstance(usage, x509.KeyUsage) and (usage.key_cert_sign or usage.crl_sign):
        raise AttestationCheckFailed(
            f"{what} may sign certificates: it is no end-entity's", Check.CERTIFICATE
        )


def _strong_certified_key(cert: x509.Certificate, what: str) -> PublicKey:
    """The certificate's key, if RSA-2048 or larger or on P-256, P-384 or P-521."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise AttestationCheckFailed(
                f"{what}'s key is RSA-{key.key_size}, below RSA-2048", Check.CERTIFICATE
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise AttestationCheckFailed(
                f"{what}'s key is on {key.curve.name}, not P-256, P-384 or P-521", Check.CERTIFICATE
            )
        return key
    raise AttestationCheckFailed(
        f"{what}'s key is neither RSA nor elliptic-curve", Check.CERTIFICATE
    )


def _end_entity(
    certificate: CertificateInput,
    ca_certs: Iterable[CertificateInput],
    intermediates: Iterable[CertificateInput],
    at: datetime | None,
    what: str,
) -> tuple[ReadCertificate, tuple[ReadCertificate, ...], tuple[ReadCertificate, ...], datetime]:
    """The leaf, checked in date and as an end-entity certificate, with the trust anchors (at
    least one), the other certificates and the time the chain is checked at."""
    leaf = read_certificate(certificate, what)
    anchors = tuple(read_certificate(c, "a CA certificate") for c in ca_certs)
    if not anchors:
        raise AttestationCheckFailed(
            f"no CA certificates to check {what} against", Check.CERTIFICATE
        )
    others = tuple(read_certificate(c, "an intermediate certificate") for c in intermediates)
    when = at or datetime.now(UTC)
    _check_certificate(leaf.certificate, when, what)
    _check_end_entity(leaf.certificate, what)
    return leaf, anchors, others, when


# --- AK certificates ---------------------------------------------------------------------------


def verify_ak_certificate(
    certificate: CertificateInput,
    ak_public: PublicKey,
    ca_certs: Iterable[CertificateInput],
    *,
    intermediates: Iterable[CertificateInput] = (),
    at: datetime | None = None,
    key_purposes: Iterable[str] = DEFAULT_AK_KEY_PURPOSES,
) -> AKCertificateInfo:
    """Checks an AK certificate's profile and chain; the result names the TPM it is for, or a
    CERTIFICATE failure says what is wrong. The profile: X.509 version 3, in date (at ``at``,
    else now), not a CA (basicConstraints, keyCertSign, cRLSign), an RSA-2048+ or P-256+ key
    that is exactly this AK's, one of ``key_purposes`` in extendedKeyUsage (by default
    tcg-kp-AIKCertificate, as Microsoft's AIK CA writes, or tcg-kp-EKCertificate, as Google's
    cloud CA writes), and, where there is a subjectAltName, the TPM's manufacturer, model and
    version in a directoryName (TCG EK Credential Profile 3.2.9). The chain: from the leaf
    through ``intermediates`` to one of ``ca_certs``, each in date."""
    from cryptography import x509

    try:
        leaf, anchors, others, when = _end_entity(
            certificate, ca_certs, intermediates, at, "the AK certificate"
        )
        cert = leaf.certificate
        if cert.version is not x509.Version.v3:
            raise AttestationCheckFailed(
                f"the AK certificate is X.509 {cert.version.name}, not v3", Check.CERTIFICATE
            )
        key = _strong_certified_key(cert, "the AK certificate")
        if public_der(key) != public_der(ak_public):
            raise AttestationCheckFailed(
                "the AK certificate is for another key than this AK", Check.CERTIFICATE
            )
        purposes = _extension(cert, "2.5.29.37")
        found = tuple(p.dotted_string for p in purposes) if purposes is not None else ()
        wanted = frozenset(key_purposes)
        if not wanted.intersection(found):
            raise AttestationCheckFailed(
                f"the AK certificate's key purposes ({', '.join(found) or 'none'}) include none "
                f"the policy takes for an AK ({', '.join(sorted(wanted))})",
                Check.CERTIFICATE,
            )
        names = _tpm_names(cert, "the AK certificate")
        if _extension(cert, "2.5.29.17") is not None:
            missing = [
                oid for oid in (_TPM_MANUFACTURER, _TPM_MODEL, _TPM_VERSION) if oid not in names
            ]
            if missing:
                raise AttestationCheckFailed(
                    "the AK certificate's subjectAltName lacks the TPM's "
                    f"{', '.join(missing)} (manufacturer, model, version: 2.23.133.2.1-3)",
                    Check.CERTIFICATE,
                )
        chain = _chain(leaf, anchors, others, when)
        manufacturer = names.get(_TPM_MANUFACTURER)
        return AKCertificateInfo(
            certificate=leaf.der,
            chain=tuple(c.der for c in chain),
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            manufacturer=manufacturer,
            model=names.get(_TPM_MODEL),
            version=names.get(_TPM_VERSION),
            manufacturer_id=_manufacturer_id(manufacturer),
            key_purposes=found,
            checked_at=when,
            repairs=tuple(r for c in chain for r in c.repairs),
        )
    except _parse_errors() as exc:
        raise AttestationCheckFailed(
            f"a certificate does not parse ({exc})", Check.CERTIFICATE
        ) from exc


def resolve_ek(ek: object) -> PublicKey:
    """The public key of an EK given as a key, a TPMT_PUBLIC or TPM2B_PUBLIC (bytes-like or a
    ``TPMTPublic``); a CERTIFICATE failure for anything else."""
    if isinstance(ek, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return ek
    try:
        if isinstance(ek, bytes | bytearray | memoryview):
            return TPMTPublic.parse(tpmt_bytes(bytes(ek))).public_key()
        if isinstance(ek, TPMTPublic):
            return ek.public_key()
    except InvalidData as exc:
        raise AttestationCheckFailed(f"the EK's {exc}", Check.CERTIFICATE) from exc
    raise AttestationCheckFailed(
        f"an EK is a TPMT_PUBLIC or a public key, not {type(ek).__name__}", Check.CERTIFICATE
    )


def _extension(cert: x509.Certificate, oid: str) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise AttestationCheckFailed(
            f"a certificate extension does not parse ({exc})", Check.CERTIFICATE
        ) from exc


def _check_certificate(cert: x509.Certificate, when: datetime, what: str) -> None:
    """In date at ``when``, and every critical extension one this check understands."""
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise AttestationCheckFailed(
            f"{what} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, not at {when:%Y-%m-%d %H:%M:%S}",
            Check.CERTIFICATE,
        )
    try:
        extensions = list(cert.extensions)
    except ValueError as exc:
        raise AttestationCheckFailed(
            f"{what}'s extensions do not parse ({exc})", Check.CERTIFICATE
        ) from exc
    for ext in extensions:
        if ext.critical and ext.oid.dotted_string not in _KNOWN_CRITICAL:
            raise AttestationCheckFailed(
                f"{what} has a critical extension {ext.oid.dotted_string} this check does not know",
                Check.CERTIFICATE,
            )


# --- the chain: cryptography's verifier, or a walk over the bytes as signed --------------------


def _key_cert_sign(_policy: Any, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    """A CA's keyUsage, when it has one, must allow signing certificates (RFC 5280 4.2.1.3)."""
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("the CA's keyUsage does not allow keyCertSign")


@functools.cache
def _extension_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """The CA and end-entity extension policies for TCG certificates (see the module's notes)."""
    from cryptography import x509
    from cryptography.x509.verification import Criticality, ExtensionPolicy

    agnostic = Criticality.AGNOSTIC
    ca = (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, agnostic, None)  # cA and path length: pyca
        .may_be_present(x509.KeyUsage, agnostic, _key_cert_sign)
        .may_be_present(x509.CertificatePolicies, agnostic, None)
    )
    ee = ExtensionPolicy.permit_all().may_be_present(x509.CertificatePolicies, agnostic, None)
    return ca, ee


def _chain(
    leaf: ReadCertificate,
    anchors: Sequence[ReadCertificate],
    intermediates: Sequence[ReadCertificate],
    when: datetime,
) -> tuple[ReadCertificate, ...]:
    """The chain from the leaf to a trust anchor (leaf first): cryptography's verifier builds
    and checks it when every certificate below the anchor is read as it is, else ``_walk``;
    a CERTIFICATE failure naming the certificate at fault if there is none."""
    trusted = [anchor for anchor in anchors if anchor != leaf]  # a leaf is never its own CA
    if not trusted:
        raise AttestationCheckFailed(
            "no trust anchor but the certificate itself", Check.CERTIFICATE
        )
    if leaf.repairs or any(c.repairs for c in intermediates):
        return _walk(leaf, trusted, intermediates, when)
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    ca_policy, ee_policy = _extension_policies()
    verifier = (
        PolicyBuilder()
        .store(Store([anchor.certificate for anchor in trusted]))
        .time(when)
        .max_chain_depth(_MAX_CHAIN - 1)  # intermediates
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        built = verifier.verify(leaf.certificate, [c.certificate for c in intermediates])
    except VerificationError as exc:
        walked = _walk(leaf, trusted, intermediates, when)  # names the certificate at fault
        if _names_differ_in_encoding(walked):
            return walked
        raise AttestationCheckFailed(f"the chain is refused ({exc})", Check.CERTIFICATE) from exc
    read = {c.certificate: c for c in (*trusted, *intermediates)}
    chain = (leaf, *(read[c] for c in built.chain[1:]))
    for ca in chain[1:]:  # cryptography also takes critical nameConstraints and AIA
        _check_certificate(ca.certificate, when, f"the CA certificate {ca.name!r}")
    return chain


def _walk(
    leaf: ReadCertificate,
    anchors: Sequence[ReadCertificate],
    intermediates: Sequence[ReadCertificate],
    when: datetime,
) -> tuple[ReadCertificate, ...]:
    """The chain from each certificate to the first CA whose name matches, that signed it (over
    its TBS as signed) and may issue it, up to a trust anchor; a CERTIFICATE failure naming the
    certificate at fault when there is none."""
    pool = (*anchors, *intermediates)
    chain = [leaf]
    for below in range(_MAX_CHAIN):
        issuer = _issuer_of(chain[-1], pool, when, below)
        chain.append(issuer)
        if issuer in anchors:
            return tuple(chain)
    raise AttestationCheckFailed(
        f"no trusted CA within {_MAX_CHAIN} certificates", Check.CERTIFICATE
    )


def _names_differ_in_encoding(chain: Sequence[ReadCertificate]) -> bool:
    """True when a certificate's issuer is its CA's subject written in other string types
    (ST's ECC intermediates: UTF8String for PrintableString): RFC 5280 §7.1 matches them,
    cryptography's verifier compares the bytes and finds no issuer."""
    return any(
        below.certificate.issuer.public_bytes() != ca.certificate.subject.public_bytes()
        for below, ca in itertools.pairwise(chain)
    )


def _issuer_of(
    cert: ReadCertificate, pool: Sequence[ReadCertificate], when: datetime, below: int
) -> ReadCertificate:
    """The CA in the pool that signed ``cert``, or a CERTIFICATE failure saying why it may not
    issue (out of date, not a CA, path length, keyCertSign) or that no CA signed it."""
    from cryptography import x509

    for candidate in pool:
        if candidate.certificate.subject != cert.certificate.issuer or candidate == cert:
            continue
        try:
            cert.check_signed_by(candidate)
        except (ValueError, TypeError, InvalidData, _PycaInvalidSignature, _PycaUnsupported):
            continue
        what = f"the CA certificate {candidate.name!r}"
        _check_certificate(candidate.certificate, when, what)
        constraints = _extension(candidate.certificate, "2.5.29.19")
        if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
            raise AttestationCheckFailed(
                f"{what} signed the chain but is not a CA", Check.CERTIFICATE
            )
        if constraints.path_length is not None and below > constraints.path_length:
            raise AttestationCheckFailed(
                f"{what} allows a path of {constraints.path_length}", Check.CERTIFICATE
            )
        usage = _extension(candidate.certificate, "2.5.29.15")
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            raise AttestationCheckFailed(
                f"{what} may not sign certificates (keyCertSign)", Check.CERTIFICATE
            )
        return candidate
    raise AttestationCheckFailed(
        f"no trusted CA signed {cert.certificate.subject.rfc4514_string() or 'the certificate'!r} "
        f"(issuer {cert.certificate.issuer.rfc4514_string()!r})",
        Check.CERTIFICATE,
    )


# --- what the certificates say ---------------------------------------------------------------


def _tpm_names(cert: x509.Certificate, what: str) -> dict[str, str]:
    """{OID: text} of every attribute of the directoryNames in subjectAltName (the TPM's
    manufacturer, model and version: 2.23.133.2.1-3), whatever string type each is written in."""
    from cryptography import x509

    names = _extension(cert, "2.5.29.17")
    found: dict[str, str] = {}
    if names is None:
        return found
    try:
        for name in names.get_values_for_type(x509.DirectoryName):
            for attribute in name:
                if isinstance(attribute.value, str):
                    found[attribute.oid.dotted_string] = attribute.value
    except ValueError as exc:
        raise AttestationCheckFailed(
            f"{what}'s TPM names do not parse ({exc})", Check.CERTIFICATE
        ) from exc
    return found


def _tpm_specification(cert: x509.Certificate) -> tuple[str, int, int] | None:
    """TPMSpecification (family, level, revision) from subjectDirectoryAttributes, if there."""
    extension = _extension(cert, "2.5.29.9")
    value = getattr(extension, "value", None)
    if not isinstance(value, bytes):
        return None
    try:
        for attribute in read_tlv(value, "subjectDirectoryAttributes").children:
            kind, values = attribute.children
            if oid_text(kind.content) != _TPM_SPECIFICATION or not values.children:
                continue
            family, level, revision = values.children[0].children
            return (
                family.content.decode("utf-8"),
                int.from_bytes(level.content, "big"),
                int.from_bytes(revision.content, "big"),
            )
    except (InvalidData, ValueError) as exc:
        raise AttestationCheckFailed(
            f"the certificate's TPMSpecification does not parse ({exc})", Check.CERTIFICATE
        ) from exc
    return None
