"""The Entra messages of ``entra_keys.protocol``, over both providers where a key is involved.

Every message is decoded here with the standard library and pyca alone (base64, json,
urllib.parse): signatures are checked by pyca's ``verify``, HS256 keys by pyca's KBKDFHMAC,
the CSR by pyca's ``is_signature_valid``, never by entra_keys' own verify code. Replies that
carry keys are made by the token-service stand-in (``entra_keys.testing.token_service``).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
import shlex
import struct
import urllib.parse
import uuid
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from entra_keys import KeyStore, KeyType, KeyUsage, Provider
from entra_keys._json import b64url_decode, b64url_encode
from entra_keys.errors import DecryptionError, EntraKeysError, InvalidData, ServiceError
from entra_keys.protocol import (
    PRT,
    JoinType,
    Registration,
    Request,
    app_token_request,
    device_credential,
    leave_request,
    ngc_assertion,
    ngc_key_id,
    ngc_registration_request,
    nonce_request,
    parse_nonce,
    parse_prt_response,
    parse_refresh_response,
    parse_registration_response,
    parse_token_response,
    prt_cookie,
    prt_request,
    refresh_prt_request,
    registration_request,
)
from entra_keys.provider import EntraPrivateKey
from entra_keys.session import PRTSession
from entra_keys.testing.registration import RegistrationService
from entra_keys.testing.token_service import TokenService

from .helpers import kbkdf

try:  # os-release(5), read here without entra_keys: the win_ver Himmelblau sends
    _OS_RELEASE = dict(
        line.split("=", 1)
        for line in shlex.split(open("/etc/os-release").read(), comments=True)  # noqa: SIM115
        if "=" in line
    )
except FileNotFoundError:
    _OS_RELEASE = {}
#: The win_ver every request sends by default: PRETTY_NAME VERSION_ID (None: not sent).
DEFAULT_WIN_VER = (
    " ".join(v for v in (_OS_RELEASE.get("PRETTY_NAME"), _OS_RELEASE.get("VERSION_ID")) if v)
    or None
)
WIN_VER = {} if DEFAULT_WIN_VER is None else {"win_ver": DEFAULT_WIN_VER}

LABEL = b"AzureAD-SecureConversation"
PASSWORD_CLIENT = "38aa3b87-a06d-4817-b275-7a316988d93b"
REFRESH_CLIENT = "29d9ed98-a469-4536-ade2-f981bc1d605e"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/token"
NONCE = "AwABAAAAAAACAOz_BAD0_8vU8dH9Bb0ciqF_haudN2OkDdyluIE2zHStmEQdUVbiSUaQi"
REFRESH_TOKEN = "0.AXkA-the-primary-refresh-token-Zm9vYmFy"
ID_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJ1cG4iOiJ1QGNvbnRvc28uY29tIn0."


# -- independent decoding -------------------------------------------------------------------


def b64url(text: str) -> bytes:
    """Base64url without padding, decoded by the standard library."""
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS."""
    head, body, signature = token.split(".")
    return (
        json.loads(b64url(head)),
        json.loads(b64url(body)),
        f"{head}.{body}".encode("ascii"),
        b64url(signature),
    )


def rs256_claims(token: str, public: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of an RS256 JWS, after pyca checked its signature."""
    header, claims, signing_input, signature = jwt_parts(token)
    assert header["alg"] == "RS256"
    public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    return header, claims


def hs256_claims(token: str, session_key: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a session-key-signed JWS, its HS256 signature checked with the
    KDF v2 key (context SHA-256(ctx || the exact payload bytes))."""
    header, claims, signing_input, signature = jwt_parts(token)
    assert list(header) == ["alg", "typ", "ctx", "kdf_ver"]
    assert (header["alg"], header["typ"], header["kdf_ver"]) == ("HS256", "JWT", 2)
    ctx = base64.b64decode(header["ctx"], validate=True)
    assert len(ctx) == 24 and base64.b64encode(ctx).decode() == header["ctx"]
    payload = b64url(token.split(".")[1])
    key = kbkdf(session_key, hashlib.sha256(ctx + payload).digest())
    assert hmac.compare_digest(signature, hmac.new(key, signing_input, "sha256").digest())
    return header, claims


def form(request: Request) -> dict[str, str]:
    """The fields of a form body, each once, in order."""
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    pairs = urllib.parse.parse_qsl(request.body.decode("ascii"), strict_parsing=True)
    fields = dict(pairs)
    assert len(fields) == len(pairs)
    return fields


def public(key: EntraPrivateKey | rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    found = key.public_key()
    assert isinstance(found, rsa.RSAPublicKey)
    return found


def bcrypt_blob(key: rsa.RSAPublicKey) -> bytes:
    """The public BCRYPT_RSAKEY_BLOB, written out from its definition."""
    numbers = key.public_numbers()
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    n = numbers.n.to_bytes(256, "big")
    return b"RSA1" + struct.pack("<5I", 2048, len(e), len(n), 0, 0) + e + n


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    """A certificate authority standing in for DRS's (software P-256)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MS-Organization-Access")])
    return ec.generate_private_key(ec.SECP256R1()), name


def issue(ca: tuple[ec.EllipticCurvePrivateKey, x509.Name], key: Any, cn: str) -> x509.Certificate:
    ca_key, ca_name = ca
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )


@pytest.fixture
def device_certificate(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name], rsa_signing_key: EntraPrivateKey
) -> x509.Certificate:
    """A device certificate for the device key of the provider under test."""
    return issue(ca, public(rsa_signing_key), str(uuid.uuid4()))


@pytest.fixture
def service() -> TokenService:
    return TokenService()


@pytest.fixture
def prt_session(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> PRTSession:
    """The stand-in's session key imported into the provider under test."""
    return PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )


@pytest.fixture(scope="module")
def other_rsa() -> rsa.RSAPrivateKey:
    """A software RSA-2048 key, for the checks that need no provider."""
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def second_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


# -- join -----------------------------------------------------------------------------------


def test_registration_request_field_by_field(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey
) -> None:
    request = registration_request(
        rsa_signing_key,
        transport_key,
        access_token="eyJ0.drs-token",
        domain="contoso.com",
        display_name="büro-pc",
        os_version="Debian GNU/Linux 13",
    )
    assert request.method == "POST"
    assert request.url == (
        "https://enterpriseregistration.windows.net/EnrollmentServer/device/?api-version=2.0"
    )
    assert request.headers == {
        "Authorization": "Bearer eyJ0.drs-token",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    body = json.loads(request.body)
    assert list(body) == [
        "CertificateRequest",
        "TransportKey",
        "TargetDomain",
        "DeviceType",
        "OSVersion",
        "DeviceDisplayName",
        "JoinType",
        "Attributes",
    ]
    # What libhimmelblau (discovery.rs enroll_device) and roadlib (register_device) send.
    assert body["Attributes"] == {"ReuseDevice": "true", "ReturnClientSid": "true"}
    assert body["CertificateRequest"]["Type"] == "pkcs10"
    assert list(body["CertificateRequest"]) == ["Type", "Data"]
    csr = x509.load_der_x509_csr(
        base64.b64decode(body["CertificateRequest"]["Data"], validate=True)
    )
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=7E980AD9-B86D-4306-9425-9AC066FB014A"
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    assert isinstance(csr.public_key(), rsa.RSAPublicKey)
    assert csr.public_key() == public(rsa_signing_key)
    blob = base64.b64decode(body["TransportKey"], validate=True)
    assert len(blob) == 283
    assert blob == bcrypt_blob(public(transport_key))
    assert blob[24:27] == b"\x01\x00\x01"
    assert body["TargetDomain"] == "contoso.com"
    assert body["DeviceType"] == "Linux"
    assert body["OSVersion"] == "Debian GNU/Linux 13"
    assert body["DeviceDisplayName"] == "büro-pc"
    assert body["JoinType"] == 0 and type(body["JoinType"]) is int


def test_registration_request_join_type_attributes_and_extra_fields(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey
) -> None:
    request = registration_request(
        rsa_signing_key,
        transport_key,
        access_token="t",
        domain="contoso.com",
        display_name="pc",
        os_version="13",
        device_type="Ubuntu",
        join_type=JoinType.HYBRID,
        attributes={"ReuseDevice": "true", "SharedDevice": False},
        extra_fields={"AikCertificate": ""},
    )
    body = json.loads(request.body)
    assert body["JoinType"] == 6 and body["DeviceType"] == "Ubuntu"
    assert body["Attributes"] == {"ReuseDevice": "true", "SharedDevice": False}
    assert body["AikCertificate"] == ""
    assert [int(t) for t in JoinType] == [0, 4, 6]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"access_token": ""}, "access_token is empty"),
        ({"access_token": "a\r\nX-Evil: 1"}, "control character"),
        ({"domain": 7}, "domain is a str"),
        ({"join_type": 3}, "JoinType 3"),
        ({"join_type": True}, "JoinType True"),
        ({"extra_fields": {"AttestationData": object()}}, "cannot be serialized as JSON"),
        ({"attributes": {"ReuseDevice": 1}}, "string or a boolean"),
        ({"extra_fields": {"TransportKey": "x"}}, "may not replace 'TransportKey'"),
    ],
)
def test_registration_request_refuses_bad_values(
    other_rsa: rsa.RSAPrivateKey,
    second_rsa: rsa.RSAPrivateKey,
    change: dict[str, Any],
    message: str,
) -> None:
    arguments: dict[str, Any] = {
        "access_token": "t",
        "domain": "contoso.com",
        "display_name": "pc",
        "os_version": "13",
        **change,
    }
    with pytest.raises(InvalidData, match=message):
        registration_request(other_rsa, second_rsa, **arguments)


def test_registration_request_refuses_wrong_keys(other_rsa: rsa.RSAPrivateKey) -> None:
    arguments: dict[str, Any] = {
        "access_token": "t",
        "domain": "d",
        "display_name": "pc",
        "os_version": "13",
    }
    with pytest.raises(InvalidData, match="another key than the device key"):
        registration_request(other_rsa, other_rsa, **arguments)
    with pytest.raises(InvalidData, match="RSA-2048 private key, not"):
        registration_request(ec.generate_private_key(ec.SECP256R1()), other_rsa, **arguments)
    with pytest.raises(InvalidData, match="not RSA-3072"):
        registration_request(rsa.generate_private_key(65537, 3072), other_rsa, **arguments)


def test_join_through_the_stand_in_registration_service(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey
) -> None:
    """The stand-in takes the body as built, and its reply parses to a consistent record."""
    service = RegistrationService(require_attestation=False)
    request = registration_request(
        rsa_signing_key,
        transport_key,
        access_token="t",
        domain="contoso.com",
        display_name="pc",
        os_version="13",
    )
    reply = service.register(json.loads(request.body))
    registration = parse_registration_response(json.dumps(reply), device_key=rsa_signing_key)
    assert registration.device_id == reply["DeviceId"]
    record = service.devices[registration.device_id]
    assert record.transport_key == public(transport_key)
    assert registration.certificate == record.certificate
    assert registration.certificate.public_key() == public(rsa_signing_key)
    assert registration.thumbprint == hashlib.sha1(der(record.certificate)).hexdigest().upper()
    assert registration.upn is None


def entra_reply(certificate: x509.Certificate, **change: Any) -> dict[str, Any]:
    """A join reply in Entra's shape (MS-DRS 2.1.1.1.2)."""
    reply: dict[str, Any] = {
        "Certificate": {
            "Thumbprint": hashlib.sha1(der(certificate)).hexdigest().upper(),
            "RawBody": base64.b64encode(der(certificate)).decode(),
        },
        "User": {"Upn": "user@contoso.com"},
        "MembershipChanges": [{"LocalSID": "S-1-5-32-544", "AddSIDs": []}],
    }
    reply.update(change)
    return reply


def test_parse_registration_response_of_entra_shape(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name], other_rsa: rsa.RSAPrivateKey
) -> None:
    device_id = str(uuid.uuid4())
    certificate = issue(ca, other_rsa.public_key(), device_id)
    reply = entra_reply(certificate)
    for body in (json.dumps(reply), json.dumps(reply).encode(), reply):
        registration = parse_registration_response(body, device_key=other_rsa)
        assert registration.device_id == device_id
        assert registration.certificate == certificate
        assert registration.certificate_der == der(certificate)
        assert registration.thumbprint == reply["Certificate"]["Thumbprint"]
        assert registration.upn == "user@contoso.com"
    lower = entra_reply(certificate)
    lower["Certificate"]["Thumbprint"] = lower["Certificate"]["Thumbprint"].lower()
    assert parse_registration_response(lower).thumbprint == reply["Certificate"]["Thumbprint"]
    with pytest.raises(InvalidData, match="not for this device key"):
        parse_registration_response(reply, device_key=rsa.generate_private_key(65537, 2048))


def _malformed_replies(certificate: x509.Certificate) -> list[tuple[Any, str]]:
    good = entra_reply(certificate)
    raw = good["Certificate"]["RawBody"]
    no_cn = {"Certificate": {"RawBody": base64.b64encode(b"\x30\x03\x02\x01\x00").decode()}}
    return [
        (b"not json", "not JSON"),
        (b"\xff", "not UTF-8"),
        ("[1]", "not a JSON object"),
        (42, "bytes, str or a mapping"),
        ({}, "Certificate is not a JSON object"),
        ({"Certificate": []}, "Certificate is not a JSON object"),
        ({"Certificate": {}}, "has no 'RawBody'"),
        ({"Certificate": {"RawBody": 5}}, "'RawBody' is a string, not a number"),
        ({"Certificate": {"RawBody": raw[:-2]}}, "'RawBody' is not valid base64"),
        ({"Certificate": {"RawBody": raw.replace("+", "-")}}, "'RawBody' is not valid base64"),
        (no_cn, "not a DER X.509 certificate"),
        (entra_reply(certificate, Certificate={**good["Certificate"], "Thumbprint": "AB"}), "AB"),
        (entra_reply(certificate, User=[]), "User is not a JSON object"),
        (entra_reply(certificate, User={"Upn": 1}), "'Upn' is a string"),
        (entra_reply(certificate, DeviceId=str(uuid.uuid4())), "is not the certificate's CN"),
    ]


def test_parse_registration_response_refuses_malformed_replies(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name], other_rsa: rsa.RSAPrivateKey
) -> None:
    certificate = issue(ca, other_rsa.public_key(), str(uuid.uuid4()))
    for body, message in _malformed_replies(certificate):
        with pytest.raises(InvalidData, match=message):
            parse_registration_response(body)
    ca_key, ca_name = ca
    now = datetime.datetime.now(datetime.UTC)
    nameless = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]))
        .issuer_name(ca_name)
        .public_key(other_rsa.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(InvalidData, match="no single CN"):
        parse_registration_response(entra_reply(nameless))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
REPLY_MEMBERS = st.fixed_dictionaries(
    {},
    optional={
        "Certificate": JSON | st.fixed_dictionaries({}, optional={"RawBody": JSON}),
        "User": JSON,
        "DeviceId": JSON,
    },
)


@given(reply=REPLY_MEMBERS)
def test_parse_registration_response_raises_only_invalid_data(reply: dict[str, Any]) -> None:
    with pytest.raises(InvalidData):
        parse_registration_response(json.dumps(reply))


def test_leave_request() -> None:
    device_id = str(uuid.uuid4())
    request = leave_request(device_id)
    assert (request.method, request.body) == ("DELETE", b"")
    assert request.url == (
        f"https://enterpriseregistration.windows.net/EnrollmentServer/device/{device_id}"
    )
    assert "Authorization" not in request.headers
    assert leave_request(device_id.upper()).url.endswith(device_id.upper())
    for bad in ("", "../../x", "7e980ad9b86d430694259ac066fb014a", f"{device_id}?a=b"):
        with pytest.raises(InvalidData, match="device_id"):
            leave_request(bad)


# -- nonce and PRT request ------------------------------------------------------------------


def test_nonce_request_and_reply() -> None:
    request = nonce_request()
    assert (request.method, request.url) == ("POST", TOKEN_URL)
    assert form(request) == {"grant_type": "srv_challenge"}
    tenant = str(uuid.uuid4())
    assert nonce_request(tenant).url == (f"https://login.microsoftonline.com/{tenant}/oauth2/token")
    assert nonce_request("contoso.onmicrosoft.com").url.endswith(
        "/contoso.onmicrosoft.com/oauth2/token"
    )
    for bad in ("", "a/b", "..", "a?b", "common#", " common"):
        with pytest.raises(InvalidData, match="tenant"):
            nonce_request(bad)
    assert parse_nonce(json.dumps({"Nonce": NONCE})) == NONCE
    assert parse_nonce(json.dumps({"Nonce": NONCE}).encode()) == NONCE
    for body, message in [
        (b"{}", "has no 'Nonce'"),
        (b'{"Nonce": 1}', "is a string"),
        (b'{"Nonce": ""}', "is empty"),
        (b"[]", "not a JSON object"),
        (b'{"error": "invalid_request", "error_description": "AADSTS9000"}', "AADSTS9000"),
    ]:
        with pytest.raises(InvalidData, match=message):
            parse_nonce(body)


GRANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "password": (
        {"username": "u@contoso.com", "password": "pässword"},
        {"grant_type": "password", "username": "u@contoso.com", "password": "pässword"},
    ),
    "refresh_token": (
        {"refresh_token": REFRESH_TOKEN},
        {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN},
    ),
    "ngc": (
        {"username": "u@contoso.com", "assertion": "e30.e30.c2ln"},
        {"grant_type": JWT_BEARER, "username": "u@contoso.com", "assertion": "e30.e30.c2ln"},
    ),
}
CLIENTS = {"password": PASSWORD_CLIENT, "refresh_token": REFRESH_CLIENT, "ngc": PASSWORD_CLIENT}


@pytest.mark.parametrize("grant", list(GRANTS))
def test_prt_request_field_by_field(
    rsa_signing_key: EntraPrivateKey, device_certificate: x509.Certificate, grant: str
) -> None:
    arguments, grant_claims = GRANTS[grant]
    request = prt_request(rsa_signing_key, device_certificate, nonce=NONCE, **arguments)
    assert (request.method, request.url) == ("POST", TOKEN_URL)
    assert request.headers["Accept"] == "application/json"
    fields = form(request)
    assert list(fields) == ["grant_type", "request", "windows_api_version", "client_info", "tgt"]
    assert fields["grant_type"] == JWT_BEARER
    assert (fields["windows_api_version"], fields["client_info"], fields["tgt"]) == (
        "2.0",
        "1",
        "true",
    )
    header, claims = rs256_claims(fields["request"], public(rsa_signing_key))
    x5c = base64.b64encode(der(device_certificate)).decode()
    assert header == {"alg": "RS256", "typ": "JWT", "x5c": [x5c], "kdf_ver": 2}
    assert claims == {
        "client_id": CLIENTS[grant],
        "scope": "openid aza ugs",
        "request_nonce": NONCE,
        **WIN_VER,
        **grant_claims,
    }


def test_prt_request_choices(
    rsa_signing_key: EntraPrivateKey, device_certificate: x509.Certificate
) -> None:
    request = prt_request(
        rsa_signing_key,
        device_certificate,
        nonce=NONCE,
        refresh_token=REFRESH_TOKEN,
        client_id="11111111-2222-3333-4444-555555555555",
        scope="openid aza",
        tenant="contoso.com",
        windows_api_version="2.2",
        x5c_as_array=False,
        win_ver="Debian GNU/Linux 13 13",
    )
    assert request.url == "https://login.microsoftonline.com/contoso.com/oauth2/token"
    fields = form(request)
    assert fields["windows_api_version"] == "2.2"
    header, claims = rs256_claims(fields["request"], public(rsa_signing_key))
    assert header["x5c"] == base64.b64encode(der(device_certificate)).decode()
    assert claims["client_id"] == "11111111-2222-3333-4444-555555555555"
    assert claims["scope"] == "openid aza"
    assert claims["win_ver"] == "Debian GNU/Linux 13 13"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "exactly one grant .* not 0"),
        ({"password": "p", "refresh_token": "r"}, "not 2: password, refresh_token"),
        ({"refresh_token": "r", "assertion": "a", "password": "p"}, "not 3"),
        ({"password": "p"}, "needs the username"),
        ({"username": "u", "refresh_token": "r"}, "carries no username"),
        ({"refresh_token": ""}, "refresh_token is empty"),
        ({"refresh_token": "r", "scope": "openid ugs"}, "'aza' and 'openid'"),
        ({"refresh_token": "r", "nonce": ""}, "nonce is empty"),
        ({"refresh_token": "r", "tenant": "a/b"}, "tenant"),
    ],
)
def test_prt_request_refuses(
    other_rsa: rsa.RSAPrivateKey,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name],
    arguments: dict[str, Any],
    message: str,
) -> None:
    certificate = issue(ca, other_rsa.public_key(), str(uuid.uuid4()))
    with pytest.raises(InvalidData, match=message):
        prt_request(other_rsa, certificate, **{"nonce": NONCE, **arguments})


def test_bad_caller_values_are_invalid_data_in_every_builder(
    store: KeyStore,
    transport_key: EntraPrivateKey,
    service: TokenService,
    other_rsa: rsa.RSAPrivateKey,
    second_rsa: rsa.RSAPrivateKey,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name],
) -> None:
    """A lone surrogate in a form field raised UnicodeEncodeError (urlencode), extra_fields as
    a list AttributeError, now as an int AttributeError, received_at in the last day of year
    9999 OverflowError: each is InvalidData now, as the same values elsewhere already were."""
    certificate = issue(ca, other_rsa.public_key(), str(uuid.uuid4()))
    with pytest.raises(InvalidData, match="form field cannot be encoded"):
        prt_request(other_rsa, certificate, nonce=NONCE, refresh_token="r",
                    windows_api_version="\ud800")  # fmt: skip
    join: dict[str, Any] = {"access_token": "t", "domain": "d", "display_name": "pc",
                            "os_version": "13"}  # fmt: skip
    for extra in ([("X", "y")], "X=y", 5):
        with pytest.raises(InvalidData, match="extra_fields is a mapping, not"):
            registration_request(other_rsa, second_rsa, extra_fields=extra, **join)
    with pytest.raises(InvalidData, match="a member name is a str"):  # one name twice
        registration_request(other_rsa, second_rsa, extra_fields={"X": {1: 0, "1": 1}}, **join)
    for now in (1700000000, "2026-01-01T00:00:00Z", datetime.date(2026, 1, 1)):
        with pytest.raises(InvalidData, match="now is an aware datetime"):
            ngc_assertion(other_rsa, upn="u@contoso.com", nonce=NONCE, now=now)  # type: ignore[arg-type]
    reply = json.dumps(prt_reply(service, transport_key)).encode()
    for moment in (
        datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC),
        datetime.datetime.max.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=5))),
    ):
        with pytest.raises(InvalidData, match=r"year 9999|out of range"):
            parse_prt_response(reply, transport_key, store, "p", received_at=moment)
    assert "p" not in [info.name for info in store.list()]


def test_prt_request_refuses_a_certificate_of_another_key(
    other_rsa: rsa.RSAPrivateKey, ca: tuple[ec.EllipticCurvePrivateKey, x509.Name]
) -> None:
    certificate = issue(ca, rsa.generate_private_key(65537, 2048).public_key(), "x")
    with pytest.raises(InvalidData, match="not the certificate of this device key"):
        prt_request(other_rsa, certificate, nonce=NONCE, refresh_token="r")
    with pytest.raises(InvalidData, match=r"x509\.Certificate"):
        prt_request(other_rsa, der(certificate), nonce=NONCE, refresh_token="r")  # type: ignore[arg-type]


@pytest.mark.parametrize("x5c_as_array", [True, False])
def test_the_stand_in_service_takes_the_prt_request(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey, x5c_as_array: bool
) -> None:
    service = RegistrationService(require_attestation=False)
    join = registration_request(
        rsa_signing_key,
        transport_key,
        access_token="t",
        domain="d",
        display_name="pc",
        os_version="13",
    )
    registration = parse_registration_response(service.register(json.loads(join.body)))
    request = prt_request(
        rsa_signing_key,
        registration.certificate,
        nonce=service.issue_prt_nonce(),
        username="u@contoso.com",
        password="p",
        x5c_as_array=x5c_as_array,
    )
    reply = service.issue_prt(form(request)["request"])
    assert reply["refresh_token"] and reply["session_key_jwe"].count(".") == 4


def _odd_certificate(key: rsa.RSAPrivateKey, *, version: int = 2, key_oid: bytes = b"") -> bytes:
    """A device certificate's DER with its version field or its key's algorithm changed."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(uuid.uuid4()))])
    der = der_of(
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    der = der.replace(bytes.fromhex("a003020102"), bytes.fromhex("a0030201") + bytes([version]))
    if key_oid:  # rsaEncryption becomes an algorithm nobody knows
        der = der.replace(bytes.fromhex("06092a864886f70d010101"), key_oid)
    return der


def der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def test_a_join_reply_with_an_unreadable_certificate_is_invalid_data(
    other_rsa: rsa.RSAPrivateKey,
) -> None:
    """A version field of 5, or a key of an unknown algorithm, made cryptography raise
    InvalidVersion or UnsupportedAlgorithm out of parse_registration_response."""
    for bad in (
        _odd_certificate(other_rsa, version=5),
        _odd_certificate(other_rsa, key_oid=bytes.fromhex("06092a864886f70d01017f")),
    ):
        reply = {"Certificate": {"RawBody": base64.b64encode(bad).decode()}}
        for device_key in (None, other_rsa):
            with pytest.raises(InvalidData, match=r"not a DER X\.509 certificate"):
                parse_registration_response(reply, device_key=device_key)
        pem = base64.encodebytes(bad).decode()
        state = {"certificate": f"-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n",
                 "thumbprint": "00", "device_id": "x"}  # fmt: skip
        with pytest.raises(InvalidData):
            Registration.from_join_state(state)


# -- the PRT reply --------------------------------------------------------------------------


def tgt(
    service: TokenService, client_key: bytes, mode: Literal["gcm", "cbc"], **members: Any
) -> dict[str, Any]:
    """A ``tgt_ad`` / ``tgt_cloud`` as Entra sends it (members as Himmelblau reads them)."""
    return {
        "clientKey": service.encrypt_response(client_key, mode=mode),
        "keyType": 18,
        "messageBuffer": base64.b64encode(b"\x6b\x03as-rep").decode(),
        "realm": "KERBEROS.MICROSOFTONLINE.COM",
        "sn": "krbtgt/KERBEROS.MICROSOFTONLINE.COM",
        "cn": "u@contoso.com",
        "sessionKeyType": 18,
        "accountType": 1,
        **members,
    }


def prt_reply(
    service: TokenService, transport_key: EntraPrivateKey, **change: Any
) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "token_type": "pop",
        "expires_in": "1209599",
        "refresh_token": REFRESH_TOKEN,
        "refresh_token_expires_in": 1209600,
        "session_key_jwe": service.session_key_jwe(public(transport_key)),
        "id_token": ID_TOKEN,
        "client_info": "eyJ1aWQiOiIxIn0",
    }
    reply.update(change)
    return {name: value for name, value in reply.items() if value is not DROP}


DROP = object()  # a member prt_reply leaves out
AD_KEY = bytes(range(32))
CLOUD_KEY = bytes(range(100, 132))


def test_parse_prt_response(
    provider: Provider, store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    reply = prt_reply(
        service,
        transport_key,
        tgt_ad=json.dumps(tgt(service, AD_KEY, "gcm")),  # roadlib: a JSON string
        tgt_cloud=tgt(service, CLOUD_KEY, "cbc"),  # Himmelblau: either
        kerberos_top_level_names=".windows.net,.windows.net:1433",
    )
    before = datetime.datetime.now(datetime.UTC)
    prt = parse_prt_response(json.dumps(reply).encode(), transport_key, store, "prt")
    after = datetime.datetime.now(datetime.UTC)
    assert isinstance(prt, PRT)
    assert prt.refresh_token == REFRESH_TOKEN and prt.id_token == ID_TOKEN
    assert prt.token_type == "pop"
    delta = datetime.timedelta(seconds=1209600)
    assert before + delta <= prt.refresh_token_expires_at <= after + delta
    assert prt.refresh_token_expires_at.tzinfo == datetime.UTC
    assert prt.kerberos_top_level_names == ".windows.net,.windows.net:1433"
    assert prt.reply["client_info"] == "eyJ1aWQiOiIxIn0"
    assert prt.tgt_ad is not None and prt.tgt_cloud is not None
    assert (prt.tgt_ad.key_type, prt.tgt_ad.client_key) == (18, AD_KEY)
    assert prt.tgt_cloud.client_key == CLOUD_KEY
    assert prt.tgt_ad.message_buffer == b"\x6b\x03as-rep"
    assert prt.tgt_ad.realm == "KERBEROS.MICROSOFTONLINE.COM"
    assert prt.tgt_ad.client_name == "u@contoso.com"
    assert prt.tgt_ad.server_name == "krbtgt/KERBEROS.MICROSOFTONLINE.COM"
    assert (prt.tgt_ad.session_key_type, prt.tgt_ad.account_type, prt.tgt_ad.error) == (18, 1, None)
    # The session key is in the provider and the store, and derives what pyca derives.
    assert prt.session.hardware_backed is provider.hardware_backed
    assert store.info("prt").usage is KeyUsage.DERIVE
    ctx, payload = b"c" * 24, b'{"a":1}'
    assert prt.session.derive_key(ctx, payload=payload) == kbkdf(
        service.session_key, hashlib.sha256(ctx + payload).digest()
    )
    assert PRTSession.open(store, "prt").derive_key(ctx, kdf_version=1) == kbkdf(
        service.session_key, ctx
    )
    # Nothing secret in the repr.
    shown = repr(prt)
    for secret in (REFRESH_TOKEN, ID_TOKEN, AD_KEY.hex(), repr(AD_KEY), repr(CLOUD_KEY), "as-rep"):
        assert secret not in shown
    assert "KERBEROS.MICROSOFTONLINE.COM" in shown


def test_parse_prt_response_without_kerberos_keys(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    raw_key = base64.b64encode(AD_KEY).decode()  # Himmelblau also takes a clientKey in base64
    reply = prt_reply(
        service,
        transport_key,
        refresh_token_expires_in="86400",
        tgt_ad={"keyType": 0, "error": "no on-premises KDC"},
        tgt_cloud={"keyType": 18, "clientKey": raw_key},
    )
    received = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    prt = parse_prt_response(
        reply, store=store, transport_key=transport_key, name="p", received_at=received
    )
    assert prt.refresh_token_expires_at == received + datetime.timedelta(days=1)
    assert prt.tgt_ad is not None and prt.tgt_ad.client_key is None
    assert prt.tgt_ad.error == "no on-premises KDC"
    assert prt.tgt_cloud is not None and prt.tgt_cloud.client_key == AD_KEY
    assert prt.kerberos_top_level_names is None and prt.token_type == "pop"
    with pytest.raises(EntraKeysError, match="exists"):
        parse_prt_response(reply, transport_key, store, "p")
    again = parse_prt_response(
        prt_reply(service, transport_key), transport_key, store, "p", replace=True
    )
    assert again.tgt_ad is None and again.tgt_cloud is None


def _bad_prt_replies(
    service: TokenService, transport_key: EntraPrivateKey
) -> list[tuple[dict[str, Any], str]]:
    short = tgt(service, b"\x00" * 16, "gcm")
    return [
        (prt_reply(service, transport_key, refresh_token=DROP), "no 'refresh_token'"),
        (
            prt_reply(service, transport_key, refresh_token=None),
            "'refresh_token' is a string, not null",
        ),
        (
            prt_reply(service, transport_key, refresh_token_expires_in=DROP),
            "no 'refresh_token_expires_in'",
        ),
        (
            prt_reply(service, transport_key, refresh_token_expires_in=True),
            "is an integer, not a boolean",
        ),
        (prt_reply(service, transport_key, refresh_token_expires_in=-1), "negative"),
        (prt_reply(service, transport_key, id_token=DROP), "no 'id_token'"),
        (prt_reply(service, transport_key, id_token=7), "'id_token' is a string, not a number"),
        (prt_reply(service, transport_key, session_key_jwe=DROP), "no 'session_key_jwe'"),
        (prt_reply(service, transport_key, session_key_jwe="a.b"), "5 dot-separated"),
        (prt_reply(service, transport_key, tgt_ad="{not json"), "tgt_ad is not JSON"),
        (prt_reply(service, transport_key, tgt_ad=[]), "tgt_ad is not a JSON object"),
        (prt_reply(service, transport_key, tgt_ad={"clientKey": "x"}), "no 'keyType'"),
        (prt_reply(service, transport_key, tgt_ad={"keyType": 18}), "no clientKey"),
        (prt_reply(service, transport_key, tgt_cloud=short), "is 32 bytes, not 16"),
        (
            prt_reply(service, transport_key, tgt_ad={"keyType": 18, "clientKey": "a.b.c"}),
            "5 segments",
        ),
        (
            prt_reply(service, transport_key, tgt_ad={**short, "messageBuffer": "%%"}),
            "messageBuffer",
        ),
        ({"error": "invalid_grant", "error_description": "AADSTS50126"}, "AADSTS50126"),
    ]


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ('"' + "9" * 20 + '"', "99999999999999999999"),
        (str(10**30), "a number of more than 24 digits"),
        ('"' + "9" * 5000 + '"', "a number of 5000 digits"),
        ("1e30", "a number with a fraction or exponent"),
    ],
)
def test_parse_prt_response_refuses_lifetimes_out_of_range(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService, number: str, shown: str
) -> None:
    """refresh_token_expires_in of 10**30, "9"*20 or a 5,000-digit string raised OverflowError
    or ValueError; each is now InvalidData naming the member, and nothing is stored."""
    body = json.dumps(prt_reply(service, transport_key, refresh_token_expires_in=0))
    body = body.replace('"refresh_token_expires_in": 0', f'"refresh_token_expires_in": {number}')
    with pytest.raises(InvalidData, match=f"'refresh_token_expires_in' is .*{shown}"):
        parse_prt_response(body, transport_key, store, "prt")
    digits = "9" * 5000  # a JSON number past Python's own 4,300-digit limit
    body = json.dumps(prt_reply(service, transport_key, tgt_ad={"keyType": 0}))
    with pytest.raises(InvalidData, match="'tgt_ad'\\['keyType'\\] is a number of 5000 digits"):
        parse_prt_response(body.replace('"keyType": 0', f'"keyType": {digits}'),
                           transport_key, store, "prt")  # fmt: skip
    assert "prt" not in store


def test_parse_prt_response_refuses_malformed_replies_and_stores_nothing(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    for reply, message in _bad_prt_replies(service, transport_key):
        with pytest.raises(InvalidData, match=message):
            parse_prt_response(reply, transport_key, store, "prt")
        assert "prt" not in store


def test_parse_prt_response_refuses_keys_for_another_session(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    stranger = TokenService()
    modes: tuple[Literal["gcm", "cbc"], ...] = ("gcm", "cbc")
    for mode in modes:
        reply = prt_reply(service, transport_key, tgt_ad=tgt(stranger, AD_KEY, mode))
        with pytest.raises(DecryptionError, match="does not decrypt"):
            parse_prt_response(reply, transport_key, store, "prt")
        assert "prt" not in store
    other_transport = rsa.generate_private_key(65537, 2048)
    reply = prt_reply(
        service,
        transport_key,
        session_key_jwe=service.session_key_jwe(other_transport.public_key()),
    )
    with pytest.raises(DecryptionError):
        parse_prt_response(reply, transport_key, store, "prt")
    assert "prt" not in store


def test_a_cbc_client_key_of_another_size_is_no_detail_for_an_oracle(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    """A CBC clientKey that unpads to 47 bytes (what another session key gives 1 time in 256)
    fails as a wrong key does, with no length in the message; under GCM the length is
    authenticated and the error says it."""
    reply = prt_reply(service, transport_key, tgt_ad=tgt(service, b"\x07" * 47, "cbc"))
    with pytest.raises(DecryptionError, match="does not decrypt") as caught:
        parse_prt_response(reply, transport_key, store, "prt")
    assert "47" not in str(caught.value) and "prt" not in store
    reply = prt_reply(service, transport_key, tgt_ad=tgt(service, b"\x07" * 47, "gcm"))
    with pytest.raises(InvalidData, match="is 32 bytes, not 47"):
        parse_prt_response(reply, transport_key, store, "prt")
    assert "prt" not in store


def _cbc_probe(service: TokenService, captured: str, plain: bytes) -> str:
    """The attacker's probe: a captured CBC block sent alone under the IV that makes it decrypt
    to ``plain``. The test computes that IV with the service's key; the attacker finds it by
    searching, one answer at a time (256 tries for a last byte of 0x01)."""
    head, _, _, ciphertext_text, _ = captured.split(".")
    header = json.loads(b64url_decode(head))
    key = service.derived_key(base64.b64decode(header["ctx"]), kdf_version=1)
    block = b64url_decode(ciphertext_text)[16:32]
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # one block: the IV is chosen
    intermediate = decryptor.update(block) + decryptor.finalize()
    iv = bytes(a ^ b for a, b in zip(intermediate, plain, strict=True))
    return ".".join([head, "", b64url_encode(iv), b64url_encode(block), ""])


@pytest.mark.parametrize("key_type", [17, 23, 1, 99])
def test_a_client_key_is_no_padding_oracle_in_a_replayed_prt_reply(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService, key_type: int
) -> None:
    """The attack: whoever can alter the plain PRT reply replays the session's session_key_jwe
    (the device imports the same session key) and puts a block of a captured CBC reply, under
    a chosen IV, in tgt_ad.clientKey. A keyType other than 18 had no pinned length, so the
    clientKey opened exactly when its padding was valid: a padding oracle, no lockout. Now a
    CBC clientKey opens only at its keyType's key length (17 and 23: 16 bytes, 1: 8), so the
    probe that makes a valid one-byte pad fails as a wrong one does; a keyType of unknown
    length (99) opens only under GCM."""
    captured = service.encrypt_response(b'{"access_token":"eyJ0.SECRET-0123456789"}', mode="cbc")
    right = _cbc_probe(service, captured, b"\x00" * 15 + b"\x01")
    wrong = _cbc_probe(service, captured, b"\x00" * 15 + b"\x02")

    def parse(client_key: str, **options: Any) -> PRT:
        tgt_ad = {"keyType": key_type, "clientKey": client_key}
        reply = prt_reply(service, transport_key, tgt_ad=tgt_ad)
        return parse_prt_response(reply, transport_key, store, "prt", replace=True, **options)

    seen = set()
    for probe in (right, wrong):
        with pytest.raises(DecryptionError) as caught:
            parse(probe)
        assert caught.value.__context__ is None
        seen.add(str(caught.value))
    assert len(seen) == 1 and "does not decrypt" in seen.pop()
    assert "prt" not in store
    # The genuine client key of the keyType's length opens in either form (or GCM only).
    size = {17: 16, 23: 16, 1: 8, 99: 20}[key_type]
    genuine = bytes(range(size))
    prt = parse(service.encrypt_response(genuine, mode="gcm"))
    assert prt.tgt_ad is not None and prt.tgt_ad.client_key == genuine
    cbc = service.encrypt_response(genuine, mode="cbc")
    if key_type == 99:
        with pytest.raises(DecryptionError, match="does not decrypt"):
            parse(cbc)
    else:
        prt = parse(cbc)
        assert prt.tgt_ad is not None and prt.tgt_ad.client_key == genuine
        with pytest.raises(DecryptionError, match="does not decrypt"):
            parse(cbc, require_gcm=True)


def test_parse_prt_response_takes_require_gcm_as_a_bool_only(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    """``require_gcm="no"`` is a TypeError before any key is imported, not a truthy switch."""
    reply = prt_reply(service, transport_key, tgt_ad=tgt(service, AD_KEY, "cbc"))
    for value in ("no", "", None, 1):
        with pytest.raises(TypeError, match="True or False"):
            parse_prt_response(reply, transport_key, store, "prt", require_gcm=value)  # type: ignore[arg-type]
    assert "prt" not in store


def test_a_cbc_renewal_that_is_not_the_whole_expected_reply_is_the_one_counted_failure(
    prt_session: PRTSession, service: TokenService, transport_key: EntraPrivateKey
) -> None:
    """The checks of a renewal's plaintext that ran after it was opened (its client keys, a new
    session_key_jwe, the transport key for it) were other errors, uncounted, some carrying the
    plaintext (a clientKey's length, a session_key_jwe's alg). Under CBC each is now the one
    DecryptionError, unchained, counted toward the session's CBC limit, and the stored key is
    unchanged; under GCM (authenticated) each says what it is."""
    prt_session.cbc_failure_limit = 100  # every variant is to be answered
    base = {"refresh_token": "r", "id_token": "i", "refresh_token_expires_in": 100}
    header = b64url_encode(b'{"alg":"SECRETPLAINTEXT","enc":"A256GCM"}')
    stranger = rsa.generate_private_key(65537, 2048).public_key()
    raw16 = base64.b64encode(b"k" * 16).decode()
    variants: list[tuple[dict[str, Any], dict[str, Any], type[Exception], str | None]] = [
        ({"tgt_ad": {"keyType": 18, "clientKey": raw16}}, {}, InvalidData, "32 bytes, not 16"),
        ({"tgt_ad": {"keyType": 18, "clientKey": "ab$"}}, {}, InvalidData, "base64"),
        ({"tgt_ad": {"keyType": 18, "clientKey": "a.b.c"}}, {}, InvalidData, "5 segments"),
        ({"tgt_ad": tgt(service, b"k" * 16, "gcm")}, {}, InvalidData, "32 bytes, not 16"),
        ({"tgt_ad": tgt(TokenService(), AD_KEY, "cbc")}, {}, DecryptionError, "does not"),
        (
            {"session_key_jwe": header + ".a.a.a.a"},
            {"transport_key": transport_key},
            InvalidData,
            "SECRETPLAINTEXT",
        ),
        ({"session_key_jwe": "x.y.z.w.v"}, {}, InvalidData, "pass the transport key"),
        (
            {"session_key_jwe": TokenService().session_key_jwe(stranger)},
            {"transport_key": transport_key},
            DecryptionError,
            None,
        ),
    ]
    one = failure_of(
        lambda: parse_refresh_response(TokenService().encrypt_response(b"{}"), prt_session)
    )
    ctx = b"k" * 24
    for members, options, kind, detail in variants:
        plain = json.dumps({**base, **members}).encode()
        before = prt_session._cbc_failures
        cbc = service.encrypt_response(plain, mode="cbc")
        assert (
            failure_of(functools.partial(parse_refresh_response, cbc, prt_session, **options))
            == one
        )
        assert prt_session._cbc_failures == before + 1, members
        gcm = service.encrypt_response(plain, mode="gcm")
        with pytest.raises(kind, match=detail):
            parse_refresh_response(gcm, prt_session, **options)
        assert prt_session._cbc_failures == before + 1
        assert prt_session.derive_key(ctx, kdf_version=1) == kbkdf(service.session_key, ctx)
    # The control: the whole expected reply opens under CBC, a new session key included.
    renewed = TokenService()
    plain = json.dumps({**base, "session_key_jwe": renewed.session_key_jwe(public(transport_key))})
    cbc = service.encrypt_response(plain.encode(), mode="cbc")
    assert parse_refresh_response(cbc, prt_session, transport_key=transport_key).refresh_token
    assert prt_session.derive_key(ctx, kdf_version=1) == kbkdf(renewed.session_key, ctx)


def failure_of(call: Any) -> tuple[type[BaseException], str]:
    """The type and message of the EntraKeysError ``call`` raises, which must be unchained (a
    chained exception would carry what the plaintext held)."""
    with pytest.raises(EntraKeysError) as caught:
        call()
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    return type(caught.value), str(caught.value)


# -- session-key-signed requests ------------------------------------------------------------


def test_refresh_prt_request_field_by_field(prt_session: PRTSession, service: TokenService) -> None:
    request = refresh_prt_request(prt_session, REFRESH_TOKEN, nonce=NONCE, win_ver="13")
    assert (request.method, request.url) == ("POST", TOKEN_URL)
    fields = form(request)
    assert fields == {
        "grant_type": JWT_BEARER,
        "request": fields["request"],
        "windows_api_version": "2.2",
        "client_info": "1",
        "tgt": "true",
    }
    _, claims = hs256_claims(fields["request"], service.session_key)
    assert claims == {
        "client_id": PASSWORD_CLIENT,
        "scope": "openid aza ugs",
        "request_nonce": NONCE,
        "refresh_token": REFRESH_TOKEN,
        "iss": "aad:brokerplugin",
        "grant_type": "refresh_token",
        "aud": "login.microsoftonline.com",
        "win_ver": "13",
    }
    assert service.verify_request(fields["request"]) == claims
    assert "tgt" not in form(refresh_prt_request(prt_session, "r", nonce=NONCE, tgt=False))
    with pytest.raises(InvalidData, match="'aza'"):
        refresh_prt_request(prt_session, REFRESH_TOKEN, nonce=NONCE, scope="openid")
    with pytest.raises(InvalidData, match="PRTSession"):
        refresh_prt_request(object(), REFRESH_TOKEN, nonce=NONCE)  # type: ignore[arg-type]


def test_app_token_request_field_by_field(prt_session: PRTSession, service: TokenService) -> None:
    client = "1b730954-1685-4b74-9bfd-dac224a7b894"
    request = app_token_request(
        prt_session,
        REFRESH_TOKEN,
        nonce=NONCE,
        client_id=client,
        resource="https://graph.windows.net",
        redirect_uri=f"ms-appx-web://Microsoft.AAD.BrokerPlugin/{client}",
        tenant="contoso.com",
    )
    assert request.url == "https://login.microsoftonline.com/contoso.com/oauth2/token"
    fields = form(request)
    assert (fields["grant_type"], fields["windows_api_version"]) == (JWT_BEARER, "2.2")
    assert (fields["client_info"], fields["tgt"]) == ("1", "true")
    _, claims = hs256_claims(fields["request"], service.session_key)
    assert claims == {
        "client_id": client,
        "scope": "openid",
        "request_nonce": NONCE,
        "refresh_token": REFRESH_TOKEN,
        "iss": "aad:brokerplugin",
        "grant_type": "refresh_token",
        "aud": "login.microsoftonline.com",
        "resource": "https://graph.windows.net",
        "redirect_uri": f"ms-appx-web://Microsoft.AAD.BrokerPlugin/{client}",
        **WIN_VER,
    }
    only = app_token_request(prt_session, "r", nonce=NONCE, client_id=client, resource="res")
    _, claims = hs256_claims(form(only)["request"], service.session_key)
    assert claims["resource"] == "res" and "redirect_uri" not in claims
    assert claims.get("win_ver") == DEFAULT_WIN_VER
    with pytest.raises(InvalidData, match="a resource or a redirect_uri"):
        app_token_request(prt_session, "r", nonce=NONCE, client_id=client)


def test_the_peers_defaults_are_sent_and_each_can_be_changed_or_dropped(
    rsa_signing_key: EntraPrivateKey,
    transport_key: EntraPrivateKey,
    device_certificate: x509.Certificate,
    prt_session: PRTSession,
    service: TokenService,
) -> None:
    """Attributes and win_ver, which roadlib and Himmelblau send, go by default; a value of the
    caller's replaces each, None leaves it out."""
    join = {"access_token": "t", "domain": "contoso.com", "display_name": "pc", "os_version": "13"}

    def body(**given: Any) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            registration_request(rsa_signing_key, transport_key, **join, **given).body
        )
        return loaded

    assert body()["Attributes"] == {"ReuseDevice": "true", "ReturnClientSid": "true"}
    assert body(attributes={"SharedDevice": True})["Attributes"] == {"SharedDevice": True}
    assert "Attributes" not in body(attributes=None)

    def prt_claims(**given: Any) -> dict[str, Any]:
        request = prt_request(rsa_signing_key, device_certificate, nonce=NONCE,
                              refresh_token=REFRESH_TOKEN, **given)  # fmt: skip
        return rs256_claims(form(request)["request"], public(rsa_signing_key))[1]

    def session_claims(build: Any, **given: Any) -> dict[str, Any]:
        return hs256_claims(form(build(**given))["request"], service.session_key)[1]

    def renewal(**given: Any) -> Request:
        return refresh_prt_request(prt_session, REFRESH_TOKEN, nonce=NONCE, **given)

    def app(**given: Any) -> Request:
        return app_token_request(prt_session, REFRESH_TOKEN, nonce=NONCE, client_id="c",
                                 resource="r", **given)  # fmt: skip

    for claims in (prt_claims, lambda **g: session_claims(renewal, **g),
                   lambda **g: session_claims(app, **g)):  # fmt: skip
        assert claims().get("win_ver") == DEFAULT_WIN_VER
        assert claims(win_ver="10.0.19041.868")["win_ver"] == "10.0.19041.868"  # roadlib's
        assert "win_ver" not in claims(win_ver=None)
        with pytest.raises(InvalidData, match="win_ver is empty"):
            claims(win_ver="")


def test_prt_cookie(prt_session: PRTSession, service: TokenService) -> None:
    cookie = prt_cookie(prt_session, REFRESH_TOKEN, nonce=NONCE)
    _, claims = hs256_claims(cookie, service.session_key)
    assert claims == {"refresh_token": REFRESH_TOKEN, "is_primary": "true", "request_nonce": NONCE}
    # A fresh ctx each time: two cookies over the same claims differ.
    assert prt_cookie(prt_session, REFRESH_TOKEN, nonce=NONCE) != cookie


def test_refresh_and_token_replies(
    prt_session: PRTSession, service: TokenService, transport_key: EntraPrivateKey
) -> None:
    renewal = {
        "token_type": "pop",
        "refresh_token": "0.new-prt",
        "refresh_token_expires_in": 1209600,
        "id_token": ID_TOKEN,
        "tgt_cloud": json.dumps(tgt(service, CLOUD_KEY, "gcm")),
    }
    body = service.encrypt_response(json.dumps(renewal).encode(), mode="cbc")
    prt = parse_refresh_response(body, prt_session)
    assert prt.refresh_token == "0.new-prt" and prt.session is prt_session
    assert prt.tgt_cloud is not None and prt.tgt_cloud.client_key == CLOUD_KEY
    # A renewal that brings a new session key replaces the stored one.
    renewed_service = TokenService()
    with_key = {
        **renewal,
        "session_key_jwe": renewed_service.session_key_jwe(public(transport_key)),
    }
    with_key.pop("tgt_cloud")
    body = service.encrypt_response(json.dumps(with_key).encode())
    with pytest.raises(InvalidData, match="pass the transport key"):
        parse_refresh_response(body, prt_session)
    parse_refresh_response(body, prt_session, transport_key=transport_key)
    ctx = b"k" * 24
    expected = kbkdf(renewed_service.session_key, ctx)
    assert prt_session.derive_key(ctx, kdf_version=1) == expected
    assert PRTSession.open(prt_session.store, "prt").derive_key(ctx, kdf_version=1) == expected
    tokens = {"access_token": "eyJ0.at", "token_type": "Bearer", "expires_in": "3599"}
    body = renewed_service.encrypt_response(json.dumps(tokens).encode())
    assert parse_token_response(body, prt_session) == tokens
    error = json.dumps({"error": "invalid_grant", "error_description": "AADSTS5000611"})
    with pytest.raises(InvalidData, match="AADSTS5000611"):
        parse_token_response(error, prt_session)


def test_a_plain_reply_where_the_session_encrypts_is_refused(
    prt_session: PRTSession, service: TokenService, transport_key: EntraPrivateKey
) -> None:
    """The attack: whoever can alter a reply answers a renewal in plain JSON with their own PRT
    and a session key of their own encrypted to the device's transport key (its public half
    went to DRS), and an app token request with their tokens. Both are refused; the stored
    session key stays the service's."""
    attacker = TokenService()
    renewal = {
        "token_type": "pop",
        "refresh_token": "0.attackers-prt",
        "refresh_token_expires_in": 1209600,
        "id_token": ID_TOKEN,
        "session_key_jwe": attacker.session_key_jwe(public(transport_key)),
    }
    tokens = {"access_token": "eyJ0.attackers", "token_type": "Bearer", "expires_in": "3599"}
    for body in (json.dumps(renewal), json.dumps(renewal).encode()):
        with pytest.raises(InvalidData, match="not an encrypted reply"):
            parse_refresh_response(body, prt_session, transport_key=transport_key)
    for body in (json.dumps(tokens), json.dumps(tokens).encode()):
        with pytest.raises(InvalidData, match="not an encrypted reply"):
            parse_token_response(body, prt_session)
    ctx = b"k" * 24
    assert PRTSession.open(prt_session.store, "prt").derive_key(ctx, kdf_version=1) == kbkdf(
        service.session_key, ctx
    )
    # The service's error object, plain or encrypted, is a ServiceError carrying it.
    error = {"error": "invalid_grant", "error_description": "AADSTS5000611\r\nTrace ID: x"}
    for body in (json.dumps(error), service.encrypt_response(json.dumps(error).encode())):
        for parse in (parse_token_response, parse_refresh_response):
            with pytest.raises(ServiceError) as caught:
                parse(body, prt_session)
            assert (caught.value.error, caught.value.error_description) == (
                "invalid_grant", "AADSTS5000611 Trace ID: x"
            )  # fmt: skip


def test_require_gcm_reaches_the_reply_parsers(
    prt_session: PRTSession, service: TokenService
) -> None:
    """A caller that knows its replies are GCM refuses the CBC form through the parsers too;
    with CBC allowed, a one-block CBC reply forged from a GCM reply's keystream (see
    test_trust_session) is too short to carry the members a token reply must have: under CBC
    that is the one DecryptionError (a reply that is not the reply expected tells nothing)."""
    tokens = {"access_token": "eyJ0.at", "token_type": "Bearer", "expires_in": 3599}
    gcm = service.encrypt_response(json.dumps(tokens).encode(), mode="gcm")
    cbc = service.encrypt_response(json.dumps(tokens).encode(), mode="cbc")
    assert parse_token_response(gcm, prt_session, require_gcm=True) == tokens
    assert parse_token_response(cbc, prt_session) == tokens
    with pytest.raises(DecryptionError):
        parse_token_response(cbc, prt_session, require_gcm=True)
    renewal = {"refresh_token": "0.r", "refresh_token_expires_in": 1, "id_token": ID_TOKEN}
    cbc = service.encrypt_response(json.dumps(renewal).encode(), mode="cbc")
    assert parse_refresh_response(cbc, prt_session).refresh_token == "0.r"
    with pytest.raises(DecryptionError):
        parse_refresh_response(cbc, prt_session, require_gcm=True)
    short = service.encrypt_response(b'{"admin":true}', mode="cbc")
    with pytest.raises(DecryptionError, match="does not decrypt"):
        parse_token_response(short, prt_session)
    with pytest.raises(DecryptionError, match="does not decrypt"):
        parse_refresh_response(short, prt_session)
    # Under GCM the reply is authenticated: the missing member is named.
    short = service.encrypt_response(b'{"admin":true}', mode="gcm")
    with pytest.raises(InvalidData, match="no 'access_token'"):
        parse_token_response(short, prt_session)
    with pytest.raises(InvalidData, match="no 'refresh_token_expires_in'"):
        parse_refresh_response(short, prt_session)


NUMBERS_OUT_OF_RANGE = [
    ("expires_in", '"' + "9" * 20 + '"', "too large"),
    ("expires_in", str(10**30), "more than 24 digits"),
    ("expires_in", '"' + "9" * 5000 + '"', "a number of 5000 digits"),
    ("expires_in", "-1", "negative"),
    ("expires_in", '"-1"', "a string"),
    ("expires_in", "1e3", "a number with a fraction or exponent"),
    ("expires_in", "3599.0", "a number with a fraction or exponent"),
    ("expires_in", "true", "a boolean"),
    ("expires_in", '" 3599"', "a string"),
    ("expires_in", '"3\u0663"', "a string"),  # an Arabic-Indic digit: isdigit, not ASCII
    ("ext_expires_in", str(2**31), "too large"),
    ("refresh_token_expires_in", str(2**40), "too large"),
    ("expires_on", str(253_402_300_800), "too large"),
    ("not_before", '"' + "1" * 30 + '"', "too large"),
]


@pytest.mark.parametrize(("name", "number", "problem"), NUMBERS_OUT_OF_RANGE)
def test_token_reply_numbers_have_a_range(
    prt_session: PRTSession, service: TokenService, name: str, number: str, problem: str
) -> None:
    """Every count and moment of a token reply is a number or digit string in range, else
    InvalidData naming it: 10**30, "9"*20 or 5,000 digits raised OverflowError or ValueError
    in a caller's int() or datetime before."""
    body = '{"access_token":"a","token_type":"Bearer","' + name + '":' + number + "}"
    with pytest.raises(InvalidData, match=f"'{name}' is .*{problem}"):
        parse_token_response(service.encrypt_response(body.encode()), prt_session)
    ok = '{"access_token":"a","token_type":"Bearer","expires_in":"3599","expires_on":253402300799}'
    assert parse_token_response(service.encrypt_response(ok.encode()), prt_session)["expires_on"]


# -- device credential and Windows Hello ----------------------------------------------------


def test_device_credential(
    rsa_signing_key: EntraPrivateKey, device_certificate: x509.Certificate
) -> None:
    header, claims = rs256_claims(
        device_credential(rsa_signing_key, device_certificate, nonce=NONCE),
        public(rsa_signing_key),
    )
    x5c = base64.b64encode(der(device_certificate)).decode()
    assert header == {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
    assert claims == {
        "grant_type": "device_auth",
        "iss": "aad:brokerplugin",
        "request_nonce": NONCE,
    }
    token = device_credential(rsa_signing_key, device_certificate, nonce=NONCE, x5c_as_array=False)
    assert rs256_claims(token, public(rsa_signing_key))[0]["x5c"] == x5c


def test_windows_hello_key(
    provider: Provider,
    store: KeyStore,
    rsa_signing_key: EntraPrivateKey,
    device_certificate: x509.Certificate,
) -> None:
    """The NGC key is a PIN-protected RSA-2048 key of the store: its kid, its registration,
    its assertion, and the PRT request that carries the assertion."""
    ngc = store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=b"2468")
    assert ngc.hardware_backed is provider.hardware_backed
    kid = base64.b64encode(hashlib.sha256(bcrypt_blob(public(ngc))).digest()).decode()
    assert ngc_key_id(ngc) == kid == ngc_key_id(public(ngc))

    request = ngc_registration_request(ngc, access_token="eyJ0.ngcmfa")
    assert (request.method, request.url) == (
        "POST",
        "https://enterpriseregistration.windows.net/EnrollmentServer/key/?api-version=1.0",
    )
    assert request.headers["Authorization"] == "Bearer eyJ0.ngcmfa"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"kngc": base64.b64encode(bcrypt_blob(public(ngc))).decode()}

    now = datetime.datetime(2026, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    assertion = ngc_assertion(ngc, upn="u@contoso.com", nonce=NONCE, now=now)
    header, claims = rs256_claims(assertion, public(ngc))
    assert header == {"alg": "RS256", "typ": "JWT", "use": "ngc", "kid": kid}
    epoch = int(now.timestamp())
    assert claims == {
        "iss": "u@contoso.com",
        "aud": "common",
        "iat": epoch - 300,
        "exp": epoch + 300,
        "request_nonce": NONCE,
        "scope": "openid aza ugs",
    }
    later = ngc_assertion(
        ngc,
        upn="u@contoso.com",
        nonce=NONCE,
        audience="tenant-id",
        lifetime=datetime.timedelta(hours=1),
    )
    _, claims = rs256_claims(later, public(ngc))
    assert claims["aud"] == "tenant-id" and claims["exp"] - claims["iat"] == 7200

    # The reloaded key (PIN given) signs the same way; the PRT request carries the assertion.
    reloaded = store.load("ngc", pin=b"2468")
    assertion = ngc_assertion(reloaded, upn="u@contoso.com", nonce=NONCE)
    rs256_claims(assertion, public(ngc))
    prt = prt_request(
        rsa_signing_key,
        device_certificate,
        nonce=NONCE,
        username="u@contoso.com",
        assertion=assertion,
    )
    _, claims = rs256_claims(form(prt)["request"], public(rsa_signing_key))
    assert (claims["grant_type"], claims["assertion"]) == (JWT_BEARER, assertion)
    with pytest.raises(InvalidData, match="RSA-2048"):
        ngc_key_id(ec.generate_private_key(ec.SECP256R1()))


def test_request_repr_shows_no_secret(
    other_rsa: rsa.RSAPrivateKey,
    second_rsa: rsa.RSAPrivateKey,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Name],
) -> None:
    certificate = issue(ca, other_rsa.public_key(), str(uuid.uuid4()))
    request = prt_request(
        other_rsa, certificate, nonce=NONCE, username="u@contoso.com", password="hunter2"
    )
    assert b"hunter2" in b64url(form(request)["request"].split(".")[1])  # the control
    body_size = len(request.body)
    assert repr(request) == (
        f"<Request POST {TOKEN_URL} headers=[Content-Type, Accept] body={body_size} bytes>"
    )
    join = registration_request(
        other_rsa,
        second_rsa,
        access_token="secret-token",
        domain="d",
        display_name="pc",
        os_version="13",
    )
    assert "secret-token" in join.headers["Authorization"]  # the control
    assert "secret-token" not in repr(join) and "Authorization" in repr(join)
