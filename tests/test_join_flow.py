"""A join agent's whole flow: the protocol's requests, as built, sent to the stand-in Entra
(``entra_keys.testing.entra``), over both providers; and the stand-in's refusals."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import urllib.parse
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from entra_keys import KeyStore, KeyType, KeyUsage
from entra_keys.errors import DecryptionError, EntraKeysError, InvalidData, InvalidSignature
from entra_keys.protocol import (
    PRT,
    Registration,
    Request,
    app_token_request,
    device_credential,
    drs_nonce_request,
    leave_request,
    ngc_assertion,
    ngc_registration_request,
    nonce_request,
    parse_drs_nonce,
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
from entra_keys.testing.entra import EntraStandIn

UPN = "u@contoso.com"
PASSWORD = "correct horse"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclasses.dataclass
class Joined:
    entra: EntraStandIn
    device: EntraPrivateKey
    transport: EntraPrivateKey
    registration: Registration


@pytest.fixture
def joined(store: KeyStore) -> Joined:
    entra = EntraStandIn(users={UPN: PASSWORD})
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    join = registration_request(
        device, transport, access_token=entra.issue_access_token(UPN), domain="contoso.com",
        display_name="pc", os_version="Debian 13",
    )  # fmt: skip
    registration = parse_registration_response(entra.handle(join), device_key=device)
    return Joined(entra, device, transport, registration)


def nonce(entra: EntraStandIn) -> str:
    return parse_nonce(entra.handle(nonce_request()))


def password_prt(j: Joined, store: KeyStore) -> PRT:
    request = prt_request(j.device, j.registration.certificate, nonce=nonce(j.entra),
                          username=UPN, password=PASSWORD)  # fmt: skip
    return parse_prt_response(j.entra.handle(request), j.transport, store, "prt", replace=True)


def test_join_reply_and_the_join_state(joined: Joined, store: KeyStore) -> None:
    registration = joined.registration
    record = joined.entra.drs.devices[registration.device_id]
    assert record.certificate == registration.certificate
    cn = registration.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == registration.device_id and registration.upn == UPN
    der = registration.certificate_der
    assert registration.thumbprint == hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    # The transport key DRS keeps is the device's (the BCRYPT blob decoded by the service).
    assert record.transport_key.public_numbers() == joined.transport.public_key().public_numbers()
    store.save_join_state(registration.join_state(tenant="contoso.com"))
    state = store.load_join_state()
    assert state is not None
    assert {"device_id", "thumbprint", "certificate", "tenant", "upn"} <= set(state)
    pem = x509.load_pem_x509_certificate(state["certificate"].encode())
    assert pem == registration.certificate
    assert Registration.from_join_state(state) == registration
    with pytest.raises(InvalidData, match="Thumbprint"):
        Registration.from_join_state({**state, "thumbprint": "00" * 20})


def test_drs_nonce_is_a_certification_nonce(joined: Joined) -> None:
    request = drs_nonce_request("contoso.com")
    assert (request.method, request.url) == (
        "GET", "https://enterpriseregistration.windows.net/EnrollmentServer/nonce/contoso.com/"
        "?api-version=1.0")  # fmt: skip
    value = parse_drs_nonce(joined.entra.handle(request))
    assert 8 <= len(value) <= 32 and value in joined.entra.drs._nonces


def test_password_prt_renewal_app_token_and_cookies(joined: Joined, store: KeyStore) -> None:
    prt = password_prt(joined, store)
    issued = joined.entra.prts[prt.refresh_token]
    assert prt.token_type == "pop" and issued.upn == UPN
    assert prt.session.hardware_backed is store.provider.hardware_backed
    # The Kerberos client keys decrypted by the session key are the service's.
    assert prt.tgt_ad is not None and prt.tgt_cloud is not None
    assert prt.tgt_ad.client_key == issued.kerberos_keys["tgt_ad"]  # AES-CBC JWE
    assert prt.tgt_cloud.client_key == issued.kerberos_keys["tgt_cloud"]  # AES-GCM JWE
    assert prt.session.decrypt_jwe(issued.session.encrypt_response(b"\x00\xff")) == b"\x00\xff"
    id_claims = json.loads(base64.urlsafe_b64decode(prt.id_token.split(".")[1] + "=="))
    assert id_claims["deviceid"] == joined.registration.device_id

    request = refresh_prt_request(prt.session, prt.refresh_token, nonce=nonce(joined.entra))
    renewed = parse_refresh_response(joined.entra.handle(request), prt.session)
    assert renewed.refresh_token != prt.refresh_token
    assert renewed.refresh_token in joined.entra.prts and prt.refresh_token not in joined.entra.prts

    request = app_token_request(
        prt.session, renewed.refresh_token, nonce=nonce(joined.entra), client_id="app",
        resource="https://graph.microsoft.com",
    )  # fmt: skip
    tokens = parse_token_response(joined.entra.handle(request), prt.session)
    assert tokens["resource"] == "https://graph.microsoft.com" and tokens["access_token"]

    cookie = prt_cookie(prt.session, renewed.refresh_token, nonce=nonce(joined.entra))
    assert joined.entra.verify_prt_cookie(cookie)["is_primary"] == "true"
    with pytest.raises(InvalidData, match="already used"):
        joined.entra.verify_prt_cookie(cookie)  # a replay
    credential = device_credential(joined.device, joined.registration.certificate,
                                   nonce=nonce(joined.entra))  # fmt: skip
    assert joined.entra.verify_device_credential(credential) == joined.registration.device_id


def test_prt_by_refresh_token_and_by_windows_hello(joined: Joined, store: KeyStore) -> None:
    prt = password_prt(joined, store)
    request = prt_request(joined.device, joined.registration.certificate,
                          nonce=nonce(joined.entra), refresh_token=prt.refresh_token)  # fmt: skip
    again = parse_prt_response(joined.entra.handle(request), joined.transport, store, "prt",
                               replace=True)  # fmt: skip
    assert joined.entra.prts[again.refresh_token].upn == UPN

    ngc = store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=b"1234")
    token = joined.entra.issue_access_token(UPN)
    with pytest.raises(InvalidData, match="ngcmfa"):
        joined.entra.handle(ngc_registration_request(ngc, access_token=token))
    token = joined.entra.issue_access_token(UPN, amr=("pwd", "ngcmfa"))
    kid = json.loads(joined.entra.handle(ngc_registration_request(ngc, access_token=token)))["kid"]
    value = nonce(joined.entra)
    assertion = ngc_assertion(ngc, upn=UPN, nonce=value)
    request = prt_request(joined.device, joined.registration.certificate, nonce=value,
                          username=UPN, assertion=assertion)  # fmt: skip
    hello = parse_prt_response(joined.entra.handle(request), joined.transport, store, "prt",
                               replace=True)  # fmt: skip
    assert joined.entra.prts[hello.refresh_token].upn == UPN
    assert joined.entra.ngc_keys[kid][1].public_numbers() == ngc.public_key().public_numbers()


def test_leave_needs_the_device_certificate(joined: Joined) -> None:
    request = leave_request(joined.registration.device_id)
    with pytest.raises(InvalidSignature, match="mutual TLS"):
        joined.entra.handle(request)
    other = dataclasses.replace(joined.registration)  # same certificate: accepted
    assert joined.entra.handle(request, client_certificate=other.certificate) == b""
    assert joined.registration.device_id not in joined.entra.drs.devices
    with pytest.raises(InvalidData, match="no device"):
        joined.entra.handle(request, client_certificate=other.certificate)


# -- refusals -------------------------------------------------------------------------------


def with_body(request: Request, body: bytes) -> Request:
    return dataclasses.replace(request, body=body)


def form_with(original: Request, /, **changes: str) -> Request:
    fields = dict(urllib.parse.parse_qsl(original.body.decode()))
    fields.update(changes)
    return with_body(original, urllib.parse.urlencode(fields).encode())


def test_the_stand_in_refuses_what_entra_would(joined: Joined, store: KeyStore) -> None:
    entra = joined.entra
    join = registration_request(joined.device, joined.transport, access_token="not-issued",
                                domain="c", display_name="d", os_version="o")  # fmt: skip
    with pytest.raises(InvalidData, match="bearer token"):
        entra.handle(join)
    bearer = {**join.headers, "Authorization": f"Bearer {entra.issue_access_token(UPN)}"}
    with pytest.raises(InvalidData, match="not JSON"):
        entra.join(with_body(dataclasses.replace(join, headers=bearer), b"{"))
    cert = joined.registration.certificate
    request = prt_request(joined.device, cert, nonce=nonce(entra), username=UPN, password="no")
    with pytest.raises(InvalidData, match="password is wrong"):
        entra.handle(request)
    with pytest.raises(InvalidData, match="already used"):
        entra.handle(request)  # the nonce was spent by the refused request
    request = prt_request(joined.device, cert, nonce="made-up", username=UPN, password=PASSWORD)
    with pytest.raises(InvalidData, match="not issued"):
        entra.handle(request)
    request = prt_request(joined.device, cert, nonce=nonce(entra), username=UPN, password=PASSWORD)
    with pytest.raises(InvalidData, match="client_info"):
        entra.handle(form_with(request, client_info="0"))
    # A request signed by another key under the device's certificate: pyca refuses it.
    jwt = dict(urllib.parse.parse_qsl(request.body.decode()))["request"]
    head, body, _ = jwt.split(".")
    forged = rsa.generate_private_key(65537, 2048).sign(
        f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    forged_jwt = f"{head}.{body}.{base64.urlsafe_b64encode(forged).decode().rstrip('=')}"
    with pytest.raises(InvalidSignature):
        entra.handle(form_with(request, request=forged_jwt))

    prt = password_prt(joined, store)
    renew = refresh_prt_request(prt.session, prt.refresh_token, nonce=nonce(entra))
    session_jwt: Any = dict(urllib.parse.parse_qsl(renew.body.decode()))["request"]
    head, body, signature = session_jwt.split(".")
    tampered = f"{head}.{body}.{signature[:-4]}AAAA"
    with pytest.raises(InvalidSignature):
        entra.handle(form_with(renew, request=tampered))
    reply = entra.handle(renew)
    # A session of another device cannot open the reply.
    other = EntraStandIn(users={UPN: PASSWORD})
    other_store = KeyStore(store.provider, store.path.parent / "other")
    device = other_store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = other_store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    reg = parse_registration_response(other.handle(registration_request(
        device, transport, access_token=other.issue_access_token(UPN), domain="c",
        display_name="d", os_version="o")))  # fmt: skip
    theirs = parse_prt_response(other.handle(prt_request(
        device, reg.certificate, nonce=nonce(other), username=UPN, password=PASSWORD)),
        transport, other_store, "prt")  # fmt: skip
    with pytest.raises(DecryptionError):
        parse_refresh_response(reply, theirs.session)


_URLS = [
    "https://login.microsoftonline.com/common/oauth2/token",
    "https://enterpriseregistration.windows.net/EnrollmentServer/device/?api-version=2.0",
    "https://enterpriseregistration.windows.net/EnrollmentServer/key/?api-version=1.0",
    "https://enterpriseregistration.windows.net/EnrollmentServer/nonce/x/?api-version=9",
    "https://enterpriseregistration.windows.net/EnrollmentServer/device/abc",
    "https://example.com/",
]
_SERVICE = EntraStandIn(users={UPN: PASSWORD})


@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    url=st.sampled_from(_URLS),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]),
    body=st.binary(max_size=64)
    | st.sampled_from([b"grant_type=srv_chall", b"grant_type=" + _JWT_BEARER.encode()
                       + b"&client_info=1&request=e30.e30.", b"request=a.b.c&client_info=1"
                       b"&grant_type=" + _JWT_BEARER.encode(), b"{}", b"[]", b'{"kngc": 5}']),
)  # fmt: skip
def test_malformed_requests_raise_only_typed_errors(
    method: str, url: str, content_type: str, body: bytes
) -> None:
    headers = {"Content-Type": content_type, "Authorization": "Bearer nope"}
    with contextlib.suppress(EntraKeysError):  # anything else fails the test
        _SERVICE.handle(Request(method, url, headers, body))
