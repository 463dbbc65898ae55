"""A local stand-in for Entra that takes the ``entra_keys.protocol`` requests as they are sent.

Each entry takes a ``Request`` (method, URL, headers, body), checks it as the service would and
returns the reply body, so a join agent's tests run its real messages against it::

    entra = EntraStandIn.for_swtpm(swtpm, users={"u@contoso.com": "pw"})  # its EK CAs loaded
    token = entra.issue_access_token("u@contoso.com")            # the DRS bearer token
    reply = entra.handle(registration_request(device, transport, access_token=token, ...))
    nonce = parse_nonce(entra.handle(nonce_request()))
    prt = parse_prt_response(entra.handle(prt_request(...)), transport, store, "prt")
    entra.handle(leave_request(device_id), client_certificate=peer_certificate)

================================================  =============  ==============================
request                                           entry          reply
================================================  =============  ==============================
GET  /EnrollmentServer/nonce/{tenant}/            ``drs_nonce``  ``{"Value": base64}``
POST /EnrollmentServer/device/?api-version=2.0    ``join``       ``Certificate``, ``User``
POST /EnrollmentServer/key/?api-version=1.0       ``ngc_key``    ``{"kid": ...}`` (stand-in's)
DELETE /EnrollmentServer/device/{id}              ``leave``      empty (mutual TLS certificate)
POST /{tenant}/oauth2/token srv_challenge         ``token``      ``{"Nonce": ...}``
POST /{tenant}/oauth2/token request=RS256 JWT     ``token``      the PRT reply (plain JSON)
POST /{tenant}/oauth2/token request=HS256 JWT     ``token``      a ``dir`` JWE (renewal, app)
================================================  =============  ==============================

Signatures are checked by pyca (the device key against the certificate issued here; the NGC
key against the key registered here; HS256 with pyca's KBKDFHMAC key, KDF v2 over the ctx).
It is as strict as Entra is known to be (``RegistrationService`` lists the join's and nonces'
rules); the token service's and the key registry's, and where each comes from:

====================================================  ========================================
rule                                                  source
====================================================  ========================================
the ``{tenant}`` of a token or DRS nonce URL is        Microsoft identity platform, authority
``common``, ``organizations``, the tenant id or one    URLs (a tenant id or a verified domain;
of its domains (``domains``, and the domains of its    ``consumers`` is for personal accounts,
users' UPNs); the path has nothing after it           which cannot join); MS-RDPBCGR 4.11.3
a password grant names a user of this tenant and      MS-OAPXBC 3.2.5.1.2.1 (username and
that user's password, compared in constant time;      password); observed: AADSTS50126 for
a missing user or password is the same refusal        either
a PRT by refresh token is for the device the PRT      MS-OAPXBC 3.2.5.1.2.1 (refresh_token
was issued to, while it lives (``PRT_LIFETIME``)      grant); Entra's 14-day PRT
an NGC assertion: ``use`` ngc, RS256 by a key         MS-OAPXBC 3.2.5.1.2.1 (the NGC
registered here, ``iss`` and ``username`` that key's  assertion); roadlib, Himmelblau
user, the request's nonce, valid now (integer
``iat`` / ``exp``)
every PRT gets a new session key; a session-key-      MS-OAPXBC 3.2.5.1.2.2 (each PRT reply
signed request (renewal, app token, cookie) is        carries its own session_key_jwe) and
checked with the key of the PRT its refresh token     3.2.5.1.3 (the request is signed with
names, so another PRT's key (another user's, the      that PRT's session key)
same device's older one) is refused
a renewal keeps its PRT's session key                 roadlib (``renew_prt``: no new
                                                      session_key_jwe)
an NGC key is registered to one user: the same key    not documented; chosen because the kid
under another user is refused, and nothing replaces   (a hash of the key) names one registry
another user's entry                                  entry, and a takeover would lock its
                                                      user out
an NGC registration needs a bearer token with the     roadlib, Himmelblau (the ngcmfa amr)
``ngcmfa`` amr
a bearer token (``issue_access_token``) is for a      Microsoft identity platform: access
user of this tenant and lasts                         tokens last 60 to 90 minutes (chosen:
``ACCESS_TOKEN_LIFETIME``                             one hour)
a leave names a device registered here and comes      roadlib ``delete_device`` (DRS
over mutual TLS with that device's certificate        authenticates it by the TLS client
(another device's certificate is refused)             certificate alone)
a form or JSON body is at most ``MAX_REQUEST_SIZE``   not documented; chosen as the strict
and each form field appears once                      JSON reader's limit
====================================================  ========================================

Malformed input is InvalidData, a bad signature InvalidSignature, an unknown user or token
InvalidData naming it; nothing else escapes ``handle``. Time comes from ``clock`` (epoch
seconds). Tests only: it holds the raw session keys, as the real service does.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature as PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .. import formats
from .._json import Members, b64url_decode, b64url_encode, load_object
from ..errors import InvalidData, InvalidSignature
from ..protocol import Request
from .registration import MAX_REQUEST_SIZE, DeviceRecord, RegistrationService
from .token_service import TokenService

if TYPE_CHECKING:
    from .swtpm import Swtpm

__all__ = ["ACCESS_TOKEN_LIFETIME", "PRT_LIFETIME", "EntraStandIn", "IssuedPRT"]

_DRS = "https://enterpriseregistration.windows.net"
_LOGIN = "https://login.microsoftonline.com"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_REALM = "KERBEROS.MICROSOFTONLINE.COM"
#: How long a PRT issued here lives, in seconds (Entra: 14 days, renewed on use).
PRT_LIFETIME = 14 * 24 * 3600
#: How long a bearer token of ``issue_access_token`` is accepted, in seconds.
ACCESS_TOKEN_LIFETIME = 3600
# The tenant names every tenant answers to (work and school accounts; not "consumers").
_ANY_TENANT = ("common", "organizations")


@dataclass
class IssuedPRT:
    """What the stand-in keeps of a PRT it issued: whose, which device, its own session key,
    until when."""

    refresh_token: str = field(repr=False)
    upn: str
    device_id: str
    #: This PRT's session key (each PRT has its own; a renewal keeps it).
    session: TokenService = field(repr=False)
    #: When the PRT stops being accepted (clock seconds).
    expires: float = float("inf")
    #: The Kerberos client keys sent in ``tgt_ad`` / ``tgt_cloud`` (tests compare against them).
    kerberos_keys: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class _AccessToken:
    upn: str
    amr: tuple[str, ...]
    expires: float


class EntraStandIn:
    """DRS and the token service in memory, over the protocol's requests."""

    def __init__(
        self,
        *,
        registration: RegistrationService | None = None,
        users: Mapping[str, str] | None = None,
        tenant_id: str | None = None,
        domains: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
        session_key_alg: Literal["RSA-OAEP", "RSA-OAEP-256"] = "RSA-OAEP",
    ) -> None:
        """``session_key_alg``: how each PRT reply wraps its session key: RSA-OAEP (SHA-1), as
        Entra's PRT replies do, or RSA-OAEP-256 (SHA-256), as MSAL's bound refresh tokens."""
        self.session_key_alg: Literal["RSA-OAEP", "RSA-OAEP-256"] = session_key_alg
        self.drs = registration or RegistrationService(
            allow_software=True, require_attestation=False, clock=clock
        )
        #: Time, in epoch seconds: the registration service's unless given.
        self.clock = clock or self.drs.clock
        self.users = dict(users or {})
        self.tenant_id = tenant_id or str(uuid.uuid4())
        #: The names the tenant answers to in a URL: its id, its domains and its users'.
        self.tenants = {
            self.tenant_id.lower(),
            *(name.lower() for name in _ANY_TENANT),
            *(d.lower() for d in domains),
            *(upn.rpartition("@")[2].lower() for upn in self.users if "@" in upn),
        }
        self._access_tokens: dict[str, _AccessToken] = {}
        self.prts: dict[str, IssuedPRT] = {}
        #: NGC keys registered here: kid -> (UPN, key).
        self.ngc_keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        self.left: list[str] = []

    @classmethod
    def for_swtpm(
        cls,
        swtpm: Swtpm,
        *,
        users: Mapping[str, str] | None = None,
        tenant_id: str | None = None,
        domains: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
    ) -> EntraStandIn:
        """A stand-in whose registration service trusts this swtpm's EK CAs and requires an
        attested join (AK enrolled against the EK, both keys certified), as for a TPM."""
        service = RegistrationService(ek_ca_certificates=swtpm.ca_certificates, clock=clock)
        return cls(registration=service, users=users, tenant_id=tenant_id, domains=domains,
                   clock=clock)  # fmt: skip

    @classmethod
    def for_software(
        cls,
        *,
        users: Mapping[str, str] | None = None,
        tenant_id: str | None = None,
        domains: Iterable[str] = (),
        clock: Callable[[], float] | None = None,
    ) -> EntraStandIn:
        """A stand-in for the software provider: the join's attestation is still required and
        checked, and a software one is taken as what it is (the device is not ``attested``)."""
        service = RegistrationService(allow_software=True, clock=clock)
        return cls(registration=service, users=users, tenant_id=tenant_id, domains=domains,
                   clock=clock)  # fmt: skip

    def __repr__(self) -> str:
        return f"<EntraStandIn {len(self.drs.devices)} devices>"

    # -- users and tokens -------------------------------------------------------------------

    def issue_access_token(self, upn: str, *, amr: tuple[str, ...] = ("pwd",)) -> str:
        """A DRS bearer token for ``upn``, a user of this tenant (the agent gets it by an
        interactive sign-in, which is not entra_keys' job), good for ``ACCESS_TOKEN_LIFETIME``;
        ``amr`` ``("pwd", "ngcmfa")`` allows an NGC registration."""
        if upn not in self.users:
            raise InvalidData(f"{upn!r} is no user of this tenant")
        token = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        expires = self.clock() + ACCESS_TOKEN_LIFETIME
        self._access_tokens[token] = _AccessToken(upn, tuple(amr), expires)
        return token

    def _bearer(self, request: Request) -> _AccessToken:
        value = request.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
        issued = self._access_tokens.get(token) if scheme == "Bearer" else None
        if issued is None:
            raise InvalidData("the request carries no bearer token issued by this service")
        if self.clock() >= issued.expires:
            raise InvalidData("the request's bearer token expired")
        return issued

    # -- dispatch ---------------------------------------------------------------------------

    def handle(
        self, request: Request, *, client_certificate: x509.Certificate | None = None
    ) -> bytes:
        """The reply body for any request of the table in the module docstring."""
        if not isinstance(request, Request):
            raise InvalidData(f"a Request, not {type(request).__name__}")
        _check_fields(request)
        path = _split(request.url).path
        if request.url.startswith(f"{_LOGIN}/") and path.endswith("/oauth2/token"):
            return self.token(request)
        if request.method == "DELETE":
            return self.leave(request, client_certificate=client_certificate)
        if path.startswith("/EnrollmentServer/nonce/"):
            return self.drs_nonce(request)
        if path == "/EnrollmentServer/device/":
            return self.join(request)
        if path == "/EnrollmentServer/key/":
            return self.ngc_key(request)
        raise InvalidData(f"no stand-in entry for {request.method} {request.url:.200}")

    def _tenant(self, segment: str) -> None:
        """The URL's tenant must be this tenant's id, one of its domains, or a name every
        tenant answers to."""
        if segment.lower() not in self.tenants:
            raise InvalidData(f"the tenant {segment[:100]!r} is not this tenant")

    # -- DRS --------------------------------------------------------------------------------

    def drs_nonce(self, request: Request) -> bytes:
        """``{"Value": base64(nonce)}``: one key certification's qualifying data, spent once,
        for this tenant (``/EnrollmentServer/nonce/{tenant}/``)."""
        _expect(request, "GET", f"{_DRS}/EnrollmentServer/nonce/", "api-version=1.0")
        tenant, slash, rest = (
            _split(request.url).path.removeprefix("/EnrollmentServer/nonce/").partition("/")
        )
        if not slash or rest:
            raise InvalidData("a DRS nonce request goes to /EnrollmentServer/nonce/{tenant}/")
        self._tenant(tenant)
        return _json({"Value": base64.b64encode(self.drs.issue_nonce()).decode("ascii")})

    def join(self, request: Request) -> bytes:
        """The join: bearer token checked, the JSON body checked by ``RegistrationService``
        (CSR, transport key another key than the device key, JoinType, attestation), the
        device certificate returned."""
        _expect(request, "POST", f"{_DRS}/EnrollmentServer/device/", "api-version=2.0")
        upn = self._bearer(request).upn
        reply = self.drs.register(_json_body(request, "the join request"))
        reply["User"] = {"Upn": upn}
        return _json(reply)

    def ngc_key(self, request: Request) -> bytes:
        """The NGC key registration: a bearer token with the ``ngcmfa`` amr, ``{"kngc"}``. A
        key is registered to one user: registering it again for that user changes nothing;
        for another user it is refused, and that user's entry stays as it was."""
        _expect(request, "POST", f"{_DRS}/EnrollmentServer/key/", "api-version=1.0")
        bearer = self._bearer(request)
        if "ngcmfa" not in bearer.amr:
            raise InvalidData("an NGC key registration needs a token with the ngcmfa amr")
        body = _json_body(request, "the NGC key registration")
        key = formats.public_key_from_bcrypt(
            Members(body, "the NGC key registration").base64("kngc")
        )
        if key.key_size != 2048:
            raise InvalidData(f"an NGC key is RSA-2048, not RSA-{key.key_size}")
        kid = base64.b64encode(hashes_sha256(formats.bcrypt_rsakey_blob(key))).decode("ascii")
        registered = self.ngc_keys.get(kid)
        if registered is not None and registered[0] != bearer.upn:
            raise InvalidData("this NGC key is registered to another user")
        self.ngc_keys[kid] = (bearer.upn, key)
        return _json({"kid": kid, "upn": bearer.upn})

    def leave(self, request: Request, *, client_certificate: x509.Certificate | None) -> bytes:
        """The leave: DELETE of a device, authenticated by the TLS client certificate alone
        (it must be that device's certificate, as the TLS server saw it)."""
        _check_fields(request)
        if request.method != "DELETE":
            raise InvalidData(f"a leave is a DELETE, not {request.method!r:.40}")
        prefix = f"{_DRS}/EnrollmentServer/device/"
        _split(request.url)
        if not request.url.startswith(prefix):
            raise InvalidData(f"a leave goes to {prefix}{{id}}, not {request.url:.200}")
        # A GUID names one device in either case (RFC 9562 §4), as leave_request takes it.
        device_id = request.url.removeprefix(prefix).lower()
        record = self.drs.devices.get(device_id)
        if record is None:
            raise InvalidData(f"no device {device_id[:100]!r} is registered here")
        if not isinstance(client_certificate, x509.Certificate) or (
            client_certificate != record.certificate
        ):
            raise InvalidSignature("a leave needs the device's certificate over mutual TLS")
        del self.drs.devices[device_id]
        for token in [t for t, prt in self.prts.items() if prt.device_id == device_id]:
            del self.prts[token]
        self.left.append(device_id)
        return b""

    # -- the token service ------------------------------------------------------------------

    def token(self, request: Request) -> bytes:
        """``/{tenant}/oauth2/token``: a nonce, a PRT (RS256 request) or a session-key request
        (HS256)."""
        _check_fields(request)
        url = _split(request.url)
        if request.method != "POST" or not request.url.startswith(f"{_LOGIN}/"):
            raise InvalidData(f"the token endpoint takes a POST, not {request.method!r:.40}")
        tenant, _, rest = url.path.removeprefix("/").partition("/")
        if rest != "oauth2/token" or url.query or url.fragment:
            raise InvalidData("the token endpoint is /{tenant}/oauth2/token")
        self._tenant(tenant)
        fields = _form(request)
        grant = fields.get("grant_type")
        if grant == "srv_challenge":
            return _json({"Nonce": self.drs.issue_prt_nonce()})
        if grant != _JWT_BEARER:
            raise InvalidData(f"grant_type {grant!r:.60} is not taken here")
        for name, value in (("client_info", "1"),):
            if fields.get(name) != value:
                raise InvalidData(f"the form's {name} is not {value!r}")
        jwt = fields.get("request")
        if jwt is None:
            raise InvalidData("the form has no request")
        alg = _header(jwt).get("alg")
        if alg == "RS256":
            return self._prt(jwt, fields)
        if alg == "HS256":
            return self._session_request(jwt)
        raise InvalidData(f"a request JWT is RS256 or HS256, not {alg!r:.40}")

    def _prt(self, jwt: str, fields: Mapping[str, str]) -> bytes:
        if fields.get("windows_api_version") not in ("2.0", "2.2"):
            raise InvalidData("windows_api_version is 2.0 or 2.2")
        record, unchecked = self.drs.verify_prt_request(jwt)
        claims = Members(unchecked, "the PRT request's claims")
        scopes = claims.text("scope").split(" ")
        if "aza" not in scopes or "openid" not in scopes:
            raise InvalidData("a PRT request's scope holds aza and openid")
        upn = self._user_of(claims, record)
        # A new session key for every PRT (MS-OAPXBC 3.2.5.1.2.2).
        issued = IssuedPRT(
            _token(), upn, record.device_id, TokenService(), self.clock() + PRT_LIFETIME
        )
        reply = {
            "token_type": "pop",
            "expires_in": "3600",
            "refresh_token": issued.refresh_token,
            "refresh_token_expires_in": PRT_LIFETIME,
            "id_token": self._id_token(upn, record.device_id, claims.text("client_id")),
            "client_info": base64.urlsafe_b64encode(_json({"uid": upn})).decode().rstrip("="),
            "session_key_jwe": issued.session.session_key_jwe(
                record.transport_key, alg=self.session_key_alg
            ),
        }
        if fields.get("tgt") == "true":
            reply.update(self._tgts(issued))
        self.prts[issued.refresh_token] = issued
        return _json(reply)

    def _live_prt(self, refresh_token: object, what: str) -> IssuedPRT:
        """The PRT a refresh token names, if issued here and not expired."""
        prt = self.prts.get(refresh_token) if isinstance(refresh_token, str) else None
        if prt is None:
            raise InvalidData(f"{what} is no PRT issued here")
        if self.clock() >= prt.expires:
            raise InvalidData(f"{what} is an expired PRT")
        return prt

    def _user_of(self, claims: Members, record: DeviceRecord) -> str:
        """Who the PRT request proves: a password, a PRT of the same device, an NGC assertion."""
        grant = claims.optional("grant_type")
        if grant == "password":
            upn, password = claims.optional("username"), claims.optional("password")
            expected = self.users.get(upn) if isinstance(upn, str) else None
            # One refusal for an unknown user and a wrong password (AADSTS50126 for both).
            if (
                not isinstance(password, str)
                or expected is None
                or not hmac.compare_digest(password.encode("utf-8", "surrogatepass"),
                                           expected.encode("utf-8", "surrogatepass"))
            ):  # fmt: skip
                raise InvalidData("the username or password is wrong")
            assert isinstance(upn, str)
            return upn
        if grant == "refresh_token":
            prt = self._live_prt(claims.optional("refresh_token"), "the refresh_token")
            if prt.device_id != record.device_id:
                raise InvalidData("the refresh_token was not issued to this device")
            return prt.upn
        if grant == _JWT_BEARER:
            return self._ngc_user(claims)
        raise InvalidData(f"grant_type {grant!r:.60} is not password, refresh_token or jwt-bearer")

    def _ngc_user(self, claims: Members) -> str:
        assertion = claims.text("assertion")
        header = _header(assertion)
        if header.get("use") != "ngc" or header.get("alg") != "RS256":
            raise InvalidData("the assertion's header is not use ngc, alg RS256")
        kid = header.get("kid")
        entry = self.ngc_keys.get(kid) if isinstance(kid, str) else None
        if entry is None:
            raise InvalidData("the assertion's kid names no NGC key registered here")
        upn, key = entry
        payload = Members(_verify_rs256(assertion, key, "the NGC assertion"), "the assertion")
        if payload.optional("iss") != upn or claims.optional("username") not in (None, upn):
            raise InvalidData("the assertion is not for the user whose key signed it")
        if payload.optional("request_nonce") != claims.optional("request_nonce"):
            raise InvalidData("the assertion's request_nonce is not the request's")
        iat = payload.integer("iat", 0, 2**40)
        exp = payload.integer("exp", 0, 2**40)
        if not iat <= self.clock() <= exp:
            raise InvalidData("the assertion is not valid now (iat, exp)")
        return upn

    def _tgts(self, issued: IssuedPRT) -> dict[str, Any]:
        out: dict[str, Any] = {"kerberos_top_level_names": ".contoso.com,.contoso.example"}
        for name, mode in (("tgt_ad", "cbc"), ("tgt_cloud", "gcm")):
            client_key = os.urandom(32)
            issued.kerberos_keys[name] = client_key
            tgt = {
                "clientKey": issued.session.encrypt_response(client_key, mode=mode),  # type: ignore[arg-type]
                "keyType": 18,
                "messageBuffer": base64.b64encode(os.urandom(64)).decode("ascii"),
                "realm": _REALM,
                "sn": f"krbtgt/{_REALM}",
                "cn": issued.upn,
                "sessionKeyType": 18,
                "accountType": 1,
            }
            out[name] = json.dumps(tgt)  # a JSON string, as roadlib reads it
        return out

    def _id_token(self, upn: str, device_id: str, client_id: str) -> str:
        """An unsigned id token (``alg none``: the stand-in's; Entra signs its own)."""
        now = int(self.clock())
        claims = {"aud": client_id, "iss": f"https://sts.windows.net/{self.tenant_id}/",
                  "iat": now, "exp": now + 3600, "upn": upn, "tid": self.tenant_id,
                  "deviceid": device_id}  # fmt: skip
        head = b64url_encode(_json({"typ": "JWT", "alg": "none"}))
        return f"{head}.{b64url_encode(_json(claims))}."

    def _session_request(self, jwt: str) -> bytes:
        """A renewal (scope with aza) or an app token: HS256 checked with the session key of
        the PRT the request names (KDF v2), claims checked, reply a ``dir`` JWE."""
        prt = self._live_prt(_payload(jwt).get("refresh_token"), "the request's refresh_token")
        # pyca KBKDFHMAC, KDF v2, exact payload: only this PRT's own session key verifies.
        claims = Members(prt.session.verify_request(jwt), "the request's claims")
        expected = {"iss": "aad:brokerplugin", "grant_type": "refresh_token",
                    "aud": "login.microsoftonline.com"}  # fmt: skip
        for name, value in expected.items():
            if claims.optional(name) != value:
                raise InvalidData(f"the request's {name} is not {value!r}")
        client_id = claims.text("client_id")
        self.drs.spend_prt_nonce(claims.optional("request_nonce"))
        scopes = claims.text("scope").split(" ")
        resource, redirect = claims.optional("resource"), claims.optional("redirect_uri")
        if resource is None and redirect is None and "aza" in scopes:
            renewed = IssuedPRT(_token(), prt.upn, prt.device_id, prt.session,
                                self.clock() + PRT_LIFETIME)  # fmt: skip
            del self.prts[prt.refresh_token]
            self.prts[renewed.refresh_token] = renewed
            reply: dict[str, Any] = {
                "token_type": "pop",
                "refresh_token": renewed.refresh_token,
                "refresh_token_expires_in": PRT_LIFETIME,
                "id_token": self._id_token(prt.upn, prt.device_id, client_id),
            }
            return prt.session.encrypt_response(_json(reply), mode="gcm").encode("ascii")
        if resource is None and redirect is None:
            raise InvalidData("an app token request names a resource or a redirect_uri")
        reply = {
            "token_type": "Bearer",
            "access_token": _token(),
            "expires_in": 3600,
            "resource": resource,
            "scope": claims.text("scope"),
            "refresh_token": _token(),
            "id_token": self._id_token(prt.upn, prt.device_id, client_id),
        }
        return prt.session.encrypt_response(_json(reply), mode="cbc").encode("ascii")

    # -- headers a browser sign-in carries ----------------------------------------------------

    def verify_prt_cookie(self, cookie: str) -> dict[str, Any]:
        """The claims of an ``x-ms-RefreshTokenCredential``: HS256 with the session key of the
        PRT it carries (KDF v2), ``is_primary`` "true", a nonce issued here, spent."""
        prt = self._live_prt(_payload(cookie).get("refresh_token"), "the cookie's refresh_token")
        claims = prt.session.verify_request(cookie)
        if claims.get("is_primary") != "true":
            raise InvalidData("the cookie's is_primary is not 'true'")
        self.drs.spend_prt_nonce(claims.get("request_nonce"))
        return claims

    def verify_device_credential(self, value: str) -> str:
        """The device id of an ``x-ms-DeviceCredential`` (RS256 by the device key, x5c the
        certificate issued here, ``grant_type device_auth``, a nonce issued here, spent)."""
        record, claims = self.drs.verify_prt_request(value, kdf_v2=False)  # x5c, nonce
        if claims.get("grant_type") != "device_auth" or claims.get("iss") != "aad:brokerplugin":
            raise InvalidData("a device credential is grant_type device_auth, iss aad:brokerplugin")
        return record.device_id


def hashes_sha256(data: bytes) -> bytes:
    """SHA-256 by pyca."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _token() -> str:
    return base64.urlsafe_b64encode(os.urandom(48)).decode("ascii").rstrip("=")


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(value), separators=(",", ":")).encode("utf-8")


def _check_fields(request: Request) -> None:
    """A Request's method a str, its headers a mapping of str to str (its url and body are
    checked where they are read), else InvalidData."""
    if type(request.method) is not str:
        raise InvalidData(f"a request method is a str, not {type(request.method).__name__}")
    headers = request.headers
    if not isinstance(headers, Mapping) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
    ):
        raise InvalidData(f"request headers are a mapping of str to str, not {headers!r:.100}")


def _split(url: object) -> urllib.parse.SplitResult:
    """A URL's parts; InvalidData for what is no URL, and for a URL that holds a space or a
    control character (urlsplit deletes TAB, CR and LF, which an HTTP client refuses)."""
    if not isinstance(url, str):
        raise InvalidData(f"a URL is a str, not {type(url).__name__}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidData(f"a URL holds no space or control character: {url[:200]!r}")
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise InvalidData(f"not a URL ({exc})") from None


def _expect(request: Request, method: str, prefix: str, query: str) -> None:
    _check_fields(request)
    if request.method != method:
        raise InvalidData(f"{prefix} takes a {method}, not {request.method!r:.40}")
    url = _split(request.url)
    if not request.url.startswith(prefix) or url.query != query or url.fragment:
        raise InvalidData(f"the request goes to {prefix}...?{query}, not {request.url:.200}")


def _body(request: Request) -> bytes:
    if not isinstance(request.body, bytes):
        raise InvalidData(f"a request body is bytes, not {type(request.body).__name__}")
    if len(request.body) > MAX_REQUEST_SIZE:
        raise InvalidData(f"the request body is over {MAX_REQUEST_SIZE} bytes")
    return request.body


def _json_body(request: Request, what: str) -> dict[str, Any]:
    if request.headers.get("Content-Type") != "application/json":
        raise InvalidData(f"{what} is not application/json")
    return load_object(_body(request), what)


def _form(request: Request) -> dict[str, str]:
    if request.headers.get("Content-Type") != "application/x-www-form-urlencoded":
        raise InvalidData("the token endpoint takes a form body")
    try:
        text = _body(request).decode("ascii")
        pairs = urllib.parse.parse_qsl(text, strict_parsing=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidData(f"the form body does not parse ({exc})") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidData("a form field appears twice")
    return fields


def _part(token: object, index: int, what: str) -> dict[str, Any]:
    if not isinstance(token, str):
        raise InvalidData(f"{what} is a str, not {type(token).__name__}")
    if len(token) > MAX_REQUEST_SIZE:
        raise InvalidData(f"{what} is over {MAX_REQUEST_SIZE} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidData(f"{what} is a compact JWS of 3 segments, not {len(parts)}")
    try:
        raw = b64url_decode(parts[index])
    except InvalidData as exc:
        raise InvalidData(f"{what} does not decode ({exc})") from None
    return load_object(raw, what)


def _header(token: object) -> dict[str, Any]:
    return _part(token, 0, "a JWT header")


def _payload(token: object) -> dict[str, Any]:
    return _part(token, 1, "a JWT payload")


def _verify_rs256(token: str, key: rsa.RSAPublicKey, what: str) -> dict[str, Any]:
    payload = _payload(token)  # three segments, each base64url, the payload a JSON object
    head, body, signature = token.split(".")
    try:
        key.verify(
            b64url_decode(signature), f"{head}.{body}".encode("ascii"),
            padding.PKCS1v15(), hashes.SHA256(),
        )  # fmt: skip
    except PycaInvalidSignature:
        raise InvalidSignature(f"{what}'s RS256 signature does not verify") from None
    return payload
