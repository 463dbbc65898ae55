"""EK certificates that chips do not store: Intel PTT and AMD fTPM keep none in NV, and their
makers serve each at a URL derived from the EK's public key (go-attestation ``attest/tpm.go``,
tpm2-tools ``tpm2_getekcertificate``).

``ek_certificate_url`` builds the URL; ``fetch_ek_certificate`` asks the caller's ``fetch``
function for it (entra_keys has no HTTP client: pass one, with its own timeouts, proxies and
TLS), reads the answer and checks the certificate like any EK certificate: it must be for this
EK and chain to the policy's (or the given) CAs.

- Intel: ``https://ekop.intel.com/ekcertservice/`` + the base64url of SHA-256(modulus ||
  01 00 01) for RSA (or SHA-256(x || y) for ECC), padded, URL-escaped ("=" as "%3D"). The
  service answers JSON ``{"pubhash": ..., "certificate": <base64url DER>}``.
- AMD: ``https://ftpm.amd.com/pki/aia/`` + the first 16 bytes, in upper-case hex, of SHA-256(
  00 00 22 22 || exponent (32 bits) || modulus) for RSA (00 00 44 44 || x || y for ECC). The
  service answers the certificate itself (DER, or PEM).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .._json import Members, b64url_decode
from ..errors import AttestationCheckFailed, Check, InvalidData
from ..tcg.public import PublicKey
from .ekcert import (
    CertificateInput,
    EKCAPolicy,
    EKCertificateInfo,
    EKPublic,
    resolve_ek,
    verify_ek_certificate,
)

__all__ = [
    "AMD_EK_SERVICE",
    "INTEL_EK_SERVICE",
    "MAX_EK_ANSWER",
    "ek_certificate_url",
    "fetch_ek_certificate",
]

INTEL_EK_SERVICE = "https://ekop.intel.com/ekcertservice/"
AMD_EK_SERVICE = "https://ftpm.amd.com/pki/aia/"
#: The largest answer read from an EK certificate service (bytes): a certificate is 1-2 KiB.
MAX_EK_ANSWER = 64 * 1024
#: TPM_PT_MANUFACTURER values (TCG vendor ids) of the makers that serve EK certificates.
_MAKERS = {0x494E5443: "intel", 0x414D4400: "amd", "INTC": "intel", "AMD": "amd"}


def _maker(manufacturer: int | str) -> str:
    key: int | str = manufacturer
    if isinstance(manufacturer, str):
        key = manufacturer.strip().upper()
    maker = _MAKERS.get(key) if isinstance(key, int | str) else None
    if maker is None:
        shown = f"0x{manufacturer:08X}" if isinstance(manufacturer, int) else repr(manufacturer)
        raise AttestationCheckFailed(
            f"no EK certificate service is known for the TPM maker {shown} (Intel: INTC, AMD: AMD)",
            Check.CERTIFICATE,
        )
    return maker


def _coordinates(key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = key.public_numbers()
    size = (key.curve.key_size + 7) // 8
    return numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")


def _modulus(key: rsa.RSAPublicKey) -> bytes:
    n = key.public_numbers().n
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def ek_certificate_url(ek_public: EKPublic, manufacturer: int | str) -> str:
    """The URL where the TPM's maker serves the EK certificate of ``ek_public`` (a public key,
    or the EK's TPMT_PUBLIC or TPM2B_PUBLIC); ``manufacturer`` is TPM_PT_MANUFACTURER (an int,
    e.g. 0x494E5443) or its code ("INTC", "AMD"). A CERTIFICATE failure for another maker, or
    an Intel RSA EK whose exponent is not 65537 (the service's hash assumes it)."""
    maker = _maker(manufacturer)
    key: PublicKey = resolve_ek(ek_public)
    if maker == "intel":
        if isinstance(key, rsa.RSAPublicKey):
            if key.public_numbers().e != 65537:
                raise AttestationCheckFailed(
                    "Intel's EK certificate service names RSA EKs with exponent 65537 only",
                    Check.CERTIFICATE,
                )
            digest = hashlib.sha256(_modulus(key) + b"\x01\x00\x01").digest()
        else:
            digest = hashlib.sha256(_coordinates(key)).digest()
        return INTEL_EK_SERVICE + base64.urlsafe_b64encode(digest).decode().replace("=", "%3D")
    if isinstance(key, rsa.RSAPublicKey):
        e = key.public_numbers().e
        if e >= 1 << 32:  # AMD's URL holds it in 4 bytes, as a TPM's exponent is (UINT32)
            raise AttestationCheckFailed(
                f"an RSA EK's exponent fits in 32 bits (a TPM's does), not {e.bit_length()} bits",
                Check.CERTIFICATE,
            )
        exponent = e.to_bytes(4, "big")
        digest = hashlib.sha256(b"\x00\x00\x22\x22" + exponent + _modulus(key)).digest()
    else:
        digest = hashlib.sha256(b"\x00\x00\x44\x44" + _coordinates(key)).digest()
    return AMD_EK_SERVICE + digest[:16].hex().upper()


def fetch_ek_certificate(
    ek_public: EKPublic,
    manufacturer: int | str,
    fetch: Callable[[str], bytes],
    *,
    ca_certs: Iterable[CertificateInput] | None = None,
    intermediates: Iterable[CertificateInput] = (),
    policy: EKCAPolicy | None = None,
    at: datetime | None = None,
    max_size: int = MAX_EK_ANSWER,
) -> EKCertificateInfo:
    """The EK certificate of ``ek_public`` from its maker's service: ``fetch(url)`` returns
    the answer's body (bytes; what ``fetch`` raises is not caught); the certificate in it is
    checked by ``verify_ek_certificate`` (for this EK, chaining to ``ca_certs`` or the
    policy's). An answer over ``max_size``, of another type, or not the service's format is a
    CERTIFICATE failure that says so."""
    url = ek_certificate_url(ek_public, manufacturer)
    answer = fetch(url)
    if not isinstance(answer, bytes | bytearray | memoryview):
        raise AttestationCheckFailed(
            f"the EK certificate service's answer is bytes, not {type(answer).__name__}",
            Check.CERTIFICATE,
        )
    try:
        answer = bytes(answer)
    except ValueError:  # a released memoryview
        raise AttestationCheckFailed(
            "the EK certificate service's answer is a released memoryview", Check.CERTIFICATE
        ) from None
    if len(answer) > max_size:
        raise AttestationCheckFailed(
            f"the EK certificate service's answer is {len(answer)} bytes, over the limit of "
            f"{max_size}",
            Check.CERTIFICATE,
        )
    der = answer  # AMD's: DER, or PEM (verify_ek_certificate reads both)
    if _maker(manufacturer) == "intel":
        der = _intel_certificate(answer, url, max_size)
    return verify_ek_certificate(
        der, ca_certs, intermediates=intermediates, ek_public=ek_public, at=at, policy=policy
    )


def _intel_certificate(answer: bytes, url: str, max_size: int) -> bytes:
    """The certificate in Intel's JSON answer: base64url, its padding written as "=" or "%3D";
    ``pubhash``, when present, must be the one the URL asked for."""
    what = "the Intel EK certificate service's answer"
    try:
        members = Members.load(answer, what, max_size=max_size)
        text = members.text("certificate")
        pubhash = members.optional_text("pubhash")
        if pubhash is not None and _unescaped(pubhash) != _unescaped(url.rsplit("/", 1)[1]):
            raise InvalidData(f"{what} is for another EK (pubhash {pubhash!r})")
        return b64url_decode(_unescaped(text).rstrip("="))
    except InvalidData as exc:
        raise AttestationCheckFailed(str(exc), Check.CERTIFICATE) from exc


def _unescaped(text: str) -> str:
    """Base64url text with its padding URL-escaped ("%3D") written as "=": any other escape is
    an InvalidData."""
    plain = text.replace("%3D", "=").replace("%3d", "=")
    if "%" in plain:
        raise InvalidData(f"an escape other than %3D in {plain[:40]!r}")
    return plain
