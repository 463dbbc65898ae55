"""What the device key signs for the token service: the PRT request and the device credential,
and the nonce request both need first.

Sources: MS-OAPXBC 3.1.5.1.1 (nonce), 3.2.5.1.2.1 (PRT request) and 3.2.5.2.1.1.2
(``x-ms-DeviceCredential``); roadlib ``deviceauth.py`` (``get_prt_with_password``,
``request_token_with_devicecert_signed_payload``) and ``auth.py`` (``get_srv_challenge``);
libhimmelblau ``auth.rs`` (``*AuthenticationPayload``, ``acquire_user_prt_jwt``,
``DeviceCredentialPayload``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import formats
from ..errors import InvalidData
from ..formats import PrivateKey
from ._common import (
    AUTHENTICATION_BROKER_CLIENT_ID,
    BROKER_ISSUER,
    BROKER_PLUGIN_CLIENT_ID,
    JWT_BEARER,
    OS_RELEASE,
    PRT_SCOPE,
    Request,
    WinVer,
    certificate_x5c,
    form_request,
    optional_text,
    rsa2048,
    text,
    token_url,
    win_ver_claim,
)

if TYPE_CHECKING:
    from cryptography import x509


def nonce_request(tenant: str = "common") -> Request:
    """The nonce request (``srv_challenge``) every signed request needs a fresh answer to.

    ``POST https://login.microsoftonline.com/{tenant}/oauth2/token`` with the form
    ``grant_type=srv_challenge`` (MS-OAPXBC 3.1.5.1.1, roadlib, Himmelblau); the reply's
    ``Nonce`` is read by ``parse_nonce``.
    """
    return form_request(token_url(tenant), [("grant_type", "srv_challenge")])


def _x5c(device_key: PrivateKey, certificate: x509.Certificate, as_array: bool) -> Any:
    value = certificate_x5c(device_key, certificate)
    return [value] if as_array else value


def prt_request(
    device_key: PrivateKey,
    device_certificate: x509.Certificate,
    *,
    nonce: str,
    username: str | None = None,
    password: str | None = None,
    refresh_token: str | None = None,
    assertion: str | None = None,
    client_id: str | None = None,
    scope: str = PRT_SCOPE,
    tenant: str = "common",
    windows_api_version: str = "2.0",
    x5c_as_array: bool = True,
    win_ver: str | WinVer | None = OS_RELEASE,
) -> Request:
    """The PRT request: a JWT signed by the device key (RS256) carrying one user grant.

    ``POST https://login.microsoftonline.com/{tenant}/oauth2/token``, form:

    ===================  ================================================  ======================
    form field           value                                             source
    ===================  ================================================  ======================
    grant_type           ``urn:ietf:params:oauth:grant-type:jwt-bearer``   MS-OAPXBC, roadlib,
                                                                           Himmelblau
    request              the JWT below                                     MS-OAPXBC
    windows_api_version  ``windows_api_version``: "2.0" (Himmelblau;       roadlib, Himmelblau
                         roadlib "2.2"; not in MS-OAPXBC)
    client_info          ``1``                                             roadlib, Himmelblau
    tgt                  ``true``: Kerberos TGTs in the reply              roadlib, Himmelblau
    ===================  ================================================  ======================

    ==============  ========================================================  ================
    JWT field       value                                                     source
    ==============  ========================================================  ================
    header alg      ``"RS256"``                                               MS-OAPXBC
    header typ      ``"JWT"``                                                 MS-OAPXBC §4,
                                                                              Himmelblau
    header x5c      the device certificate, standard base64 DER: an array    MS-OAPXBC (RFC
                    of one (``x5c_as_array``, the default) or a string        7515 §4.1.6),
                                                                              roadlib (string),
                                                                              Himmelblau (array)
    header kdf_ver  ``2``: later derivations use KDF v2                       MS-OAPXBC,
                                                                              roadlib
    client_id       ``client_id``, else by grant: password and NGC            MS-OAPXBC §4,
                    38aa3b87-a06d-4817-b275-7a316988d93b, refresh token       roadlib,
                    29d9ed98-a469-4536-ade2-f981bc1d605e                      Himmelblau
    scope           ``scope``, "openid aza ugs" (must hold aza and openid)    MS-OAPXBC,
                                                                              roadlib,
                                                                              Himmelblau
    request_nonce   ``nonce``, from ``parse_nonce``                           MS-OAPXBC
    win_ver         ``win_ver``: by default this machine's os-release         roadlib,
                    ``PRETTY_NAME VERSION_ID``, as Himmelblau sends it        Himmelblau
                    (``auth.rs``, every PRT payload; roadlib sends the
                    Windows build "10.0.19041.868", ``get_prt_with_*``);
                    a string sends that, None sends none
    grant_type      ``"password"`` + ``username`` + ``password``;             MS-OAPXBC
                    ``"refresh_token"`` + ``refresh_token``; or
                    ``urn:ietf:params:oauth:grant-type:jwt-bearer`` +
                    ``assertion`` (``ngc_assertion``) + ``username``
    ==============  ========================================================  ================

    Exactly one grant: none, or more than one, is InvalidData. MS-OAPXBC asks only for the
    assertion in the NGC grant; Windows and both peers add the username, so it is sent when
    given. Where the sources differ, the spec wins and the choice stays a parameter: x5c is an
    array as MS-OAPXBC (RFC 7515) and its example have it, a string with
    ``x5c_as_array=False`` as roadlib sends it (Entra takes both). For NGC, libhimmelblau
    sends the 29d9ed98-... client id, roadlib the 38aa3b87-... one used here.
    """
    key = rsa2048(device_key, "device key")
    grants = {
        "password": password is not None,
        "refresh_token": refresh_token is not None,
        "assertion": assertion is not None,
    }
    chosen = [name for name, given in grants.items() if given]
    if len(chosen) != 1:
        raise InvalidData(
            "a PRT request carries exactly one grant (password, refresh_token or assertion), "
            f"not {len(chosen)}" + (f": {', '.join(chosen)}" if chosen else "")
        )
    scopes = text(scope, "scope").split(" ")
    if "aza" not in scopes or "openid" not in scopes:
        raise InvalidData(f"a PRT request's scope holds 'aza' and 'openid' (MS-OAPXBC): {scope!r}")
    grant = chosen[0]
    user = optional_text(username, "username")
    claims: dict[str, Any] = {}
    if grant == "password":
        default_client = BROKER_PLUGIN_CLIENT_ID
        if user is None:
            raise InvalidData("a password grant needs the username")
        grant_claims = {"grant_type": "password", "username": user}
        grant_claims["password"] = text(password, "password")
    elif grant == "refresh_token":
        default_client = AUTHENTICATION_BROKER_CLIENT_ID
        if user is not None:
            raise InvalidData("a refresh token grant carries no username")
        grant_claims = {"grant_type": "refresh_token"}
        grant_claims["refresh_token"] = text(refresh_token, "refresh_token")
    else:
        default_client = BROKER_PLUGIN_CLIENT_ID
        grant_claims = {"grant_type": JWT_BEARER}
        if user is not None:
            grant_claims["username"] = user
        grant_claims["assertion"] = text(assertion, "assertion")
    claims["client_id"] = default_client if client_id is None else text(client_id, "client_id")
    claims["scope"] = scope
    claims["request_nonce"] = text(nonce, "nonce")
    version = win_ver_claim(win_ver)
    if version is not None:
        claims["win_ver"] = version
    claims.update(grant_claims)
    header = {"typ": "JWT", "x5c": _x5c(key, device_certificate, x5c_as_array), "kdf_ver": 2}
    token = formats.jws_sign(key, claims, "RS256", header)
    fields = [
        ("grant_type", JWT_BEARER),
        ("request", token),
        ("windows_api_version", text(windows_api_version, "windows_api_version")),
        ("client_info", "1"),
        ("tgt", "true"),
    ]
    return form_request(token_url(tenant), fields)


def device_credential(
    device_key: PrivateKey,
    device_certificate: x509.Certificate,
    *,
    nonce: str,
    x5c_as_array: bool = True,
) -> str:
    """The ``x-ms-DeviceCredential`` header value: the device's proof on an authorize request.

    ==============  =========================================================  ===============
    JWT field       value                                                      source
    ==============  =========================================================  ===============
    header alg      ``"RS256"``                                                MS-OAPXBC
    header typ      ``"JWT"``                                                  MS-OAPXBC
    header x5c      the device certificate, standard base64 DER; an array as  MS-OAPXBC (RFC
                    the spec (RFC 7515 §4.1.6) and Himmelblau have it, a       7515 §4.1.6),
                    string with ``x5c_as_array=False``                         Himmelblau
    grant_type      ``"device_auth"``                                          MS-OAPXBC,
                                                                               Himmelblau
    iss             ``"aad:brokerplugin"``                                     MS-OAPXBC,
                                                                               Himmelblau
    request_nonce   ``nonce``                                                  MS-OAPXBC
    ==============  =========================================================  ===============
    """
    key = rsa2048(device_key, "device key")
    claims = {
        "grant_type": "device_auth",
        "iss": BROKER_ISSUER,
        "request_nonce": text(nonce, "nonce"),
    }
    header = {"typ": "JWT", "x5c": _x5c(key, device_certificate, x5c_as_array)}
    return formats.jws_sign(key, claims, "RS256", header)
