"""EK certificates as TPMs store them in NV, made into certificates a verifier can read.

Real chips do not always store clean DER (go-attestation ``ParseEKCertificate``, keylime
``cert_utils``, tpm2-tools issue 3474): ST33 chips pad the index with 0xFF (or 0x00) to its
size, some put the TCG PC Client header ``10 01 00 <len16>`` (TCG_PCCLIENT_STORED_CERT, at times
followed by the full-certificate tag ``10 02``) in front, and Nuvoton certificates are not strict
DER (cryptography refuses them, e.g. a SET OF out of order). Here the DER length in the outer
SEQUENCE's header decides where a certificate ends; header and padding are removed and said so
in ``repairs``.

``certificate`` stays the bytes the CA signed. A verifier that needs strict DER gets it from
``strict_der``, which re-encodes with asn1crypto and says so; the signature of a re-encoded
certificate is then checked over its original tbsCertificate bytes (``verify_signed_by``), as
re-encoding a non-canonical TBS changes the bytes but not what was signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidData

if TYPE_CHECKING:
    from cryptography import x509

    from .records import EndorsementKey

__all__ = [
    "ASN1_ERRORS",
    "StoredCertificate",
    "certificate_lines",
    "der_sequence_length",
    "nv_certificates",
    "strict_der",
    "verify_signed_by",
]

_TCG_STORED_CERT = b"\x10\x01\x00"  # TCG_PCCLIENT_STORED_CERT tag 0x1001, certType 0 (full)
_TCG_FULL_CERT = b"\x10\x02"  # TCG_PCCLIENT_FULL_CERT tag
#: What asn1crypto raises on malformed input (it parses lazily, so any field access may raise).
ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate read from NV: the DER as its CA signed it, and what was removed around it."""

    der: bytes
    repairs: tuple[str, ...]


def der_sequence_length(data: bytes, at: int = 0) -> int:
    """The length of the DER SEQUENCE starting at ``at`` (header included), from its header
    (short form, or long form of 1 to 4 octets); InvalidData when there is none."""
    if len(data) < at + 2 or data[at] != 0x30:
        raise InvalidData("no DER SEQUENCE where the certificate should begin")
    first = data[at + 1]
    if first < 0x80:
        return 2 + first
    octets = first & 0x7F
    if octets == 0 or octets > 4 or len(data) < at + 2 + octets:
        raise InvalidData("the certificate's DER length is not readable")
    length = int.from_bytes(data[at + 2 : at + 2 + octets], "big")
    return 2 + octets + length


def nv_certificates(data: bytes, *, many: bool = False) -> list[StoredCertificate]:
    """The certificate in an EK certificate index's contents (``many``: the certificates, one
    after the other, of a chain index), with the TCG header and the padding removed; an
    InvalidData saying why when the contents are no certificate."""
    data = bytes(data)
    repairs: list[str] = []
    start, end = 0, len(data)
    if data.startswith(_TCG_STORED_CERT) and len(data) >= 5:
        size = int.from_bytes(data[3:5], "big")
        start, end = 5, 5 + size
        if end > len(data):
            raise InvalidData(f"the TCG header says {size} bytes, the index holds {len(data) - 5}")
        if data[5:7] == _TCG_FULL_CERT:
            start += 2
        repairs.append("TCG stored-certificate header removed")
    found: list[StoredCertificate] = []
    at = start
    while True:
        length = der_sequence_length(data, at)
        if at + length > end:
            raise InvalidData(
                f"the certificate's DER length ({length} bytes) runs past the data "
                f"({end - at} bytes): truncated"
            )
        found.append(StoredCertificate(data[at : at + length], ()))
        at += length
        rest = data[at:end]
        if not rest or not many or rest[0] != 0x30:
            break
    if rest:
        if rest.strip(rest[:1]) or rest[0] not in (0x00, 0xFF):
            raise InvalidData(f"{len(rest)} bytes after the certificate are not padding")
        repairs.append(f"{len(rest)} bytes of 0x{rest[0]:02X} padding removed")
    if end < len(data):
        repairs.append(f"{len(data) - end} bytes after the TCG header's length ignored")
    first = StoredCertificate(found[0].der, tuple(repairs))
    return [first, *found[1:]]


def strict_der(der: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The certificate as strict DER for cryptography: ``der`` itself when cryptography reads it
    in full, else asn1crypto's re-encoding (and a repair saying so); InvalidData when neither
    reads it. A re-encoded certificate's signature holds only over the original TBS."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        list(cert.extensions)  # cryptography parses lazily: read what a verifier reads
        cert.public_key()
        return der, ()
    except ValueError as exc:
        refused = exc
    from asn1crypto import x509 as asn1_x509  # only for what cryptography refuses

    try:
        parsed = asn1_x509.Certificate.load(der)
        parsed.native  # noqa: B018 - parses every field
        fixed = parsed.dump(force=True)
        cert = x509.load_der_x509_certificate(fixed)
        list(cert.extensions)
        cert.public_key()
    except ASN1_ERRORS as exc:
        raise InvalidData(f"not an X.509 certificate ({refused}; asn1crypto: {exc})") from exc
    return fixed, (f"re-encoded as strict DER ({refused})",)


def verify_signed_by(der: bytes, issuer: x509.Certificate) -> None:
    """Checks the certificate's signature by ``issuer`` over its tbsCertificate as stored (not
    as re-encoded); cryptography's InvalidSignature when it does not hold, ValueError when the
    algorithm is not RSA PKCS#1 v1.5 / PSS or ECDSA with SHA-256/384/512."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    parsed = asn1_x509.Certificate.load(der)
    tbs = parsed["tbs_certificate"].dump()  # the bytes as parsed, not re-encoded
    algorithm = parsed["signature_algorithm"]
    digests: dict[str, Any] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
    digests["sha512"] = hashes.SHA512
    if algorithm.hash_algo not in digests:
        raise ValueError(f"the certificate is signed with {algorithm.hash_algo}")
    digest = digests[algorithm.hash_algo]()
    key = issuer.public_key()
    signature = parsed["signature_value"].native
    if isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
        key.verify(signature, tbs, padding.PKCS1v15(), digest)
    elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pss":
        pss = padding.PSS(padding.MGF1(digest), padding.PSS.AUTO)
        key.verify(signature, tbs, pss, digest)
    elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
        key.verify(signature, tbs, ec.ECDSA(digest))
    else:
        raise ValueError(f"a {algorithm.signature_algo} signature by this CA's key")


def certificate_lines(ek: EndorsementKey) -> list[str]:
    """What an EK's NV certificates are, one line each: where it was read, what was repaired,
    and every index that could not be read with the reason (``attest ek``, the demo)."""
    lines: list[str] = []
    if ek.certificate_error is not None:
        lines.append(f"certificate unreadable: {ek.certificate_error}")
    elif ek.certificate is None:
        lines.append("no certificate in NV")
    else:
        done = "; ".join(ek.certificate_repairs) or "clean DER"
        lines.append(f"certificate at NV 0x{ek.nv_index or 0:08x} ({done})")
    lines += [f"chain certificate {n} from NV ({len(c)} bytes)" for n, c in enumerate(ek.chain, 1)]
    lines += [f"chain index unreadable: {reason}" for reason in ek.chain_errors]
    return lines
