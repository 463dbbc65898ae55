"""The stand-in services refuse what Entra refuses: each rule of ``testing.entra`` and
``testing.registration`` is an attack performed here, and the typed refusal it meets.

What is under test is the service side, so the devices' keys are software keys here
(``test_join_flow`` runs the whole flow over both providers); time is a clock the test moves.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import struct
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from entra_keys import KeyStore, KeyType, KeyUsage, formats, open_provider
from entra_keys.errors import AttestationError, InvalidData, InvalidSignature
from entra_keys.protocol import (
    JWT_BEARER,
    PRT,
    Registration,
    Request,
    app_token_request,
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
    prt_cookie,
    prt_request,
    refresh_prt_request,
    registration_request,
)
from entra_keys.provider import EntraPrivateKey
from entra_keys.tcg.records import certification_to_json
from entra_keys.testing.entra import ACCESS_TOKEN_LIFETIME, PRT_LIFETIME, EntraStandIn
from entra_keys.testing.registration import NONCE_LIFETIME, RegistrationService
from entra_keys.testing.token_service import TokenService

ALICE, BOB = "alice@contoso.com", "bob@contoso.com"
PASSWORDS = {ALICE: "alice's password", BOB: "bob's password"}
TENANT_ID = "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


class Clock:
    """Epoch seconds that the test moves forward."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Device:
    store: KeyStore
    device: EntraPrivateKey
    transport: EntraPrivateKey
    registration: Registration


@dataclasses.dataclass
class World:
    entra: EntraStandIn
    clock: Clock
    tmp: Path

    def join(self, name: str, upn: str = ALICE) -> Device:
        store = KeyStore(open_provider("software"), self.tmp / name)
        device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        request = registration_request(
            device, transport, access_token=self.entra.issue_access_token(upn),
            domain="contoso.com", display_name=name, os_version="Debian 13",
        )  # fmt: skip
        registration = parse_registration_response(self.entra.handle(request), device_key=device)
        return Device(store, device, transport, registration)

    def nonce(self) -> str:
        return parse_nonce(self.entra.handle(nonce_request()))

    def prt(self, device: Device, upn: str = ALICE, name: str = "prt") -> PRT:
        request = prt_request(
            device.device, device.registration.certificate, nonce=self.nonce(),
            username=upn, password=PASSWORDS[upn],
        )  # fmt: skip
        return parse_prt_response(
            self.entra.handle(request), device.transport, device.store, name, replace=True
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    clock = Clock()
    entra = EntraStandIn(users=PASSWORDS, tenant_id=TENANT_ID, domains=["contoso.example"],
                         clock=clock)  # fmt: skip
    return World(entra, clock, tmp_path)


def signed_prt_request(
    device: Device,
    claims: dict[str, Any],
    *,
    header: dict[str, Any] | None = None,
    certificate: x509.Certificate | None = None,
    key: Any = None,
) -> Request:
    """A PRT request built by hand, for claims and headers ``prt_request`` would not build."""
    der = (certificate or device.registration.certificate).public_bytes(serialization.Encoding.DER)
    head: dict[str, Any] = {"typ": "JWT", "x5c": [base64.b64encode(der).decode()], "kdf_ver": 2}
    head.update(header or {})
    head = {name: value for name, value in head.items() if value is not DROP}
    token = formats.jws_sign(key or device.device, claims, "RS256", head)
    fields = [("grant_type", JWT_BEARER), ("request", token), ("windows_api_version", "2.0"),
              ("client_info", "1"), ("tgt", "true")]  # fmt: skip
    body = urllib.parse.urlencode(fields).encode()
    return Request(
        "POST",
        "https://login.microsoftonline.com/common/oauth2/token",
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        body,
    )


DROP = object()  # a header member signed_prt_request leaves out


def password_claims(world: World, **claims: Any) -> dict[str, Any]:
    base = {"client_id": "38aa3b87-a06d-4817-b275-7a316988d93b", "scope": "openid aza ugs",
            "request_nonce": world.nonce(), "grant_type": "password"}  # fmt: skip
    base.update(claims)
    return {name: value for name, value in base.items() if value is not None}


# -- who the PRT is for ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"username": "nobody@contoso.com"},  # no such user, no password: None == None before
        {"username": "nobody@contoso.com", "password": "x"},
        {"username": ALICE},  # a user, no password
        {"username": ALICE, "password": None},
        {"username": ALICE, "password": ""},
        {"username": ALICE, "password": PASSWORDS[BOB]},  # another user's password
        {"username": ALICE, "password": 5},
        {"username": ALICE, "password": [PASSWORDS[ALICE]]},
        {"username": None, "password": PASSWORDS[ALICE]},
        {"username": [ALICE], "password": PASSWORDS[ALICE]},
        {"username": ALICE.upper(), "password": PASSWORDS[ALICE]},
    ],
    ids=repr,
)
def test_a_password_grant_needs_a_user_and_their_password(
    world: World, claims: dict[str, Any]
) -> None:
    device = world.join("pc")
    request = signed_prt_request(device, password_claims(world, **claims))
    with pytest.raises(InvalidData, match="username or password is wrong"):
        world.entra.handle(request)
    assert world.entra.prts == {}
    good = signed_prt_request(device, password_claims(world, username=ALICE,
                                                      password=PASSWORDS[ALICE]))  # fmt: skip
    assert json.loads(world.entra.handle(good))["session_key_jwe"]


def test_every_prt_has_its_own_session_key(world: World) -> None:
    """Entra issues a new session key with every PRT: the stand-in used one per device, so
    PRT 1's key signed for PRT 2, even another user's. Now a session-key-signed request
    (renewal, app token, cookie) verifies only with the key of the PRT it names."""
    device = world.join("pc")
    first = world.prt(device, ALICE, "first")
    second = world.prt(device, ALICE, "second")
    bobs = world.prt(device, BOB, "bobs")
    keys = {world.entra.prts[p.refresh_token].session.session_key for p in (first, second, bobs)}
    assert len(keys) == 3
    ctx = b"c" * 24
    assert first.session.derive_key(ctx, kdf_version=1) != second.session.derive_key(
        ctx, kdf_version=1
    )
    # Alice's first session key signs for her second PRT, and for Bob's: refused.
    for victim in (second, bobs):
        renew = refresh_prt_request(first.session, victim.refresh_token, nonce=world.nonce())
        with pytest.raises(InvalidSignature):
            world.entra.handle(renew)
        app = app_token_request(
            first.session, victim.refresh_token, nonce=world.nonce(), client_id="app",
            resource="https://graph.microsoft.com",
        )  # fmt: skip
        with pytest.raises(InvalidSignature):
            world.entra.handle(app)
        with pytest.raises(InvalidSignature):
            world.entra.verify_prt_cookie(
                prt_cookie(first.session, victim.refresh_token, nonce=world.nonce())
            )
    # Each with its own key: accepted.
    for prt in (first, second, bobs):
        renew = refresh_prt_request(prt.session, prt.refresh_token, nonce=world.nonce())
        assert parse_refresh_response(world.entra.handle(renew), prt.session).refresh_token


def test_a_renewal_keeps_its_prts_session_key_and_retires_the_old_token(world: World) -> None:
    device = world.join("pc")
    prt = world.prt(device)
    session = world.entra.prts[prt.refresh_token].session
    request = refresh_prt_request(prt.session, prt.refresh_token, nonce=world.nonce())
    renewed = parse_refresh_response(world.entra.handle(request), prt.session)
    assert world.entra.prts[renewed.refresh_token].session is session  # roadlib: same key
    for again in (request, refresh_prt_request(prt.session, prt.refresh_token,
                                               nonce=world.nonce())):  # fmt: skip
        with pytest.raises(InvalidData, match="no PRT issued here"):  # the old token is spent
            world.entra.handle(again)
    app = app_token_request(prt.session, renewed.refresh_token, nonce=world.nonce(),
                            client_id="app", resource="https://graph.microsoft.com")  # fmt: skip
    assert world.entra.handle(app)
    with pytest.raises(InvalidData, match="already used"):  # a replayed request
        world.entra.handle(app)


def test_a_prt_by_refresh_token_is_for_its_own_device_while_it_lives(world: World) -> None:
    alice_pc, bob_pc = world.join("alice-pc"), world.join("bob-pc", BOB)
    prt = world.prt(alice_pc)
    stolen = prt_request(bob_pc.device, bob_pc.registration.certificate, nonce=world.nonce(),
                         refresh_token=prt.refresh_token)  # fmt: skip
    with pytest.raises(InvalidData, match="not issued to this device"):
        world.entra.handle(stolen)
    own = prt_request(alice_pc.device, alice_pc.registration.certificate, nonce=world.nonce(),
                      refresh_token=prt.refresh_token)  # fmt: skip
    reply = json.loads(world.entra.handle(own))
    assert world.entra.prts[reply["refresh_token"]].upn == ALICE
    world.clock.advance(PRT_LIFETIME)
    late = prt_request(alice_pc.device, alice_pc.registration.certificate, nonce=world.nonce(),
                       refresh_token=reply["refresh_token"])  # fmt: skip
    with pytest.raises(InvalidData, match="expired PRT"):
        world.entra.handle(late)


# -- Windows Hello keys ---------------------------------------------------------------------


def test_an_ngc_key_cannot_be_taken_over_by_another_user(world: World) -> None:
    """Bob registers Alice's NGC public key (public: it travels in every registration) under
    his own name: refused, and Alice's entry stays hers, so she can still sign in with it."""
    device = world.join("pc")
    ngc = device.store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN)
    alice_token = world.entra.issue_access_token(ALICE, amr=("pwd", "ngcmfa"))
    kid = json.loads(world.entra.handle(ngc_registration_request(ngc, access_token=alice_token)))
    bob_token = world.entra.issue_access_token(BOB, amr=("pwd", "ngcmfa"))
    for _ in range(2):
        with pytest.raises(InvalidData, match="registered to another user"):
            world.entra.handle(ngc_registration_request(ngc, access_token=bob_token))
    assert world.entra.ngc_keys[kid["kid"]][0] == ALICE
    # Alice registering it again changes nothing; her assertion still gets her a PRT.
    again = json.loads(world.entra.handle(ngc_registration_request(ngc, access_token=alice_token)))
    assert again == kid
    nonce = world.nonce()
    assertion = ngc_assertion(ngc, upn=ALICE, nonce=nonce)
    request = prt_request(device.device, device.registration.certificate, nonce=nonce,
                          username=ALICE, assertion=assertion)  # fmt: skip
    assert world.entra.prts[json.loads(world.entra.handle(request))["refresh_token"]].upn == ALICE
    # Her assertion does not sign Bob in, nor does a claim of Bob's name.
    nonce = world.nonce()
    for upn, username in ((BOB, BOB), (ALICE, BOB)):
        request = prt_request(device.device, device.registration.certificate, nonce=nonce,
                              username=username,
                              assertion=ngc_assertion(ngc, upn=upn, nonce=nonce))  # fmt: skip
        with pytest.raises(InvalidData, match="not for the user"):
            world.entra.handle(request)
        nonce = world.nonce()


def test_an_ngc_assertion_must_be_valid_now_with_integer_times(world: World) -> None:
    device = world.join("pc")
    ngc = device.store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN)
    token = world.entra.issue_access_token(ALICE, amr=("pwd", "ngcmfa"))
    world.entra.handle(ngc_registration_request(ngc, access_token=token))
    now = datetime.datetime.fromtimestamp(world.clock.now, datetime.UTC)

    def attempt(assertion: str, nonce: str) -> None:
        world.entra.handle(prt_request(
            device.device, device.registration.certificate, nonce=nonce, username=ALICE,
            assertion=assertion,
        ))  # fmt: skip

    nonce = world.nonce()
    stale = ngc_assertion(ngc, upn=ALICE, nonce=nonce, now=now - datetime.timedelta(hours=1))
    with pytest.raises(InvalidData, match="not valid now"):
        attempt(stale, nonce)
    kid = formats.jws_verify(stale, ngc.public_key(), ["RS256"])[0]["kid"]
    for iat, exp in ((True, 2**40), (0.0, 2**40), ("0", 2**40), (0, None)):
        nonce = world.nonce()
        claims = {"iss": ALICE, "aud": "common", "iat": iat, "exp": exp,
                  "request_nonce": nonce, "scope": "openid aza ugs"}  # fmt: skip
        forged = formats.jws_sign(ngc, {k: v for k, v in claims.items() if v is not None},
                                  "RS256", {"typ": "JWT", "use": "ngc", "kid": kid})  # fmt: skip
        with pytest.raises(InvalidData, match=r"'iat'|'exp'|no 'exp'"):
            attempt(forged, nonce)


# -- tenants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant", ["evil.example", "consumers", "11111111-2222-3333-4444-555555555555", "contoso"]
)
def test_a_token_or_drs_url_for_another_tenant_is_refused(world: World, tenant: str) -> None:
    device = world.join("pc")
    with pytest.raises(InvalidData, match="not this tenant"):
        world.entra.handle(nonce_request(tenant))
    with pytest.raises(InvalidData, match="not this tenant"):
        world.entra.handle(drs_nonce_request(tenant))
    request = prt_request(device.device, device.registration.certificate, nonce=world.nonce(),
                          username=ALICE, password=PASSWORDS[ALICE], tenant=tenant)  # fmt: skip
    with pytest.raises(InvalidData, match="not this tenant"):
        world.entra.handle(request)
    for own in ("common", "organizations", TENANT_ID, TENANT_ID.upper(), "contoso.com",
                "contoso.example"):  # fmt: skip
        assert parse_nonce(world.entra.handle(nonce_request(own)))
        assert parse_drs_nonce(world.entra.handle(drs_nonce_request(own)))


def test_token_and_nonce_urls_are_exact(world: World) -> None:
    base = nonce_request()
    for url in (
        "https://login.microsoftonline.com/common/extra/oauth2/token",
        "https://login.microsoftonline.com/common/oauth2/token?x=1",
        "https://login.microsoftonline.com/common/oauth2/token#f",
        "https://login.microsoftonline.com//oauth2/token",
    ):
        with pytest.raises(InvalidData):
            world.entra.handle(dataclasses.replace(base, url=url))
    drs = drs_nonce_request("contoso.com")
    for url in (
        "https://enterpriseregistration.windows.net/EnrollmentServer/nonce/contoso.com/x/"
        "?api-version=1.0",
        "https://enterpriseregistration.windows.net/EnrollmentServer/nonce/contoso.com"
        "?api-version=1.0",
    ):
        with pytest.raises(InvalidData):
            world.entra.handle(dataclasses.replace(drs, url=url))


def test_urls_with_spaces_or_control_characters_are_refused(world: World) -> None:
    """urlsplit deletes TAB, CR and LF, so '.../com\tmon/oauth2/tok\nen' was answered as the
    token URL, although an HTTP client refuses it. Every such URL is InvalidData now."""
    token, drs = nonce_request(), drs_nonce_request("contoso.com")
    device = world.join("pc")
    leave = leave_request(device.registration.device_id)
    for base, url in (
        (token, "https://login.microsoftonline.com/com\tmon/oauth2/tok\nen"),
        (token, "https://login.microsoftonline.com/common/oauth2/token\r\n"),
        (token, "https://login.microsoftonline.com/common/oauth2/token "),
        (token, "https://login.microsoftonline.com/common/oauth2/\x7ftoken"),
        (drs, drs.url.replace("api-version", "api-\rversion") + "\n"),
        (leave, leave.url + "\t"),
    ):
        with pytest.raises(InvalidData, match="no space or control character"):
            world.entra.handle(
                dataclasses.replace(base, url=url),
                client_certificate=device.registration.certificate,
            )
    assert parse_nonce(world.entra.handle(token))  # the controls
    assert parse_drs_nonce(world.entra.handle(drs))
    assert device.registration.device_id in world.entra.drs.devices


def test_a_leave_names_its_device_in_either_case(world: World) -> None:
    """leave_request takes an upper-case GUID (it is one GUID); the stand-in answered "no device
    is registered here". It finds the device now, and still needs that device's certificate."""
    a, b = world.join("a"), world.join("b")
    request = leave_request(b.registration.device_id.upper())
    assert b.registration.device_id.upper() in request.url
    with pytest.raises(InvalidSignature, match="mutual TLS"):
        world.entra.handle(request, client_certificate=a.registration.certificate)
    assert world.entra.handle(request, client_certificate=b.registration.certificate) == b""
    assert b.registration.device_id not in world.entra.drs.devices


@pytest.mark.parametrize(
    "change",
    [
        {"method": 5},
        {"method": None},
        {"method": b"POST"},
        {"method": ["POST"]},
        {"headers": None},
        {"headers": [("Content-Type", "application/x-www-form-urlencoded")]},
        {"headers": {"Content-Type": b"application/x-www-form-urlencoded"}},
        {"headers": {5: "x"}},
    ],
    ids=repr,
)
def test_requests_with_fields_of_the_wrong_type_are_invalid_data(
    world: World, change: dict[str, Any]
) -> None:
    """A method that is an int, None or bytes raised ValueError or TypeError (a format
    precision), headers that are None or a list AttributeError: out of handle, which claims
    only typed errors. Every entry (token, join, DRS nonce, leave) refuses them typed now."""
    device = world.join("pc")
    requests = [
        nonce_request(),
        drs_nonce_request("contoso.com"),
        registration_request(device.device, device.transport,
                             access_token=world.entra.issue_access_token(ALICE),
                             domain="contoso.com", display_name="pc", os_version="13"),
        leave_request(device.registration.device_id),
    ]  # fmt: skip
    for request in requests:
        with pytest.raises(InvalidData, match=r"request (method is a str|headers are a mapping)"):
            world.entra.handle(
                dataclasses.replace(request, **change),
                client_certificate=device.registration.certificate,
            )
    assert device.registration.device_id in world.entra.drs.devices


@pytest.mark.parametrize("token", [None, 5, b"a.b.c", ["a.b.c"]], ids=repr)
def test_verify_request_refuses_a_token_that_is_no_str(token: Any) -> None:
    with pytest.raises(InvalidData, match="a request token is a str"):
        TokenService().verify_request(token)


# -- the PRT request's header ---------------------------------------------------------------


@pytest.mark.parametrize("kdf_ver", [2.0, "2", True, 1, 3, None, DROP], ids=repr)
def test_kdf_ver_must_be_the_integer_2(world: World, kdf_ver: Any) -> None:
    """``kdf_ver: 2.0`` was taken as 2; the strict reader takes only the JSON integer 2."""
    device = world.join("pc")
    claims = password_claims(world, username=ALICE, password=PASSWORDS[ALICE])
    request = signed_prt_request(device, claims, header={"kdf_ver": kdf_ver})
    with pytest.raises(InvalidData, match=r"kdf_ver|KDF version 2"):
        world.entra.handle(request)
    assert world.entra.prts == {}
    # The session-key-signed side is as strict (the token service's check).
    prt = world.prt(device)
    service = world.entra.prts[prt.refresh_token].session
    ctx = base64.b64encode(b"c" * 24).decode()
    for value in (2.0, "2", True):
        head = {"alg": "HS256", "typ": "JWT", "ctx": ctx, "kdf_ver": value}
        segment = base64.urlsafe_b64encode(json.dumps(head).encode()).decode().rstrip("=")
        with pytest.raises(InvalidData, match="kdf_ver"):
            service.verify_request(f"{segment}.e30.AAAA")


def test_another_devices_certificate_in_x5c_is_refused(world: World) -> None:
    """Device A signs a PRT request carrying device B's certificate (certificates are
    public), or a certificate it made itself with B's device id: both refused."""
    a, b = world.join("a"), world.join("b")
    claims = password_claims(world, username=ALICE, password=PASSWORDS[ALICE])
    with pytest.raises(InvalidSignature):
        world.entra.handle(signed_prt_request(a, claims, certificate=b.registration.certificate))
    key = rsa.generate_private_key(65537, 2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, b.registration.device_id)])
    own = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    claims = password_claims(world, username=ALICE, password=PASSWORDS[ALICE])
    with pytest.raises(InvalidSignature, match="not issued by this service"):
        world.entra.handle(signed_prt_request(a, claims, certificate=own, key=key))
    # Its own certificate, once expired, is refused too.
    world.clock.advance(400 * 24 * 3600)
    world.entra.drs._prt_nonces.clear()
    claims = password_claims(world, username=ALICE, password=PASSWORDS[ALICE])
    with pytest.raises(InvalidSignature, match="not valid now"):
        world.entra.handle(signed_prt_request(a, claims))


# -- nonces ---------------------------------------------------------------------------------


def test_nonces_expire(world: World) -> None:
    """Nonces never expired; now each is accepted for NONCE_LIFETIME (5 minutes), once."""
    device = world.join("pc")

    def attempt(nonce: str) -> bytes:
        return world.entra.handle(prt_request(device.device, device.registration.certificate,
                                              nonce=nonce, username=ALICE,
                                              password=PASSWORDS[ALICE]))  # fmt: skip

    fresh, old = world.nonce(), world.nonce()
    world.clock.advance(NONCE_LIFETIME - 1)
    assert attempt(fresh)
    world.clock.advance(1)
    with pytest.raises(InvalidData, match="expired"):
        attempt(old)
    with pytest.raises(InvalidData, match=r"not issued|already used"):
        attempt(old)  # an expired nonce is gone
    # Session-key-signed requests and cookies spend the same nonces.
    prt = world.prt(device)
    nonce = world.nonce()
    world.clock.advance(NONCE_LIFETIME)
    with pytest.raises(InvalidData, match="expired"):
        world.entra.handle(refresh_prt_request(prt.session, prt.refresh_token, nonce=nonce))
    cookie = prt_cookie(prt.session, prt.refresh_token, nonce=world.nonce())
    world.clock.advance(NONCE_LIFETIME)
    with pytest.raises(InvalidData, match="expired"):
        world.entra.verify_prt_cookie(cookie)
    # Expired nonces do not pile up: issuing forgets them.
    for _ in range(50):
        world.nonce()
        world.clock.advance(NONCE_LIFETIME)
    assert len(world.entra.drs._prt_nonces) <= 2


def test_issuing_nonces_takes_time_linear_in_the_nonces_issued(world: World) -> None:
    """Each issue walked every live nonce to find the expired ones: 4,000 nonces within a
    lifetime walked 8 M entries (n(n-1)/2). The expired ones now leave from the front of an
    issue-order queue: issuing never walks the live set, and the sets stay as small as the
    nonces still usable, of both kinds."""

    class Walked(dict[Any, float]):
        walks = 0

        def items(self) -> Any:
            Walked.walks += 1
            return super().items()

        def __iter__(self) -> Any:
            Walked.walks += 1
            return super().__iter__()

    drs = world.entra.drs
    drs._prt_nonces, drs._nonces = Walked(), Walked()
    for _ in range(3000):
        world.nonce()
        drs.issue_nonce()
    assert Walked.walks == 0
    assert len(drs._prt_nonces) == len(drs._nonces) == 3000
    spent = world.nonce()
    drs.spend_prt_nonce(spent)
    world.clock.advance(NONCE_LIFETIME)
    fresh = world.nonce()
    assert len(drs.issue_nonce()) == 16 and Walked.walks == 0
    assert len(drs._nonces) == 1 and list(drs._prt_nonces) == [fresh]
    with pytest.raises(InvalidData, match="already used"):
        drs.spend_prt_nonce(spent)
    drs.spend_prt_nonce(fresh)


def test_drs_and_prt_nonces_do_not_stand_in_for_each_other(world: World, tmp_path: Path) -> None:
    """A DRS nonce (its Value, as sent) is no srv_challenge nonce, and a srv_challenge nonce
    (decoded to bytes) certifies no key: two services, two sets."""
    device = world.join("pc")
    drs_value = json.loads(world.entra.handle(drs_nonce_request("contoso.com")))["Value"]
    request = prt_request(device.device, device.registration.certificate, nonce=drs_value,
                          username=ALICE, password=PASSWORDS[ALICE])  # fmt: skip
    with pytest.raises(InvalidData, match="not issued"):
        world.entra.handle(request)
    service = RegistrationService(allow_software=True, clock=world.clock)
    provider = open_provider("software")
    store = KeyStore(provider, tmp_path / "attested")
    ak = store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    ek = provider.endorsement_keys()[0]
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)
    service.finish_enrollment(ak.tpm_public, provider.activate_credential(ak, ek, blob, secret))
    key = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    prt_nonce = base64.urlsafe_b64decode(service.issue_prt_nonce() + "==")
    proof = json.loads(certification_to_json(provider.certify(key, ak, prt_nonce)))
    attestation = {"AkPublic": base64.b64encode(ak.tpm_public).decode(),
                   "DeviceKey": proof, "TransportKey": proof}  # fmt: skip
    with pytest.raises(AttestationError, match="nonce was not issued"):
        service._check_attestation(attestation, key.public_key(), key.public_key())  # type: ignore[arg-type]
    # A DRS nonce certifies once, before it expires.
    nonce = service.issue_nonce()
    world.clock.advance(NONCE_LIFETIME)
    proof = json.loads(certification_to_json(provider.certify(key, ak, nonce)))
    attestation.update(DeviceKey=proof)
    with pytest.raises(AttestationError, match="nonce expired"):
        service._check_attestation(attestation, key.public_key(), key.public_key())  # type: ignore[arg-type]


# -- the join, the leave, bearer tokens -----------------------------------------------------


def test_a_join_whose_transport_key_is_the_device_key_is_refused(world: World) -> None:
    store = KeyStore(open_provider("software"), world.tmp / "one-key")
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    request = registration_request(device, transport, access_token=world.entra.issue_access_token(
        ALICE), domain="contoso.com", display_name="pc", os_version="13")  # fmt: skip
    body = json.loads(request.body)
    body["TransportKey"] = base64.b64encode(formats.bcrypt_rsakey_blob(device)).decode()
    with pytest.raises(InvalidData, match="transport key is the device key"):
        world.entra.handle(dataclasses.replace(request, body=json.dumps(body).encode()))
    assert world.entra.drs.devices == {}


def _bcrypt_rsa_public(bits: int) -> str:
    """A BCRYPT_RSAPUBLIC_BLOB of a modulus of ``bits`` bits (no key made: 17,000 bits is
    slow), base64 as the join request carries it."""
    modulus = (1 << (bits - 1)) | (12345 << 8) | 1
    size = (bits + 7) // 8
    header = struct.pack("<4sIIIII", b"RSA1", bits, 3, size, 0, 0)
    return base64.b64encode(header + b"\x01\x00\x01" + modulus.to_bytes(size, "big")).decode()


def test_a_join_needs_rsa_2048_device_and_transport_keys(world: World) -> None:
    """A transport key of 512 or 17,000 bits joined, then the PRT request let pyca's
    ValueError out of handle (the session key cannot be RSA-OAEP-encrypted to it); RSA-1024 and
    P-256 device keys got certificates. Each is InvalidData at the join, and nothing joins."""
    store = KeyStore(open_provider("software"), world.tmp / "keys")
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    request = registration_request(device, transport, access_token=world.entra.issue_access_token(
        ALICE), domain="contoso.com", display_name="pc", os_version="13")  # fmt: skip

    def join(change: Callable[[dict[str, Any]], None]) -> bytes:
        body = json.loads(request.body)
        change(body)
        return world.entra.handle(dataclasses.replace(request, body=json.dumps(body).encode()))

    for bits in (512, 1024, 2047, 2049, 3072, 4096, 17000):
        blob = _bcrypt_rsa_public(bits)
        with pytest.raises(InvalidData, match=f"transport key is RSA-2048, not RSA-{bits}"):
            join(lambda body, blob=blob: body.__setitem__("TransportKey", blob))
    weak: list[tuple[str, Any]] = [
        ("RSA-1024", rsa.generate_private_key(65537, 1024)),
        ("RSA-3072", rsa.generate_private_key(65537, 3072)),
        ("secp256r1", ec.generate_private_key(ec.SECP256R1())),
    ]
    for name, key in weak:
        csr = base64.b64encode(formats.csr_der(formats.build_csr(key))).decode()
        with pytest.raises(InvalidData, match=f"key is RSA-2048 .*not {name}"):
            join(lambda body, csr=csr: body["CertificateRequest"].__setitem__("Data", csr))
    assert world.entra.drs.devices == {}
    # The token service's own side: a key it cannot encrypt to is InvalidData, not ValueError.
    small = rsa.RSAPublicNumbers(65537, (1 << 511) | (12345 << 8) | 1).public_key()
    with pytest.raises(InvalidData, match="cannot be RSA-OAEP-encrypted to an RSA-512"):
        TokenService().session_key_jwe(small)
    not_rsa: Any = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InvalidData, match="transport key is RSA"):
        TokenService().session_key_jwe(not_rsa)
    # The control: RSA-2048 keys join.
    assert parse_registration_response(join(lambda body: None), device_key=device).device_id


def test_a_leave_of_another_device_is_refused(world: World) -> None:
    a, b = world.join("a"), world.join("b")
    prt = world.prt(b)
    request = leave_request(b.registration.device_id)
    for certificate in (a.registration.certificate, None):
        with pytest.raises(InvalidSignature, match="mutual TLS"):
            world.entra.handle(request, client_certificate=certificate)
    assert b.registration.device_id in world.entra.drs.devices
    assert world.entra.handle(request, client_certificate=b.registration.certificate) == b""
    # Its PRTs go with it.
    with pytest.raises(InvalidData, match="no PRT issued here"):
        world.entra.handle(refresh_prt_request(prt.session, prt.refresh_token,
                                               nonce=world.nonce()))  # fmt: skip
    assert a.registration.device_id in world.entra.drs.devices


def test_bearer_tokens_are_for_users_of_the_tenant_and_expire(world: World) -> None:
    with pytest.raises(InvalidData, match="no user of this tenant"):
        world.entra.issue_access_token("mallory@evil.example")
    token = world.entra.issue_access_token(ALICE)
    world.clock.advance(ACCESS_TOKEN_LIFETIME)
    store = KeyStore(open_provider("software"), world.tmp / "late")
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    request = registration_request(device, transport, access_token=token, domain="contoso.com",
                                   display_name="pc", os_version="13")  # fmt: skip
    with pytest.raises(InvalidData, match="bearer token expired"):
        world.entra.handle(request)


def test_request_bodies_are_bounded(world: World) -> None:
    request = nonce_request()
    huge = dataclasses.replace(request, body=b"grant_type=srv_challenge&x=" + b"a" * (2 << 20))
    with pytest.raises(InvalidData, match="over"):
        world.entra.handle(huge)
    twice = dataclasses.replace(request, body=b"grant_type=srv_challenge&grant_type=x")
    with pytest.raises(InvalidData, match="twice"):
        world.entra.handle(twice)


def test_without_a_clock_the_stand_in_reads_time_time_on_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A test may move time by patching ``time.time``: a nonce issued now has expired once
    NONCE_LIFETIME has passed."""
    import time

    entra = EntraStandIn(users=PASSWORDS)
    nonce = parse_nonce(entra.handle(nonce_request()))
    later = time.time() + NONCE_LIFETIME
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidData, match="expired"):
        entra.drs.spend_prt_nonce(nonce)


def test_requests_with_unreadable_certificates_are_invalid_data(world: World) -> None:
    """A CSR of an unknown key algorithm or version, and an x5c certificate of version 6, let
    cryptography's UnsupportedAlgorithm / InvalidVersion out of the stand-in."""
    device = world.join("pc")
    request = registration_request(
        device.device, device.transport, access_token=world.entra.issue_access_token(ALICE),
        domain="contoso.com", display_name="pc", os_version="13",
    )  # fmt: skip
    body = json.loads(request.body)
    csr = base64.b64decode(body["CertificateRequest"]["Data"])
    for bad in (
        csr.replace(
            bytes.fromhex("06092a864886f70d010101"), bytes.fromhex("06092a864886f70d01017f")
        ),
        csr.replace(bytes.fromhex("020100"), bytes.fromhex("020105"), 1),  # version 6
    ):
        assert bad != csr
        body["CertificateRequest"]["Data"] = base64.b64encode(bad).decode()
        with pytest.raises(InvalidData):
            world.entra.handle(dataclasses.replace(request, body=json.dumps(body).encode()))
    der = device.registration.certificate_der.replace(
        bytes.fromhex("a003020102"), bytes.fromhex("a003020105")
    )
    x5c = base64.b64encode(der).decode()
    claims = password_claims(world, username=ALICE, password=PASSWORDS[ALICE])
    token = formats.jws_sign(device.device, claims, "RS256", {"x5c": [x5c], "kdf_ver": 2})
    with pytest.raises(InvalidData, match="not a certificate"):
        world.entra.drs.verify_prt_request(token)


# -- made in one call, CAs as paths or certificates, RSA-OAEP-256 ----------------------------


def _ca(name: str) -> x509.Certificate:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def test_ca_certificates_are_taken_as_paths_bytes_or_certificates(tmp_path: Path) -> None:
    """``Swtpm.ca_certificates`` gives paths where the service wanted certificates: now a
    path (str or Path, PEM or DER), PEM or DER bytes and a certificate are all taken, and
    anything else is InvalidData naming what it was."""
    first, second = _ca("first"), _ca("second")
    pem = first.public_bytes(serialization.Encoding.PEM)
    der = second.public_bytes(serialization.Encoding.DER)
    (tmp_path / "both.pem").write_bytes(pem + second.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "second.der").write_bytes(der)
    for given, expected in [
        ([first, second], [first, second]),
        ([pem, der], [first, second]),
        ([tmp_path / "both.pem"], [first, second]),
        ([str(tmp_path / "second.der")], [second]),
        (tmp_path / "both.pem", [first, second]),  # one path alone
        (pem, [first]),
    ]:
        assert RegistrationService(ek_ca_certificates=given).ek_ca_certificates == expected
    for bad, message in [
        ([tmp_path / "missing.pem"], "cannot read the certificate file"),
        ([b"not a certificate"], "holds no PEM or DER certificate"),
        ([42], "not int"),
    ]:
        with pytest.raises(InvalidData, match=message):
            RegistrationService(ek_ca_certificates=bad)  # type: ignore[arg-type]


def test_a_stand_in_for_a_swtpm_trusts_its_cas_and_requires_attestation(
    swtpm: Any, tmp_path: Path
) -> None:
    """``EntraStandIn.for_swtpm(swtpm)``: the swtpm's own CAs, loaded from its files, and a
    join is refused without its attestation (as the service requires)."""
    entra = EntraStandIn.for_swtpm(swtpm, users=PASSWORDS)
    expected = [x509.load_pem_x509_certificate(p.read_bytes()) for p in swtpm.ca_certificates]
    assert entra.drs.ek_ca_certificates == expected
    assert entra.drs.require_attestation and not entra.drs.allow_software
    store = KeyStore(open_provider("software"), tmp_path / "store")
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    software = EntraStandIn.for_software(users=PASSWORDS)
    assert software.drs.require_attestation and software.drs.allow_software
    for service in (entra, software):
        request = registration_request(
            device, transport, access_token=service.issue_access_token(ALICE),
            domain="contoso.com", display_name="pc", os_version="13",
        )  # fmt: skip
        with pytest.raises(AttestationError, match="no key attestation"):
            service.handle(request)


def test_the_stand_in_may_wrap_session_keys_with_rsa_oaep_256(tmp_path: Path) -> None:
    """``session_key_alg="RSA-OAEP-256"``: PRT replies carry their session key as MSAL's bound
    refresh tokens do; the device imports it and the session then signs and decrypts."""
    entra = EntraStandIn(users=PASSWORDS, tenant_id=TENANT_ID, session_key_alg="RSA-OAEP-256")
    world = World(entra, Clock(), tmp_path)
    device = world.join("pc")
    request = prt_request(
        device.device, device.registration.certificate, nonce=world.nonce(),
        username=ALICE, password=PASSWORDS[ALICE],
    )  # fmt: skip
    reply = entra.handle(request)
    jwe = json.loads(reply)["session_key_jwe"]
    assert json.loads(base64.urlsafe_b64decode(jwe.split(".")[0] + "==")) == {
        "alg": "RSA-OAEP-256",
        "enc": "A256GCM",
    }
    prt = parse_prt_response(reply, device.transport, device.store, "prt")
    renewed = parse_refresh_response(
        entra.handle(refresh_prt_request(prt.session, prt.refresh_token, nonce=world.nonce())),
        prt.session,
    )
    assert renewed.refresh_token in entra.prts
