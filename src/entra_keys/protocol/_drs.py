"""The Device Registration Service: join (the device certificate for the device key) and leave.

Sources: MS-DVRJ 3.1.5.1.1 (the join body; Microsoft's spec), Himmelblau's ``aad-join-spec.md``
("MS-DRS", the api-version=2.0 service Entra runs), ROADtools roadlib ``deviceauth.py``
``register_device`` and libhimmelblau ``discovery.rs`` ``enroll_device`` (what works today).
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm as PycaUnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .. import formats
from .._json import Members, b64_encode
from ..errors import InvalidData
from ..formats import PrivateKey
from ._common import (
    DRS_URL,
    Request,
    json_request,
    rsa2048,
    same_public_key,
    tenant_segment,
    text,
)

if TYPE_CHECKING:
    from cryptography import x509

#: Where a join request goes (MS-DRS 3.3; roadlib, Himmelblau).
REGISTRATION_URL = f"{DRS_URL}/EnrollmentServer/device/?api-version=2.0"
_BUILT = (
    "CertificateRequest",
    "TransportKey",
    "TargetDomain",
    "DeviceType",
    "OSVersion",
    "DeviceDisplayName",
    "JoinType",
    "Attributes",
)
#: The join's ``Attributes`` by default: what libhimmelblau (``discovery.rs``
#: ``enroll_device``) and roadlib (``deviceauth.py`` ``register_device``) send: reuse a device
#: object of the same id, and return the client SID.
JOIN_ATTRIBUTES: Mapping[str, str | bool] = MappingProxyType(
    {"ReuseDevice": "true", "ReturnClientSid": "true"}
)


class JoinType(enum.IntEnum):
    """``JoinType`` of a join request (MS-DRS 2.1.1.1.1; MS-DVRJ has the member, not values)."""

    JOIN = 0  #: Entra join
    REGISTER = 4  #: Entra register (a personal device)
    HYBRID = 6  #: hybrid join (the device also in on-premises AD)


@dataclass(frozen=True)
class Registration:
    """What a join reply says: the device certificate, its device id and thumbprint, the user."""

    certificate: x509.Certificate
    #: The subject CN of the certificate: the device object's id in Entra.
    device_id: str
    #: SHA-1 of the certificate's DER, uppercase hex (the reply's ``Certificate.Thumbprint``).
    thumbprint: str
    #: ``User.Upn``: who joined the device, when the reply says.
    upn: str | None = None

    @property
    def certificate_der(self) -> bytes:
        """The certificate as DER (what ``x5c`` carries)."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> bytes:
        """The certificate as PEM (what a TLS client, or ``openssl``, loads)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def join_state(self, *, tenant: str) -> dict[str, str]:
        """The members ``KeyStore.save_join_state`` keeps beside the keys for ``status``:
        ``device_id``, ``thumbprint``, ``certificate`` (PEM), ``tenant`` and ``upn`` (if
        known). ``from_join_state`` reads them back."""
        state = {
            "device_id": self.device_id,
            "thumbprint": self.thumbprint,
            "certificate": self.certificate_pem.decode("ascii"),
            "tenant": text(tenant, "tenant"),
        }
        if self.upn is not None:
            state["upn"] = self.upn
        return state

    @classmethod
    def from_join_state(cls, state: Mapping[str, Any]) -> Registration:
        """The registration a join state records (``join_state``), checked again: the
        thumbprint and device id must be the certificate's; InvalidData otherwise."""
        from cryptography import x509

        fields = Members(state, "the join state")
        try:
            certificate = x509.load_pem_x509_certificate(fields.text("certificate").encode("ascii"))
        except (ValueError, x509.InvalidVersion) as exc:  # UnicodeEncodeError is a ValueError
            raise InvalidData(f"the join state's certificate is not PEM ({exc})") from exc
        der = certificate.public_bytes(serialization.Encoding.DER)
        reply = {
            "Certificate": {
                "RawBody": b64_encode(der),
                "Thumbprint": fields.text("thumbprint"),
            },
            "DeviceId": fields.text("device_id"),
            "User": {"Upn": fields.optional_text("upn")},
        }
        return parse_registration_response(reply)


def registration_request(
    device_key: PrivateKey,
    transport_key: PrivateKey,
    *,
    access_token: str,
    domain: str,
    display_name: str,
    os_version: str,
    device_type: str = "Linux",
    join_type: JoinType = JoinType.JOIN,
    attributes: Mapping[str, str | bool] | None = JOIN_ATTRIBUTES,
    extra_fields: Mapping[str, Any] | None = None,
) -> Request:
    """The join request: a CSR of the device key and the public transport key, for DRS.

    ``POST https://enterpriseregistration.windows.net/EnrollmentServer/device/?api-version=2.0``
    with ``Authorization: Bearer <access_token>`` (a token for the resource
    ``urn:ms-drs:enterpriseregistration.windows.net``, MS-DRS 3.3) and a JSON body:

    ======================  =====================================================  ===========
    member                  value                                                  source
    ======================  =====================================================  ===========
    CertificateRequest      ``{"Type": "pkcs10", "Data": base64(DER CSR)}``: the   MS-DVRJ,
                            device key's PKCS#10, SHA256withRSA, RSA-2048,         MS-DRS,
                            ``CN=7E980AD9-B86D-4306-9425-9AC066FB014A``            roadlib,
                                                                                   Himmelblau
    TransportKey            base64 of the public BCRYPT_RSAKEY_BLOB ("RSA1",       MS-DRS,
                            cbPrime1 = cbPrime2 = 0) of the transport key          roadlib,
                                                                                   Himmelblau
    TargetDomain            ``domain``                                             MS-DVRJ
    DeviceType              ``device_type``, "Linux" (roadlib sends a JWK          MS-DVRJ
                            TransportKey for MacOS and Android; Linux and
                            Windows send the blob, as here)
    OSVersion               ``os_version``                                         MS-DVRJ
    DeviceDisplayName       ``display_name``                                       MS-DVRJ
    JoinType                ``join_type``: 0 join, 4 register, 6 hybrid            MS-DVRJ,
                                                                                   MS-DRS
    Attributes              ``attributes``: by default ``JOIN_ATTRIBUTES``,        MS-DRS,
                            ``{"ReuseDevice": "true", "ReturnClientSid":           Himmelblau
                            "true"}`` (Himmelblau ``discovery.rs``, roadlib        (discovery
                            ``register_device``); another mapping sends that,      .rs),
                            None sends no member                                   roadlib
    ======================  =====================================================  ===========

    Sources disagree on ``Attributes``: MS-DRS writes booleans, libhimmelblau sends the strings
    ``"true"`` and roadlib the same strings under a lowercase ``attributes``. The member is named
    as MS-DRS names it and its values go as given. MS-DRS says the CSR SHOULD carry the DRS
    nonce (OID 1.2.840.113556.1.5.284.2.1); neither peer does, nor does this. ``extra_fields``
    adds members as given (``AikCertificate`` and ``AttestationData`` of MS-DRS, whose format
    is unconfirmed, or a test service's own); it may not replace a member built here.
    """
    device_key = rsa2048(device_key, "device key")
    transport_key = rsa2048(transport_key, "transport key")
    if same_public_key(device_key, transport_key):
        raise InvalidData("the transport key must be another key than the device key")
    try:
        if isinstance(join_type, bool):
            raise ValueError(join_type)
        join = JoinType(join_type)
    except ValueError:
        raise InvalidData(
            f"JoinType {join_type!r} is not 0 (join), 4 (register) or 6 (hybrid)"
        ) from None
    csr = formats.csr_der(formats.build_csr(device_key, formats.REGISTRATION_SUBJECT))
    body: dict[str, Any] = {
        "CertificateRequest": {"Type": "pkcs10", "Data": b64_encode(csr)},
        "TransportKey": b64_encode(formats.bcrypt_rsakey_blob(transport_key)),
        "TargetDomain": text(domain, "domain"),
        "DeviceType": text(device_type, "device_type"),
        "OSVersion": text(os_version, "os_version"),
        "DeviceDisplayName": text(display_name, "display_name"),
        "JoinType": int(join),
    }
    if attributes is not None:
        body["Attributes"] = _attributes(attributes)
    if extra_fields is not None and not isinstance(extra_fields, Mapping):
        raise InvalidData(f"extra_fields is a mapping, not {type(extra_fields).__name__}")
    for name, value in (extra_fields or {}).items():
        if name in _BUILT:
            raise InvalidData(f"extra_fields may not replace {name!r}, which is built here")
        body[text(name, "an extra_fields name")] = value
    return json_request("POST", REGISTRATION_URL, body, access_token)


def _attributes(attributes: Mapping[str, str | bool]) -> dict[str, str | bool]:
    if not isinstance(attributes, Mapping):
        raise InvalidData(f"attributes is a mapping, not {type(attributes).__name__}")
    checked: dict[str, str | bool] = {}
    for name, value in attributes.items():
        if not isinstance(value, str | bool):
            raise InvalidData(f"attribute {name!r} is a string or a boolean, not {value!r}")
        checked[text(name, "an attribute name")] = value
    return checked


def parse_registration_response(
    body: bytes | str | Mapping[str, Any], *, device_key: PrivateKey | None = None
) -> Registration:
    """The device certificate, device id, thumbprint and UPN of a join reply; InvalidData when
    it is malformed (and, with ``device_key``, when the certificate is not for that key).

    DRS answers in plain JSON over TLS (MS-DRS 3.3): nothing but TLS and, with ``device_key``,
    the check that the certificate is for this device key, vouches for it. A reply over
    ``MAX_JSON_SIZE`` (1 MiB) is refused before it is decoded.

    ===============================  ===============================================  ========
    member                           read as                                          source
    ===============================  ===============================================  ========
    Certificate.RawBody              base64 DER X.509: the device certificate         MS-DRS,
                                                                                      roadlib,
                                                                                      Himmelblau
    (subject CN of the certificate)  ``device_id``                                    MS-DRS,
                                                                                      roadlib,
                                                                                      Himmelblau
    Certificate.Thumbprint           optional; must equal SHA-1(DER), uppercase hex,  MS-DRS
                                     which ``thumbprint`` always is
    User.Upn                         optional: ``upn``                                MS-DRS
    DeviceId                         optional (a test service's); must equal the CN   --
    ===============================  ===============================================  ========
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    reply = Members.load(body, "the join reply")
    certificate_fields = reply.member("Certificate")
    der = certificate_fields.base64("RawBody")
    try:
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        public_key = certificate.public_key()
    except (ValueError, x509.InvalidVersion, PycaUnsupportedAlgorithm) as exc:
        raise InvalidData(f"Certificate.RawBody is not a DER X.509 certificate ({exc})") from exc
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise InvalidData("the device certificate's subject has no single CN (the device id)")
    device_id = names[0].value
    thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    stated = certificate_fields.optional_text("Thumbprint")
    if stated is not None and stated.upper() != thumbprint:
        raise InvalidData(f"Certificate.Thumbprint {stated} is not the certificate's {thumbprint}")
    stated_id = reply.optional_text("DeviceId")
    if stated_id is not None and stated_id.lower() != device_id.lower():
        raise InvalidData(f"DeviceId {stated_id} is not the certificate's CN {device_id}")
    user = reply.optional_member("User")
    upn = None if user is None else user.optional_text("Upn")
    if device_key is not None and not same_public_key(device_key, public_key):
        raise InvalidData("the device certificate is not for this device key")
    return Registration(certificate, device_id, thumbprint, upn)


def drs_nonce_request(tenant: str) -> Request:
    """The DRS nonce request: ``GET .../EnrollmentServer/nonce/{tenant}/?api-version=1.0``
    (MS-DRS). Its reply's ``Value`` (``parse_drs_nonce``) is what MS-DRS has the
    CSR carry (SHOULD, which neither peer does); entra_keys uses it as the qualifying data of
    the key certifications a join sends in ``extra_fields`` (the stand-in's ``Attestation``)."""
    return Request(
        "GET",
        f"{DRS_URL}/EnrollmentServer/nonce/{tenant_segment(tenant)}/?api-version=1.0",
        {"Accept": "application/json"},
        b"",
    )


def parse_drs_nonce(body: bytes | str | Mapping[str, Any]) -> bytes:
    """The ``Value`` of a DRS nonce reply, decoded from standard base64 (8 to 32 bytes: a TPM
    takes at most a digest's length as qualifying data); InvalidData otherwise. Plain JSON
    over TLS, at most ``MAX_JSON_SIZE`` (1 MiB), refused before it is decoded when larger."""
    nonce = Members.load(body, "the DRS nonce reply").base64("Value")
    if not 8 <= len(nonce) <= 32:
        raise InvalidData(f"the DRS nonce is {len(nonce)} bytes, not 8 to 32")
    return nonce


def leave_request(device_id: str) -> Request:
    """The leave request: ``DELETE .../EnrollmentServer/device/{device_id}`` (roadlib
    ``delete_device``; MS-DVRJ has no leave).

    DRS authenticates it by TLS alone: the agent MUST send it over mutual TLS, the device
    certificate as client certificate and the device key as its key (for a TPM key, through an
    OpenSSL provider that loads the key file, such as tpm2-openssl). It carries no token.
    """
    try:
        parsed = uuid.UUID(text(device_id, "device_id"))
    except ValueError:
        raise InvalidData(
            f"device_id {device_id!r} is not a GUID (a device certificate's CN)"
        ) from None
    if str(parsed) != device_id.lower():
        raise InvalidData(f"device_id {device_id!r} is not a GUID in its 8-4-4-4-12 form")
    return Request("DELETE", f"{DRS_URL}/EnrollmentServer/device/{device_id}", {}, b"")


def tls_openssl_config() -> str:
    """The ``OPENSSL_CONF`` text under which OpenSSL 3 (and so Python's ``ssl``) does mutual TLS
    with a TPM key file from the store: tpm2-openssl activated *before* the default provider.

    The order is what makes it work: with ``default`` first, the handshake's signature is
    fetched from the default provider, which cannot use a TPM key ("EVP lib"); a
    ``default_properties`` that keeps tpm2-openssl out does the same. The process needs
    ``OPENSSL_CONF`` naming a file with this text and ``TPM2OPENSSL_TCTI`` naming the TPM before
    it first uses ``ssl``. tpm2-openssl then also serves the handshake's hashes, one TPM object
    each: a TPM needs a resource manager in front (``/dev/tpmrm0``, tpm2-abrmd), as a bare
    swtpm's three object slots run out (checked in tests/test_mtls.py).
    """
    return (
        "openssl_conf = openssl_init\n"
        "[openssl_init]\n"
        "providers = provider_sect\n"
        "[provider_sect]\n"
        "tpm2 = tpm2_sect\n"
        "default = default_sect\n"
        "[tpm2_sect]\n"
        "activate = 1\n"
        "[default_sect]\n"
        "activate = 1\n"
    )
