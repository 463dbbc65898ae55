"""A local stand-in for Entra's Device Registration Service and token service, for tests.

It plays the service's side of a join, built only on the public verifier and formats of
entra_keys (and pyca ``cryptography``), so join-agent authors can run a whole join in a test::

    service = RegistrationService(ek_ca_certificates=cas)
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)     # AK enrollment
    service.finish_enrollment(ak.tpm_public, provider.activate_credential(ak, ek, blob, secret))
    reply = service.register(join_request_body)                         # device certificate
    prt = service.issue_prt(device_signed_jwt)                          # session_key_jwe

It keeps everything in memory, trusts only what it was given, and never talks to a network.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .. import formats
from ..attestation.credential import make_credential
from ..attestation.software import certification_from_json
from ..attestation.structures import TPMTPublic
from ..attestation.verifier import TrustPolicy, verify_certify, verify_ek_certificate
from ..errors import AttestationError, InvalidData, InvalidSignature
from ..provider import EndorsementKey
from .token_service import TokenService

__all__ = ["DeviceRecord", "RegistrationService"]

_JOIN_TYPES = {0: "join", 4: "register", 6: "hybrid"}


@dataclass
class DeviceRecord:
    """What the service keeps of a registered device."""

    device_id: str
    certificate: x509.Certificate
    transport_key: rsa.RSAPublicKey
    join_type: str
    attested: bool
    token_service: TokenService = field(default_factory=TokenService, repr=False)


class RegistrationService:
    """The service side of a join: AK enrollment, attested registration, PRT issuance."""

    def __init__(
        self,
        *,
        ek_ca_certificates: Sequence[x509.Certificate] = (),
        allow_software: bool = False,
        require_attestation: bool = True,
    ) -> None:
        self.ek_ca_certificates = list(ek_ca_certificates)
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
        self._challenges: dict[bytes, tuple[bytes, bool]] = {}
        self._nonces: set[bytes] = set()
        self._enrolled: dict[bytes, bool] = {}
        self.devices: dict[str, DeviceRecord] = {}

    # -- AK enrollment ------------------------------------------------------------------------

    def enrollment_challenge(self, ek: EndorsementKey, ak_public: bytes) -> tuple[bytes, bytes]:
        """Check the EK (its certificate chain, for hardware) and bind a secret to it and the
        AK's name with MakeCredential; returns (credential blob, encrypted secret)."""
        if ek.hardware_backed:
            if ek.certificate is None:
                raise AttestationError("the EK has no certificate to check")
            verify_ek_certificate(ek.certificate, self.ek_ca_certificates)
        elif not self.allow_software:
            raise AttestationError("a software EK is not accepted by this service")
        ak = TPMTPublic.parse(ak_public)
        secret = os.urandom(32)
        blob, encrypted = make_credential(TPMTPublic.parse(ek.public), ak.name(), secret)
        self._challenges[ak.name()] = (secret, ek.hardware_backed)
        return blob, encrypted

    def finish_enrollment(self, ak_public: bytes, answer: bytes) -> None:
        """Accept the AK when the device recovered the secret (only its TPM could)."""
        name = TPMTPublic.parse(ak_public).name()
        secret, hardware = self._challenges.pop(name, (b"", False))
        if not secret or not hmac.compare_digest(secret, answer):
            raise AttestationError("the AK enrollment answer is wrong")
        self._enrolled[name] = hardware

    def ak_enrolled(self, ak_public: bytes) -> bool:
        """True once the AK passed enrollment."""
        return TPMTPublic.parse(ak_public).name() in self._enrolled

    # -- registration -------------------------------------------------------------------------

    def issue_nonce(self) -> bytes:
        """A fresh nonce for one key certification; each is accepted once."""
        nonce = os.urandom(16)
        self._nonces.add(nonce)
        return nonce

    def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Handle a join request (REFERENCE §1.2): check the CSR, the transport key and the key
        attestations, then issue the device certificate; its subject CN is the device id."""
        try:
            request = body["CertificateRequest"]
            if request["Type"] != "pkcs10":
                raise InvalidData(f"CertificateRequest type {request['Type']!r}")
            csr = x509.load_der_x509_csr(base64.b64decode(request["Data"], validate=True))
            transport = formats.public_key_from_bcrypt(
                base64.b64decode(body["TransportKey"], validate=True)
            )
            join_type = _JOIN_TYPES[int(body["JoinType"])]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidData(f"malformed join request ({exc!r})") from exc
        if not csr.is_signature_valid:
            raise InvalidSignature("the certificate request is not signed by its key")
        if csr.subject.rfc4514_string() != formats.REGISTRATION_SUBJECT:
            raise InvalidData(f"unexpected request subject {csr.subject.rfc4514_string()}")
        device_key = csr.public_key()
        attested = self._check_attestation(body.get("Attestation"), device_key, transport)
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
        return {
            "Certificate": {
                "RawBody": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
            },
            "DeviceId": device_id,
            "Attested": attested,
        }

    def _check_attestation(
        self,
        attestation: Any,
        device_key: Any,
        transport: rsa.RSAPublicKey,
    ) -> bool:
        """Both keys certified by an enrolled AK, each certification naming exactly that key."""
        if attestation is None:
            if self.require_attestation:
                raise AttestationError("the join request carries no key attestation")
            return False
        ak_public = base64.b64decode(attestation["AkPublic"])
        ak_name = TPMTPublic.parse(ak_public).name()
        if ak_name not in self._enrolled:
            raise AttestationError("the attestation key is not enrolled")
        hardware = self._enrolled[ak_name]
        policy = TrustPolicy(allow_software=self.allow_software and not hardware)
        ak_key = TPMTPublic.parse(ak_public).public_key()
        for field_name, expected in (("DeviceKey", device_key), ("TransportKey", transport)):
            certification = certification_from_json(attestation[field_name])
            if certification.nonce not in self._nonces:
                raise AttestationError(f"the {field_name} certification's nonce was not issued")
            self._nonces.discard(certification.nonce)  # one use: no replay
            verify_certify(
                certification.attest,
                certification.signature,
                ak_key,
                certification.key_public,
                certification.nonce,
                policy=policy,
                expected_key=expected,
            )
        return hardware

    # -- the PRT ------------------------------------------------------------------------------

    def issue_prt(self, token: str) -> dict[str, Any]:
        """Check a PRT request signed by the device key (RS256, ``x5c`` the device certificate
        this service issued, ``kdf_ver`` 2) and answer with a refresh token and the session key
        encrypted to the device's transport key."""
        header = _jws_header(token)
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"], validate=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidData(f"the request's x5c is not a certificate ({exc!r})") from exc
        device_id = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        record = self.devices.get(str(device_id))
        if record is None or record.certificate != cert:
            raise InvalidSignature("the request's certificate was not issued by this service")
        if header.get("kdf_ver") != 2:
            raise InvalidData("the request does not ask for KDF version 2")
        device_key = cert.public_key()
        if not isinstance(device_key, rsa.RSAPublicKey):
            raise InvalidData("the device certificate's key is not RSA")
        _, payload = formats.jws_verify(token, device_key, ["RS256"])
        if b"request_nonce" not in payload:
            raise InvalidData("the request carries no request_nonce")
        return {
            "token_type": "Bearer",
            "refresh_token": base64.urlsafe_b64encode(os.urandom(48)).decode(),
            "session_key_jwe": record.token_service.session_key_jwe(record.transport_key),
        }

    def token_service(self, device_id: str) -> TokenService:
        """The session-key side for a registered device (checks HS256 requests, encrypts)."""
        return self.devices[device_id].token_service


def _jws_header(token: str) -> dict[str, Any]:
    try:
        header = json.loads(formats.b64url_decode(token.split(".")[0]))
    except ValueError as exc:
        raise InvalidData(f"malformed request token ({exc})") from exc
    if not isinstance(header, dict):
        raise InvalidData("the request token's header is not an object")
    return header
