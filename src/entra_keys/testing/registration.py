"""A local stand-in for Entra's Device Registration Service and token service, for tests.

It plays the service's side of a join, built only on the public verifier, the formats and the
strict JSON reader of entra_keys (and pyca ``cryptography``), so join-agent authors can run a
whole join in a test::

    service = RegistrationService(ek_ca_certificates=swtpm.ca_certificates)  # paths, or certs
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)     # AK enrollment
    service.finish_enrollment(ak.tpm_public, provider.activate_credential(ak, ek, blob, secret))
    reply = service.register(join_request_body)                         # device certificate
    nonce = service.issue_prt_nonce()                                   # srv_challenge
    prt = service.issue_prt(device_signed_jwt)                          # session_key_jwe

It keeps everything in memory, trusts only what it checked itself and never talks to a network.
Whether an AK is hardware is decided here: by the EK certificate it verified against its CAs,
bound to the EK public the credential was made for, never by a client's ``hardware_backed``.
Every malformed request is an ``InvalidData`` (or a more specific entra_keys error).

It is as strict as Entra is known to be; each rule, and where it comes from:

=================================================  ==========================================
rule                                               source
=================================================  ==========================================
the CSR is PKCS#10, signed by its key, subject     MS-DVRJ 3.1.5.1.1, MS-DRS 3.3
``CN=7E980AD9-...``
the device key (the CSR's) and the transport key   MS-DVRJ 3.1.5.1.1 (RSA-2048 keys); the
are RSA-2048: else InvalidData                     session key is RSA-OAEP-encrypted to the
                                                   transport key
the transport key is another key than the device   not documented; chosen because the
key (the CSR's): else InvalidData                  device key signs and the transport key
                                                   decrypts, and Windows, roadlib and
                                                   Himmelblau all make two keys (MS-DVRJ
                                                   sends both)
a nonce is exact, spent once, and expires          MS-OAPXBC 3.1.5.1.1 (a nonce for each
``NONCE_LIFETIME`` (5 minutes) after issue         request); the lifetime is not documented:
                                                   chosen as 5 minutes, the order of the
                                                   clock skew peers allow (Himmelblau backdates
                                                   assertions 5 minutes)
a DRS (certification) nonce is never a PRT nonce   not documented; chosen because the two
and back: two separate sets                        come from two services (DRS, token service)
a PRT request's x5c is a certificate issued here,  MS-OAPXBC 3.2.5.1.2.1 (the device
for the key that signed it (RS256, pyca), valid    certificate in x5c, RS256 by the device
now                                                key)
``kdf_ver`` is the JSON integer 2 (not 2.0, "2"    MS-OAPXBC 3.2.5.1.2.1 (kdf_ver 2); the
or true)                                           strict JSON reader's integers
every PRT gets a new session key                   MS-OAPXBC 3.2.5.1.2.2 (each PRT reply
(``issue_prt``)                                    carries its own session_key_jwe)
=================================================  ==========================================

Time comes from ``clock`` (epoch seconds; ``time.time()`` read on each call unless a test
gives a clock).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature as PycaInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as PycaUnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from .. import formats
from .._json import Members, b64_decode, b64_encode, b64url_decode, b64url_encode
from ..attestation.enrollment import AKEnrollment, EnrolledAK
from ..attestation.verifier import TrustPolicy, verify_certify
from ..errors import AttestationError, InvalidData, InvalidSignature
from ..tcg.public import tpmt_bytes
from ..tcg.records import Certification, certification_from_json, certification_to_json
from ..tcg.structures import TPMTPublic
from .token_service import TokenService

__all__ = [
    "MAX_REQUEST_SIZE",
    "NONCE_LIFETIME",
    "CertificateSource",
    "DeviceRecord",
    "RegistrationService",
    "load_certificates",
]

_JOIN_TYPES = {0: "join", 4: "register", 6: "hybrid"}
_N = TypeVar("_N", bytes, str)  # a DRS nonce (bytes) or a PRT nonce (str)
_KEY_BITS = 2048  # the device and transport keys of a join (MS-DVRJ 3.1.5.1.1)
#: How long a nonce (DRS or srv_challenge) is accepted after it was issued, in seconds.
NONCE_LIFETIME = 300
#: The largest request token (a JWT) or body taken, in characters or bytes: not documented;
#: chosen as the strict JSON reader's limit, far over any real request.
MAX_REQUEST_SIZE = 1 << 20
#: A CA certificate as the test services take it: a certificate, its DER or PEM bytes, or the
#: path of a PEM or DER file (such as ``Swtpm.ca_certificates``).
CertificateSource = x509.Certificate | bytes | str | os.PathLike[str]


def load_certificates(sources: Iterable[CertificateSource]) -> list[x509.Certificate]:
    """The certificates of ``sources``, each a certificate, DER or PEM bytes, or a file path
    (a PEM file may hold several); InvalidData naming the one that is none of these."""
    if isinstance(sources, str | bytes | os.PathLike | x509.Certificate):
        sources = [sources]  # one given alone, not a sequence of characters or bytes
    out: list[x509.Certificate] = []
    for source in sources:
        if isinstance(source, x509.Certificate):
            out.append(source)
            continue
        if isinstance(source, str | os.PathLike):
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise InvalidData(f"cannot read the certificate file {source}: {exc}") from exc
            what = str(source)
        elif isinstance(source, bytes):
            data, what = source, "certificate bytes"
        else:
            raise InvalidData(
                f"a CA certificate is a certificate, DER or PEM bytes or a path, not "
                f"{type(source).__name__}"
            )
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                out.extend(x509.load_pem_x509_certificates(data))
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise InvalidData(f"{what} holds no PEM or DER certificate ({exc})") from exc
    return out


@dataclass
class DeviceRecord:
    """What the service keeps of a registered device."""

    device_id: str
    certificate: x509.Certificate
    transport_key: rsa.RSAPublicKey
    join_type: str
    attested: bool


class RegistrationService:
    """The service side of a join: AK enrollment, attested registration, PRT issuance."""

    def __init__(
        self,
        *,
        ek_ca_certificates: Iterable[CertificateSource] = (),
        allow_software: bool = False,
        require_attestation: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``ek_ca_certificates``: the CAs EK certificates must chain to, as certificates,
        DER or PEM bytes, or file paths alike (``Swtpm.ca_certificates`` as it is)."""
        #: Time in epoch seconds: ``time.time()`` when it is read, unless a test gives a clock.
        self.clock = clock or _now
        self.ek_ca_certificates = load_certificates(ek_ca_certificates)
        self.allow_software = allow_software
        self.require_attestation = require_attestation
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MS-Organization-Access (test)")])
        self.ca_certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self._pending: dict[bytes, list[AKEnrollment]] = {}
        # Issued nonces and when each expires (clock seconds); the two kinds never mix.
        self._nonces: dict[bytes, float] = {}
        self._prt_nonces: dict[str, float] = {}
        # Each set's nonces in issue order (all share one lifetime, so in expiry order too).
        self._nonce_queue: deque[tuple[float, bytes]] = deque()
        self._prt_nonce_queue: deque[tuple[float, str]] = deque()
        self._enrolled: dict[bytes, EnrolledAK] = {}
        self.devices: dict[str, DeviceRecord] = {}
        #: The session key side of each PRT ``issue_prt`` issued, by refresh token.
        self.prt_sessions: dict[str, TokenService] = {}

    def _policy(self, enrolled: Sequence[EnrolledAK] = ()) -> TrustPolicy:
        return TrustPolicy(
            allow_software=self.allow_software,
            ek_ca_certificates=self.ek_ca_certificates,
            enrolled_aks=[e for e in enrolled if e.hardware_backed],
        )

    # -- AK enrollment ------------------------------------------------------------------------

    def enrollment_challenge(self, ek: Any, ak_public: bytes) -> tuple[bytes, bytes]:
        """Check the EK (its certificate chains to the CAs and is for exactly this EK public)
        and the AK (a restricted signing key made in a TPM), then bind a secret to both with
        MakeCredential; returns (credential blob, encrypted secret)."""
        try:
            ek_public, ek_certificate = ek.public, ek.certificate
        except AttributeError as exc:
            raise InvalidData("an EK is given with .public and .certificate") from exc
        if ek_certificate is not None and not isinstance(ek_certificate, bytes):
            raise InvalidData("the EK certificate is DER bytes or None")
        enrollment = AKEnrollment(ak_public, ek_public, ek_certificate, policy=self._policy())
        self._check_replacement(enrollment)
        pending = self._pending.setdefault(enrollment.ak_name, [])
        del pending[:-7]  # a handful of open challenges per AK name, not an unbounded list
        pending.append(enrollment)
        return enrollment.credential_blob, enrollment.encrypted_secret

    def _check_replacement(self, enrollment: AKEnrollment) -> None:
        """An AK name enrolled once stays bound to its EK, and a hardware one stays hardware."""
        existing = self._enrolled.get(enrollment.ak_name)
        if existing is None:
            return
        if existing.ek_public != enrollment.ek.to_bytes():
            raise AttestationError("this AK is already enrolled with another EK")
        if existing.hardware_backed and not enrollment.hardware_backed:
            raise AttestationError("this AK is enrolled as hardware: a software EK cannot replace")

    def finish_enrollment(self, ak_public: bytes, answer: bytes) -> None:
        """Accept the AK when the device recovered the secret (only its TPM could); a wrong
        answer spends every open challenge for that AK."""
        name = _ak_name(ak_public)
        pending = self._pending.pop(name, [])
        for enrollment in pending:
            if enrollment.matches(answer):
                self._check_replacement(enrollment)
                self._enrolled[name] = enrollment.finish(answer)
                return
        raise AttestationError("the AK enrollment answer is wrong (or there was no challenge)")

    @staticmethod
    def attestation(
        ak_public: bytes, *, device_key: Certification, transport_key: Certification
    ) -> dict[str, Any]:
        """The join body's ``Attestation`` member this service checks (``register``): the
        enrolled AK's TPMT_PUBLIC and the certifications of both keys, each over a nonce of
        ``issue_nonce``. It is this stand-in's: Entra's own (MS-DRS ``AikCertificate``,
        ``AttestationData``) has no published format."""
        return {
            "AkPublic": b64_encode(bytes(ak_public)),
            "DeviceKey": json.loads(certification_to_json(device_key)),
            "TransportKey": json.loads(certification_to_json(transport_key)),
        }

    def ak_enrolled(self, ak_public: bytes) -> bool:
        """True once the AK passed enrollment."""
        return _ak_name(ak_public) in self._enrolled

    def enrolled_ak(self, ak_public: bytes) -> EnrolledAK | None:
        """The enrollment record of this AK (its EK and whether that EK is hardware), if any."""
        return self._enrolled.get(_ak_name(ak_public))

    # -- registration -------------------------------------------------------------------------

    def issue_nonce(self) -> bytes:
        """A fresh nonce for one key certification; accepted once, for ``NONCE_LIFETIME``."""
        nonce = os.urandom(16)
        _issue(self._nonces, self._nonce_queue, nonce, self.clock())
        return nonce

    def _spend(self, issued: dict[Any, float], nonce: object, what: str) -> None:
        """Accept a nonce of ``issued`` once, before it expires; InvalidData otherwise."""
        expires = issued.pop(nonce, None) if isinstance(nonce, str | bytes) else None
        if expires is None:
            raise InvalidData(f"the {what} was not issued by this service, or was already used")
        if self.clock() >= expires:
            raise InvalidData(f"the {what} expired ({NONCE_LIFETIME} s after it was issued)")

    def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Handle a join request (MS-DVRJ 3.1.5.1.1): check the CSR, the transport key and the
        key attestations, then issue the device certificate; its subject CN is the device id."""
        fields = Members.load(body, "the join request")
        request = fields.member("CertificateRequest")
        if request.text("Type") != "pkcs10":
            raise InvalidData(f"CertificateRequest type {request.text('Type')!r:.40}")
        try:
            csr = x509.load_der_x509_csr(request.base64("Data"))
        except (ValueError, x509.InvalidVersion) as exc:
            raise InvalidData(f"CertificateRequest.Data is not a DER CSR ({exc})") from exc
        transport = formats.public_key_from_bcrypt(fields.base64("TransportKey"))
        if not isinstance(transport, rsa.RSAPublicKey):  # pragma: no cover - the parser's type
            raise InvalidData("the transport key is not RSA")
        if transport.key_size != _KEY_BITS:  # the session key is RSA-OAEP-encrypted to it
            raise InvalidData(f"the transport key is RSA-{_KEY_BITS}, not RSA-{transport.key_size}")
        join_type_value = fields.integer("JoinType", min(_JOIN_TYPES), max(_JOIN_TYPES))
        if join_type_value not in _JOIN_TYPES:
            raise InvalidData(f"JoinType {join_type_value!r} is not 0, 4 or 6")
        join_type = _JOIN_TYPES[join_type_value]
        try:
            signed = csr.is_signature_valid
            subject = csr.subject.rfc4514_string()
            device_key = csr.public_key()
        except (ValueError, TypeError, PycaUnsupportedAlgorithm) as exc:
            raise InvalidData(f"the certificate request does not parse ({exc})") from exc
        if not signed:
            raise InvalidSignature("the certificate request is not signed by its key")
        if subject != formats.REGISTRATION_SUBJECT:
            raise InvalidData(f"unexpected request subject {subject}")
        if not isinstance(device_key, rsa.RSAPublicKey) or device_key.key_size != _KEY_BITS:
            raise InvalidData(
                f"the certificate request's key is RSA-{_KEY_BITS} (it signs PRT requests RS256), "
                f"not {_key_name(device_key)}"
            )
        if device_key.public_numbers() == transport.public_numbers():
            raise InvalidData("the transport key is the device key: a join needs two keys")
        attested = self._check_attestation(fields.optional("Attestation"), device_key, transport)
        device_id = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.ca_certificate.subject)
            .public_key(device_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self._ca_key, hashes.SHA256())
        )
        self.devices[device_id] = DeviceRecord(device_id, cert, transport, join_type, attested)
        der = cert.public_bytes(serialization.Encoding.DER)
        return {
            "Certificate": {
                "Thumbprint": hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
                "RawBody": b64_encode(der),
            },
            "DeviceId": device_id,
            "Attested": attested,
        }

    def _check_attestation(
        self,
        attestation: object,
        device_key: rsa.RSAPublicKey,
        transport: rsa.RSAPublicKey,
    ) -> bool:
        """Both keys certified by an enrolled AK, checked against the TPMT_PUBLIC recorded at
        enrollment, each certification naming exactly that key over a nonce issued here."""
        if attestation is None:
            if self.require_attestation:
                raise AttestationError("the join request carries no key attestation")
            return False
        fields = Members(attestation, "the join request's Attestation")
        record = self._enrolled.get(_ak_name(fields.base64("AkPublic")))
        if record is None:
            raise AttestationError("the attestation key is not enrolled")
        policy = self._policy([record])
        hardware = True
        for field_name, expected in (("DeviceKey", device_key), ("TransportKey", transport)):
            certification = certification_from_json(fields.required(field_name))
            expires = self._nonces.pop(certification.nonce, None)  # one use: no replay
            if expires is None:
                raise AttestationError(f"the {field_name} certification's nonce was not issued")
            if self.clock() >= expires:
                raise AttestationError(f"the {field_name} certification's nonce expired")
            result = verify_certify(
                certification.attest,
                certification.signature,
                record.ak_public,  # the enrolled TPMT_PUBLIC, never a key the client sends
                certification.key_public,
                certification.nonce,
                policy=policy,
                expected_key=expected,
            )
            hardware = hardware and result.hardware_backed
        return hardware

    def issue_prt_nonce(self) -> str:
        """A fresh nonce (``grant_type=srv_challenge``) for one PRT request; spent on use,
        accepted for ``NONCE_LIFETIME``."""
        nonce = b64url_encode(os.urandom(24))
        _issue(self._prt_nonces, self._prt_nonce_queue, nonce, self.clock())
        return nonce

    # -- the PRT ------------------------------------------------------------------------------

    def issue_prt(self, token: str) -> dict[str, Any]:
        """Check a PRT request signed by the device key (``verify_prt_request``) and answer
        with a refresh token and a new session key (``prt_sessions``) encrypted to the
        device's transport key."""
        record, _ = self.verify_prt_request(token)
        refresh_token = b64url_encode(os.urandom(48))
        session = self.prt_sessions[refresh_token] = TokenService()
        return {
            "token_type": "Bearer",
            "refresh_token": refresh_token,
            "session_key_jwe": session.session_key_jwe(record.transport_key),
        }

    def spend_prt_nonce(self, nonce: object) -> None:
        """Accept a nonce of ``issue_prt_nonce`` exactly once, before it expires; InvalidData
        otherwise (a DRS nonce, too)."""
        self._spend(self._prt_nonces, nonce, "request_nonce")

    def verify_prt_request(
        self, token: str, *, kdf_v2: bool = True
    ) -> tuple[DeviceRecord, dict[str, Any]]:
        """The device and claims of a PRT request JWT: RS256 verified by pyca against the
        ``x5c`` certificate, which must be one this service issued (array or string), header
        ``kdf_ver`` 2 (unless ``kdf_v2=False``: the device credential), ``request_nonce``
        exactly a nonce of ``issue_prt_nonce``, spent here."""
        if not isinstance(token, str):
            raise InvalidData(f"the request token is a string, not {type(token).__name__}")
        if len(token) > MAX_REQUEST_SIZE:
            raise InvalidData(f"the request token is over {MAX_REQUEST_SIZE} characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidData(f"the request token has 3 segments, not {len(parts)}")
        header = Members.load(_segment(parts[0], "header"), "the request token's header")
        x5c = header.required("x5c")
        if isinstance(x5c, list):  # Himmelblau sends an array, roadlib a string
            if not x5c or not isinstance(x5c[0], str):
                raise InvalidData("the request's x5c array holds no certificate")
            x5c = x5c[0]
        elif not isinstance(x5c, str):
            raise InvalidData("the request's x5c is a string or an array of strings")
        try:
            der = b64_decode(x5c)
        except InvalidData as exc:
            raise InvalidData(f"the request's x5c: {exc}") from None
        try:
            cert = x509.load_der_x509_certificate(der)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except (ValueError, x509.InvalidVersion) as exc:
            raise InvalidData(f"the request's x5c is not a certificate ({exc})") from exc
        if not names:
            raise InvalidData("the request's certificate has no subject CN (no device id)")
        record = self.devices.get(str(names[0].value))
        if record is None or record.certificate != cert:
            raise InvalidSignature("the request's certificate was not issued by this service")
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise InvalidSignature("the request's certificate is not valid now")
        if kdf_v2 and header.optional_integer("kdf_ver", 1, 2) != 2:
            raise InvalidData("the request does not ask for KDF version 2")
        device_key = cert.public_key()
        if not isinstance(device_key, rsa.RSAPublicKey):
            raise InvalidData("the device certificate's key is not RSA")
        if header.optional("alg") != "RS256":
            raise InvalidData("the PRT request is not RS256")
        signature = _segment(parts[2], "signature")
        payload = _segment(parts[1], "payload")
        try:  # pyca checks the signature, not entra_keys' own verify code
            device_key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(),
                hashes.SHA256(),
            )  # fmt: skip
        except PycaInvalidSignature:
            raise InvalidSignature("the PRT request's RS256 signature does not verify") from None
        claims = Members.load(payload, "the request's claims")
        if "request_nonce" not in claims:  # MS-OAPXBC 3.2.5.1.2.1: a PRT request carries one
            raise InvalidData("the PRT request has no request_nonce")
        self.spend_prt_nonce(claims.text("request_nonce"))
        return record, dict(claims.value)


def _now() -> float:
    """``time.time()``, looked up on each call (so that a test may patch it)."""
    return time.time()


def _segment(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except InvalidData as exc:
        raise InvalidData(f"malformed request token: {what}: {exc}") from None


def _issue(issued: dict[_N, float], queue: deque[tuple[float, _N]], nonce: _N, now: float) -> None:
    """Record a nonce issued ``now``. The expired ones are forgotten first, from the front of
    the issue-order queue (spent ones are already gone from ``issued``), so that the set stays
    as small as the nonces a client can still use, in time linear in the nonces issued."""
    while queue and queue[0][0] <= now:
        issued.pop(queue.popleft()[1], None)
    expires = now + NONCE_LIFETIME
    issued[nonce] = expires
    queue.append((expires, nonce))


def _key_name(key: object) -> str:
    """What a key is, for a message: RSA-<bits>, the curve, or its type."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"{key.curve.name} (elliptic-curve)"
    return type(key).__name__


def _ak_name(ak_public: bytes) -> bytes:
    """The AK's name from its TPMT_PUBLIC (or TPM2B_PUBLIC); InvalidData when it is neither."""
    if not isinstance(ak_public, bytes | bytearray):
        raise InvalidData(f"an AK public area is bytes, not {type(ak_public).__name__}")
    return TPMTPublic.parse(tpmt_bytes(bytes(ak_public))).name()
