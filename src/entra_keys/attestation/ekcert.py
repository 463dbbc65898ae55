"""EK, AK and platform certificates: the chain to a TPM maker's CA, and what they say.

``verify_ek_certificate`` checks an EK certificate against the TCG EK Credential Profile and its
chain to the CA certificates given (or the policy's); ``verify_ak_certificate`` does the same for
an AK certificate; ``parse_platform_certificate`` reads a TCG platform certificate.

The chain is built and verified by cryptography's X.509 verifier (``x509.verification``), with
extension policies made for TCG certificates, which carry no id-kp-clientAuth and may lack the
extensions the WebPKI profiles require. What that verifier does not check is checked here first:
the EK profile's end-entity rules (not a CA, no keyCertSign or cRLSign, the EK key purpose, key
strength, the certificate is for this EK), the TPM's names, and that no certificate of the chain
has a critical extension this module does not know (``_KNOWN_CRITICAL``); when it refuses a
chain, ``_explain`` names the certificate and the reason. An EK certificate in non-strict DER
(as Nuvoton chips store it) is re-encoded by ``nvcert.strict_der`` to be read, and its issuer's
signature checked over the tbsCertificate bytes as stored (``nvcert.verify_signed_by``).
``cryptography.x509`` is imported when a certificate is checked, not when this module is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import AttestationCheckFailed, Check, InvalidData
from ..formats import public_der
from ..tcg.nvcert import ASN1_ERRORS, strict_der, verify_signed_by
from ..tcg.public import PublicKey, TPMTPublic, tpmt_bytes
from .platformcert import PlatformCertificateInfo, directory_names, parse_platform_certificate

if TYPE_CHECKING:  # cryptography.x509 is costly to import: only certificate checks need it
    from cryptography import x509
    from cryptography.x509.verification import ExtensionPolicy


class EKCAPolicy(Protocol):
    """What the EK checks need of a trust policy (``TrustPolicy`` is one): its EK CAs, and
    whether it accepts legacy EK certificates without the EK key purpose."""

    @property
    def allow_ek_without_eku(self) -> bool:
        """Accept an EK certificate without extendedKeyUsage (its result says so)."""
        ...

    def ek_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates EK certificates must chain to."""
        ...


__all__ = [
    "EKCAPolicy",
    "EKCertificateInfo",
    "PlatformCertificateInfo",
    "load_certificate",
    "parse_platform_certificate",
    "verify_ak_certificate",
    "verify_ek_certificate",
]

#: An EK as a caller may give it: a ``cryptography`` key, its TPMT_PUBLIC or TPM2B_PUBLIC.
EKPublic = PublicKey | TPMTPublic | bytes | bytearray | memoryview

_TCG_KP_EK_CERTIFICATE = "2.23.133.8.1"
_TPM_MANUFACTURER, _TPM_MODEL, _TPM_VERSION = "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"
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


def load_certificate(data: object) -> x509.Certificate:
    """A certificate given as a ``cryptography`` certificate, or PEM or DER (bytes, a bytearray
    or a memoryview, copied); a CERTIFICATE failure for anything else."""
    from cryptography import x509

    if isinstance(data, x509.Certificate):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AttestationCheckFailed(
            f"a certificate is DER or PEM bytes, not {type(data).__name__}", Check.CERTIFICATE
        )
    der = bytes(data)
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(der)
        return x509.load_der_x509_certificate(der)
    except (ValueError, TypeError) as exc:
        raise AttestationCheckFailed(
            f"not an X.509 certificate ({exc})", Check.CERTIFICATE
        ) from exc


def verify_ek_certificate(
    certificate: bytes | bytearray | memoryview | x509.Certificate,
    ca_certs: Iterable[x509.Certificate | bytes] | None = None,
    *,
    intermediates: Iterable[x509.Certificate | bytes] = (),
    ek_public: EKPublic | None = None,
    at: datetime | None = None,
    policy: EKCAPolicy | None = None,
    allow_without_eku: bool | None = None,
) -> EKCertificateInfo:
    """Checks that an EK certificate chains to one of the CA certificates (or the policy's),
    is in date, is for the EK (when ``ek_public`` is given), and reads the TPM it names. Every
    certificate in ``ca_certs`` is a trust anchor; ``intermediates`` only help build the chain.
    It must name the EK key purpose (tcg-kp-EKCertificate) in extendedKeyUsage unless
    ``allow_without_eku`` (default: the policy's ``allow_ek_without_eku``, else False) accepts a
    legacy certificate without extendedKeyUsage; ``ek_key_purpose`` in the result says which.

    The EK profile's end-entity rules are checked here; the chain is built and verified by
    cryptography's X.509 verifier with extension policies for TCG certificates (a WebPKI
    profile refuses what the EK profile allows: TCG key purposes, a critical subjectAltName).
    """
    from cryptography import x509

    try:
        if allow_without_eku is None:
            allow_without_eku = bool(getattr(policy, "allow_ek_without_eku", False))
        return _verify_ek_certificate(
            certificate, ca_certs, intermediates, ek_public, at, policy, allow_without_eku
        )
    except (
        ValueError,
        TypeError,
        _PycaUnsupported,
        x509.UnsupportedGeneralNameType,
        x509.DuplicateExtension,
        x509.InvalidVersion,
    ) as exc:
        # cryptography parses certificates lazily: a damaged part shows when it is read.
        raise AttestationCheckFailed(
            f"a certificate does not parse ({exc})", Check.CERTIFICATE
        ) from exc


def _verify_ek_certificate(
    certificate: bytes | bytearray | memoryview | x509.Certificate,
    ca_certs: Iterable[x509.Certificate | bytes] | None,
    intermediates: Iterable[x509.Certificate | bytes],
    ek_public: EKPublic | None,
    at: datetime | None,
    policy: EKCAPolicy | None,
    allow_without_eku: bool,
) -> EKCertificateInfo:
    if ca_certs is None:  # the default policy trusts no EK CA
        ca_certs = policy.ek_ca_certificates() if policy is not None else ()
    signed = None  # non-strict DER (as Nuvoton chips store it): re-encoded, signed as stored
    if isinstance(certificate, bytes | bytearray | memoryview):
        certificate = bytes(certificate)
    if isinstance(certificate, bytes) and certificate[:1] == b"\x30":
        try:
            fixed, repairs = strict_der(certificate)
        except InvalidData as exc:
            raise AttestationCheckFailed(f"the EK certificate: {exc}", Check.CERTIFICATE) from exc
        signed, certificate = (certificate if repairs else None), fixed
    leaf, anchors, others, when = _end_entity(
        certificate, ca_certs, intermediates, at, "the EK certificate"
    )
    ek_key_purpose = _check_ek_key_purpose(leaf, allow_without_eku)
    if signed is None:
        chain = _chain(leaf, anchors, others, when)
    else:
        chain = _reencoded_chain(leaf, signed, anchors, others, when)
    public_key = _strong_certified_key(leaf, "the EK certificate")
    if ek_public is not None and public_der(_resolve_ek(ek_public)) != public_der(public_key):
        raise AttestationCheckFailed(
            "the certificate is for another key than this EK", Check.CERTIFICATE
        )
    manufacturer, model, version, spec = _tpm_identity(leaf)
    manufacturer_id = None
    if manufacturer is not None and manufacturer.lower().startswith("id:"):
        try:
            manufacturer_id = int(manufacturer[3:], 16)
        except ValueError:
            manufacturer_id = None
    return EKCertificateInfo(
        certificate=leaf,
        public_key=public_key,
        chain=chain,
        manufacturer=manufacturer,
        model=model,
        version=version,
        manufacturer_id=manufacturer_id,
        tpm_specification=spec,
        ek_key_purpose=ek_key_purpose,
    )


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
    if _TCG_KP_EK_CERTIFICATE not in {p.dotted_string for p in purposes}:
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
    certificate: x509.Certificate | bytes,
    ca_certs: Iterable[x509.Certificate | bytes],
    intermediates: Iterable[x509.Certificate | bytes],
    at: datetime | None,
    what: str,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], tuple[x509.Certificate, ...], datetime]:
    """The leaf, checked in date and as an end-entity certificate, with the trust anchors (at
    least one), the other certificates and the time the chain is checked at."""
    leaf = load_certificate(certificate)
    anchors = tuple(load_certificate(c) for c in ca_certs)
    if not anchors:
        raise AttestationCheckFailed(
            f"no CA certificates to check {what} against", Check.CERTIFICATE
        )
    others = tuple(load_certificate(c) for c in intermediates)
    when = at or datetime.now(UTC)
    _check_certificate(leaf, when, what)
    _check_end_entity(leaf, what)
    return leaf, anchors, others, when


def verify_ak_certificate(
    certificate: x509.Certificate | bytes,
    ak_public: PublicKey,
    ca_certs: Iterable[x509.Certificate | bytes],
    *,
    intermediates: Iterable[x509.Certificate | bytes] = (),
    at: datetime | None = None,
) -> tuple[x509.Certificate, ...]:
    """Checks an AK certificate: an end-entity certificate for exactly this AK's key, in date,
    chaining to one of the CA certificates; returns the chain (leaf first) or raises
    a CERTIFICATE failure."""
    from cryptography import x509

    try:
        leaf, anchors, others, when = _end_entity(
            certificate, ca_certs, intermediates, at, "the AK certificate"
        )
        if public_der(_strong_certified_key(leaf, "the AK certificate")) != public_der(ak_public):
            raise AttestationCheckFailed(
                "the AK certificate is for another key than this AK", Check.CERTIFICATE
            )
        return _chain(leaf, anchors, others, when)
    except (ValueError, TypeError, _PycaUnsupported, x509.DuplicateExtension) as exc:
        raise AttestationCheckFailed(
            f"a certificate does not parse ({exc})", Check.CERTIFICATE
        ) from exc


def _resolve_ek(ek: object) -> PublicKey:
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


# --- the chain: cryptography's verifier, with this module's reasons ------------------------------


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
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    when: datetime,
) -> tuple[x509.Certificate, ...]:
    """The chain from the leaf to a trust anchor (leaf first), as cryptography's verifier builds
    and checks it; a CERTIFICATE failure naming the certificate at fault if there is none."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    trusted = [anchor for anchor in anchors if anchor != leaf]  # a leaf is never its own CA
    if trusted:
        ca_policy, ee_policy = _extension_policies()
        verifier = (
            PolicyBuilder()
            .store(Store(trusted))
            .time(when)
            .max_chain_depth(_MAX_CHAIN - 1)  # intermediates
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            chain = tuple(verifier.verify(leaf, list(intermediates)).chain)
        except VerificationError as exc:
            refused: Exception = exc
        else:
            for ca in chain[1:]:  # cryptography also takes critical nameConstraints and AIA
                _check_certificate(ca, when, f"the CA certificate {ca.subject.rfc4514_string()!r}")
            return chain
    else:
        refused = AttestationCheckFailed(
            "no trust anchor but the certificate itself", Check.CERTIFICATE
        )
    _explain(leaf, anchors, (*trusted, *intermediates), when)
    raise AttestationCheckFailed(
        f"the chain is refused ({refused})", Check.CERTIFICATE
    ) from refused


def _reencoded_chain(
    leaf: x509.Certificate,
    signed: bytes,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    when: datetime,
) -> tuple[x509.Certificate, ...]:
    """The chain of a leaf re-encoded from non-strict DER: its issuer's signature checked over
    the tbsCertificate as signed (``nvcert.verify_signed_by``), then cryptography's chain from
    that issuer, with path lengths counted for the leaf below it."""
    from cryptography import x509

    def signed_by(ca: x509.Certificate) -> None:
        verify_signed_by(signed, ca)

    issuer = _issuer_of(leaf, (*anchors, *intermediates), when, 0, signed_by)
    if issuer in anchors:
        return leaf, issuer
    upper = _chain(issuer, anchors, [c for c in intermediates if c != issuer], when)
    for below, ca in enumerate(upper[1:], 1):
        constraints = _extension(ca, "2.5.29.19")
        length = constraints.path_length if isinstance(constraints, x509.BasicConstraints) else None
        if length is not None and below > length:
            raise AttestationCheckFailed(
                f"the CA certificate {ca.subject.rfc4514_string()!r} allows a path of {length}",
                Check.CERTIFICATE,
            )
    return (leaf, *upper)


def _explain(
    leaf: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    pool: Sequence[x509.Certificate],
    when: datetime,
) -> None:
    """After cryptography refused the leaf's chain: walks it as it would be built (the first CA
    in the pool that signed each certificate) and raises a CERTIFICATE failure for the first
    certificate at fault; returns when it finds none (the caller then says cryptography's
    reason). Never accepts a chain."""
    cert = leaf
    for below in range(_MAX_CHAIN):
        issuer = _issuer_of(cert, pool, when, below)
        if issuer in anchors:
            return
        cert = issuer
    raise AttestationCheckFailed(
        f"no trusted CA within {_MAX_CHAIN} certificates", Check.CERTIFICATE
    )


def _issuer_of(
    cert: x509.Certificate,
    pool: Sequence[x509.Certificate],
    when: datetime,
    below: int,
    signed_by: Callable[[x509.Certificate], None] | None = None,
) -> x509.Certificate:
    """The CA in the pool that signed ``cert``, or a CERTIFICATE failure saying why it may not
    issue (out of date, not a CA, path length, keyCertSign) or that no CA signed it."""
    from cryptography import x509

    for candidate in pool:
        if candidate.subject != cert.issuer or candidate == cert:
            continue
        try:
            (signed_by or cert.verify_directly_issued_by)(candidate)
        except (ValueError, TypeError, _PycaInvalidSignature, _PycaUnsupported):
            continue
        what = f"the CA certificate {candidate.subject.rfc4514_string()!r}"
        _check_certificate(candidate, when, what)
        constraints = _extension(candidate, "2.5.29.19")
        if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
            raise AttestationCheckFailed(
                f"{what} signed the chain but is not a CA", Check.CERTIFICATE
            )
        if constraints.path_length is not None and below > constraints.path_length:
            raise AttestationCheckFailed(
                f"{what} allows a path of {constraints.path_length}", Check.CERTIFICATE
            )
        usage = _extension(candidate, "2.5.29.15")
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            raise AttestationCheckFailed(
                f"{what} may not sign certificates (keyCertSign)", Check.CERTIFICATE
            )
        return candidate
    raise AttestationCheckFailed(
        f"no trusted CA signed {cert.subject.rfc4514_string() or 'the certificate'!r} "
        f"(issuer {cert.issuer.rfc4514_string()!r})",
        Check.CERTIFICATE,
    )


# --- what the certificates say ---------------------------------------------------------------


def _tpm_identity(
    cert: x509.Certificate,
) -> tuple[str | None, str | None, str | None, tuple[str, int, int] | None]:
    """The TPM manufacturer, model and version (subjectAltName) and TPMSpecification."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        parsed = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
        names = directory_names(parsed.subject_alt_name_value)
        spec = None
        for ext in parsed["tbs_certificate"]["extensions"] or ():
            if ext["extn_id"].dotted != "2.5.29.9":
                continue
            for attribute in ext["extn_value"].parsed:
                if attribute["type"].dotted == "2.23.133.2.16" and len(attribute["values"]):
                    v = attribute["values"][0].native
                    spec = (str(v["family"]), int(v["level"]), int(v["revision"]))
    except ASN1_ERRORS as exc:
        raise AttestationCheckFailed(
            f"the EK certificate's TPM names do not parse ({exc})", Check.CERTIFICATE
        ) from exc
    return names.get(_TPM_MANUFACTURER), names.get(_TPM_MODEL), names.get(_TPM_VERSION), spec
