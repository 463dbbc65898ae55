"""A local stand-in for Entra that takes the ``entra_keys.protocol`` requests as they are sent.

Each entry takes a ``Request`` (method, URL, headers, body), checks it as the service would and
returns the reply body, so a join agent's tests run its real messages against it::

    entra = EntraStandIn(users={"u@contoso.com": "pw"})
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
Every nonce is exact and spent once. Malformed input is InvalidData, a bad signature
InvalidSignature, an unknown user or token InvalidData naming it. Tests only: it holds the raw
session keys, as the real service does.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature as PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .. import formats
from .._json import Members, b64url_decode, b64url_encode, load_object
from ..errors import InvalidData, InvalidSignature
from ..protocol import Request
from .registration import DeviceRecord, RegistrationService
from .token_service import TokenService

__all__ = ["EntraStandIn", "IssuedPRT"]

_DRS = "https://enterpriseregistration.windows.net"
_LOGIN = "https://login.microsoftonline.com"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_REALM = "KERBEROS.MICROSOFTONLINE.COM"
#: How long a PRT issued here lives, in seconds (Entra: 14 days, renewed on use).
PRT_LIFETIME = 14 * 24 * 3600


@dataclass
class IssuedPRT:
    """What the stand-in keeps of a PRT it issued: whose, which device, its session key."""

    refresh_token: str = field(repr=False)
    upn: str
    device_id: str
    session: TokenService = field(repr=False)
    #: The Kerberos client keys sent in ``tgt_ad`` / ``tgt_cloud`` (tests compare against them).
    kerberos_keys: dict[str, bytes] = field(default_factory=dict, repr=False)


class EntraStandIn:
    """DRS and the token service in memory, over the protocol's requests."""

    def __init__(
        self,
        *,
        registration: RegistrationService | None = None,
        users: Mapping[str, str] | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.drs = registration or RegistrationService(
            allow_software=True, require_attestation=False
        )
        self.users = dict(users or {})
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self._access_tokens: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.prts: dict[str, IssuedPRT] = {}
        #: NGC keys registered here: kid -> (UPN, key).
        self.ngc_keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        self.left: list[str] = []

    def __repr__(self) -> str:
        return f"<EntraStandIn {len(self.drs.devices)} devices>"

    # -- users and tokens -------------------------------------------------------------------

    def issue_access_token(self, upn: str, *, amr: tuple[str, ...] = ("pwd",)) -> str:
        """A DRS bearer token for ``upn`` (the agent gets it by an interactive sign-in, which
        is not entra_keys' job); ``amr`` ``("pwd", "ngcmfa")`` allows an NGC registration."""
        token = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        self._access_tokens[token] = (upn, tuple(amr))
        return token

    def _bearer(self, request: Request) -> tuple[str, tuple[str, ...]]:
        value = request.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme != "Bearer" or token not in self._access_tokens:
            raise InvalidData("the request carries no bearer token issued by this service")
        return self._access_tokens[token]

    # -- dispatch ---------------------------------------------------------------------------

    def handle(
        self, request: Request, *, client_certificate: x509.Certificate | None = None
    ) -> bytes:
        """The reply body for any request of the table in the module docstring."""
        if not isinstance(request, Request):
            raise InvalidData(f"a Request, not {type(request).__name__}")
        url = urllib.parse.urlsplit(request.url)
        path = url.path
        if request.url.startswith(_LOGIN) and path.endswith("/oauth2/token"):
            return self.token(request)
        if request.method == "DELETE":
            return self.leave(request, client_certificate=client_certificate)
        if path.startswith("/EnrollmentServer/nonce/"):
            return self.drs_nonce(request)
        if path == "/EnrollmentServer/device/":
            return self.join(request)
        if path == "/EnrollmentServer/key/":
            return self.ngc_key(request)
        raise InvalidData(f"no stand-in entry for {request.method} {request.url}")

    # -- DRS --------------------------------------------------------------------------------

    def drs_nonce(self, request: Request) -> bytes:
        """``{"Value": base64(nonce)}``: one key certification's qualifying data, spent once."""
        _expect(request, "GET", f"{_DRS}/EnrollmentServer/nonce/", "api-version=1.0")
        return _json({"Value": base64.b64encode(self.drs.issue_nonce()).decode("ascii")})

    def join(self, request: Request) -> bytes:
        """The join: bearer token checked, the JSON body checked by ``RegistrationService``
        (CSR, transport key, JoinType, attestation), the device certificate returned."""
        _expect(request, "POST", f"{_DRS}/EnrollmentServer/device/", "api-version=2.0")
        upn, _ = self._bearer(request)
        reply = self.drs.register(_json_body(request, "the join request"))
        reply["User"] = {"Upn": upn}
        return _json(reply)

    def ngc_key(self, request: Request) -> bytes:
        """The NGC key registration: a bearer token with the ``ngcmfa`` amr, ``{"kngc"}``."""
        _expect(request, "POST", f"{_DRS}/EnrollmentServer/key/", "api-version=1.0")
        upn, amr = self._bearer(request)
        if "ngcmfa" not in amr:
            raise InvalidData("an NGC key registration needs a token with the ngcmfa amr")
        body = _json_body(request, "the NGC key registration")
        key = formats.public_key_from_bcrypt(
            Members(body, "the NGC key registration").base64("kngc")
        )
        kid = base64.b64encode(hashes_sha256(formats.bcrypt_rsakey_blob(key))).decode("ascii")
        self.ngc_keys[kid] = (upn, key)
        return _json({"kid": kid, "upn": upn})

    def leave(self, request: Request, *, client_certificate: x509.Certificate | None) -> bytes:
        """The leave: DELETE of a device, authenticated by the TLS client certificate alone
        (it must be the device's certificate, as the TLS server saw it)."""
        if request.method != "DELETE":
            raise InvalidData(f"a leave is a DELETE, not {request.method}")
        prefix = f"{_DRS}/EnrollmentServer/device/"
        if not request.url.startswith(prefix):
            raise InvalidData(f"a leave goes to {prefix}{{id}}, not {request.url}")
        device_id = request.url.removeprefix(prefix)
        record = self.drs.devices.get(device_id)
        if record is None:
            raise InvalidData(f"no device {device_id!r} is registered here")
        if client_certificate is None or client_certificate != record.certificate:
            raise InvalidSignature("a leave needs the device's certificate over mutual TLS")
        del self.drs.devices[device_id]
        for token in [t for t, prt in self.prts.items() if prt.device_id == device_id]:
            del self.prts[token]
        self.left.append(device_id)
        return b""

    # -- the token service ------------------------------------------------------------------

    def token(self, request: Request) -> bytes:
        """``/oauth2/token``: a nonce, a PRT (RS256 request) or a session-key request (HS256)."""
        if request.method != "POST" or not request.url.startswith(f"{_LOGIN}/"):
            raise InvalidData(f"the token endpoint takes a POST, not {request.method}")
        fields = _form(request)
        grant = fields.get("grant_type")
        if grant == "srv_challenge":
            return _json({"Nonce": self.drs.issue_prt_nonce()})
        if grant != _JWT_BEARER:
            raise InvalidData(f"grant_type {grant!r} is not taken here")
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
        raise InvalidData(f"a request JWT is RS256 or HS256, not {alg!r}")

    def _prt(self, jwt: str, fields: Mapping[str, str]) -> bytes:
        if fields.get("windows_api_version") not in ("2.0", "2.2"):
            raise InvalidData("windows_api_version is 2.0 or 2.2")
        record, claims = self.drs.verify_prt_request(jwt)
        scopes = str(claims.get("scope", "")).split(" ")
        if "aza" not in scopes or "openid" not in scopes:
            raise InvalidData("a PRT request's scope holds aza and openid")
        upn = self._user_of(claims, record)
        issued = IssuedPRT(_token(), upn, record.device_id, record.token_service)
        reply = {
            "token_type": "pop",
            "expires_in": "3600",
            "refresh_token": issued.refresh_token,
            "refresh_token_expires_in": PRT_LIFETIME,
            "id_token": self._id_token(upn, record.device_id, str(claims["client_id"])),
            "client_info": base64.urlsafe_b64encode(_json({"uid": upn})).decode().rstrip("="),
            "session_key_jwe": record.token_service.session_key_jwe(record.transport_key),
        }
        if fields.get("tgt") == "true":
            reply.update(self._tgts(issued))
        self.prts[issued.refresh_token] = issued
        return _json(reply)

    def _user_of(self, claims: Mapping[str, Any], record: DeviceRecord) -> str:
        """Who the PRT request proves: a password, a PRT of the same device, an NGC assertion."""
        grant = claims.get("grant_type")
        if grant == "password":
            upn, password = claims.get("username"), claims.get("password")
            if not isinstance(upn, str) or self.users.get(upn) != password:
                raise InvalidData("the username or password is wrong")
            return upn
        if grant == "refresh_token":
            prt = self.prts.get(str(claims.get("refresh_token")))
            if prt is None or prt.device_id != record.device_id:
                raise InvalidData("the refresh_token was not issued to this device")
            return prt.upn
        if grant == _JWT_BEARER:
            return self._ngc_user(claims)
        raise InvalidData(f"grant_type {grant!r} is not password, refresh_token or jwt-bearer")

    def _ngc_user(self, claims: Mapping[str, Any]) -> str:
        assertion = claims.get("assertion")
        if not isinstance(assertion, str):
            raise InvalidData("an NGC grant carries an assertion")
        header = _header(assertion)
        if header.get("use") != "ngc" or header.get("alg") != "RS256":
            raise InvalidData("the assertion's header is not use ngc, alg RS256")
        entry = self.ngc_keys.get(str(header.get("kid")))
        if entry is None:
            raise InvalidData("the assertion's kid names no NGC key registered here")
        upn, key = entry
        payload = _verify_rs256(assertion, key, "the NGC assertion")
        now = datetime.datetime.now(datetime.UTC).timestamp()
        if payload.get("iss") != upn or claims.get("username", upn) != upn:
            raise InvalidData("the assertion is not for the user whose key signed it")
        if payload.get("request_nonce") != claims.get("request_nonce"):
            raise InvalidData("the assertion's request_nonce is not the request's")
        iat, exp = payload.get("iat"), payload.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not iat <= now <= exp:
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
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        claims = {"aud": client_id, "iss": f"https://sts.windows.net/{self.tenant_id}/",
                  "iat": now, "exp": now + 3600, "upn": upn, "tid": self.tenant_id,
                  "deviceid": device_id}  # fmt: skip
        head = b64url_encode(_json({"typ": "JWT", "alg": "none"}))
        return f"{head}.{b64url_encode(_json(claims))}."

    def _session_request(self, jwt: str) -> bytes:
        """A renewal (scope with aza) or an app token: HS256 checked with the PRT's session key
        (KDF v2), claims checked, reply a ``dir`` JWE."""
        unverified = _payload(jwt)
        prt = self.prts.get(str(unverified.get("refresh_token")))
        if prt is None:
            raise InvalidData("the request's refresh_token is no PRT issued here")
        claims = prt.session.verify_request(jwt)  # pyca KBKDFHMAC, KDF v2, exact payload
        expected = {"iss": "aad:brokerplugin", "grant_type": "refresh_token",
                    "aud": "login.microsoftonline.com"}  # fmt: skip
        for name, value in expected.items():
            if claims.get(name) != value:
                raise InvalidData(f"the request's {name} is not {value!r}")
        self.drs.spend_prt_nonce(claims.get("request_nonce"))
        scopes = str(claims.get("scope", "")).split(" ")
        if "resource" not in claims and "redirect_uri" not in claims and "aza" in scopes:
            renewed = IssuedPRT(_token(), prt.upn, prt.device_id, prt.session)
            del self.prts[prt.refresh_token]
            self.prts[renewed.refresh_token] = renewed
            reply: dict[str, Any] = {
                "token_type": "pop",
                "refresh_token": renewed.refresh_token,
                "refresh_token_expires_in": PRT_LIFETIME,
                "id_token": self._id_token(prt.upn, prt.device_id, str(claims["client_id"])),
            }
            return prt.session.encrypt_response(_json(reply), mode="gcm").encode("ascii")
        if "resource" not in claims and "redirect_uri" not in claims:
            raise InvalidData("an app token request names a resource or a redirect_uri")
        reply = {
            "token_type": "Bearer",
            "access_token": _token(),
            "expires_in": 3600,
            "resource": claims.get("resource"),
            "scope": claims.get("scope"),
            "refresh_token": _token(),
            "id_token": self._id_token(prt.upn, prt.device_id, str(claims["client_id"])),
        }
        return prt.session.encrypt_response(_json(reply), mode="cbc").encode("ascii")

    # -- headers a browser sign-in carries ----------------------------------------------------

    def verify_prt_cookie(self, cookie: str) -> dict[str, Any]:
        """The claims of an ``x-ms-RefreshTokenCredential``: HS256 with the session key of the
        PRT it carries (KDF v2), ``is_primary`` "true", a nonce issued here, spent."""
        prt = self.prts.get(str(_payload(cookie).get("refresh_token")))
        if prt is None:
            raise InvalidData("the cookie's refresh_token is no PRT issued here")
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


def _expect(request: Request, method: str, prefix: str, query: str) -> None:
    if request.method != method:
        raise InvalidData(f"{prefix} takes a {method}, not {request.method}")
    url = urllib.parse.urlsplit(request.url)
    if not request.url.startswith(prefix) or url.query != query:
        raise InvalidData(f"the request goes to {prefix}...?{query}, not {request.url}")


def _json_body(request: Request, what: str) -> dict[str, Any]:
    if request.headers.get("Content-Type") != "application/json":
        raise InvalidData(f"{what} is not application/json")
    return load_object(request.body, what)


def _form(request: Request) -> dict[str, str]:
    if request.headers.get("Content-Type") != "application/x-www-form-urlencoded":
        raise InvalidData("the token endpoint takes a form body")
    try:
        pairs = urllib.parse.parse_qsl(request.body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidData(f"the form body does not parse ({exc})") from exc
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidData("a form field appears twice")
    return fields


def _part(token: str, index: int, what: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidData(f"{what} is a compact JWS of 3 segments, not {len(parts)}")
    try:
        raw = b64url_decode(parts[index])
    except InvalidData as exc:
        raise InvalidData(f"{what} does not decode ({exc})") from None
    return load_object(raw, what)


def _header(token: str) -> dict[str, Any]:
    return _part(token, 0, "a JWT header")


def _payload(token: str) -> dict[str, Any]:
    return _part(token, 1, "a JWT payload")


def _verify_rs256(token: str, key: rsa.RSAPublicKey, what: str) -> dict[str, Any]:
    head, body, signature = token.split(".")
    try:
        key.verify(
            b64url_decode(signature), f"{head}.{body}".encode("ascii"),
            padding.PKCS1v15(), hashes.SHA256(),
        )  # fmt: skip
    except PycaInvalidSignature:
        raise InvalidSignature(f"{what}'s RS256 signature does not verify") from None
    return _payload(token)
