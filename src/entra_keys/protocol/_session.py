"""What the PRT session key signs: PRT renewal, app tokens and the PRT cookie.

Each is HS256 with a key derived from the session key by KDF v2 over a fresh 24-byte ctx and
the exact payload bytes (``PRTSession.sign_request``), header
``{"alg":"HS256","typ":"JWT","ctx":base64(ctx),"kdf_ver":2}``. Entra is rolling out a block of
KDF v1 signatures (error 5000611), so v2 is the only one offered.

Sources: MS-OAPXBC 3.1.5.1.3 (exchange a PRT for tokens), 3.1.5.2.1.3 and 3.2.5.2.1.1.1
(``x-ms-RefreshTokenCredential``); roadlib ``deviceauth.py`` (``renew_prt``,
``aad_brokerplugin_prt_auth``, ``request_token_with_sessionkey_signed_payload``) and ``auth.py``
(``create_prt_cookie_kdf_ver_2``); libhimmelblau ``auth.rs`` (``ExchangePRTPayload``,
``ExchangePRTForATPayload``, ``RefreshTokenCredentialPayload``).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidData
from ..session import PRTSession
from ._common import (
    BROKER_ISSUER,
    BROKER_PLUGIN_CLIENT_ID,
    JWT_BEARER,
    OS_RELEASE,
    PRT_SCOPE,
    Request,
    WinVer,
    form_request,
    optional_text,
    text,
    token_url,
    win_ver_claim,
)

#: ``aud`` of a session-key-signed token request (Himmelblau, roadlib).
TOKEN_AUDIENCE = "login.microsoftonline.com"  # noqa: S105 - an audience, not a secret
#: ``windows_api_version`` of session-key-signed requests (roadlib, Himmelblau).
SESSION_API_VERSION = "2.2"


def _session(prt_session: object) -> PRTSession:
    if not isinstance(prt_session, PRTSession):
        raise InvalidData(f"a PRTSession signs this, not {type(prt_session).__name__}")
    return prt_session


def _signed_request(
    prt_session: PRTSession, claims: dict[str, Any], tenant: str, tgt: bool
) -> Request:
    token = _session(prt_session).sign_request(claims)
    fields = [
        ("grant_type", JWT_BEARER),
        ("request", token),
        ("windows_api_version", SESSION_API_VERSION),
        ("client_info", "1"),
    ]
    if tgt:
        fields.append(("tgt", "true"))
    return form_request(token_url(tenant), fields)


def _claims(
    refresh_token: str, nonce: str, client_id: str, scope: str, win_ver: str | WinVer | None
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "client_id": text(client_id, "client_id"),
        "scope": text(scope, "scope"),
        "request_nonce": text(nonce, "nonce"),
        "refresh_token": text(refresh_token, "refresh_token"),
        "iss": BROKER_ISSUER,
        "grant_type": "refresh_token",
        "aud": TOKEN_AUDIENCE,
    }
    version = win_ver_claim(win_ver)
    if version is not None:
        claims["win_ver"] = version
    return claims


def refresh_prt_request(
    prt_session: PRTSession,
    refresh_token: str,
    *,
    nonce: str,
    client_id: str = BROKER_PLUGIN_CLIENT_ID,
    scope: str = PRT_SCOPE,
    tenant: str = "common",
    win_ver: str | WinVer | None = OS_RELEASE,
    tgt: bool = True,
) -> Request:
    """The PRT renewal: the PRT signed by its session key, asking for ``aza`` (a new PRT).

    ``POST https://login.microsoftonline.com/{tenant}/oauth2/token``; the reply is a ``dir``
    JWE that ``parse_refresh_response`` opens. Form and claims:

    ===================  ==============================================  =====================
    field                value                                           source
    ===================  ==============================================  =====================
    form grant_type      ``urn:ietf:params:oauth:grant-type:jwt-bearer``  roadlib, Himmelblau
    form request         the HS256 JWT (header alg, typ, ctx, kdf_ver 2)  MS-OAPXBC, roadlib
    form windows_api_    ``"2.2"``                                        roadlib, Himmelblau
    version
    form client_info     ``1``                                           roadlib, Himmelblau
    form tgt             ``true`` unless ``tgt=False``                   roadlib, Himmelblau
    refresh_token        the PRT                                         MS-OAPXBC
    request_nonce        ``nonce``                                       MS-OAPXBC
    iss                  ``"aad:brokerplugin"``                          roadlib, Himmelblau
    grant_type           ``"refresh_token"``                             MS-OAPXBC
    client_id            38aa3b87-a06d-4817-b275-7a316988d93b            roadlib, Himmelblau
    aud                  ``"login.microsoftonline.com"``                 Himmelblau (roadlib
                                                                         leaves it out)
    scope                ``scope``, "openid aza ugs"; must hold ``aza``  MS-OAPXBC, roadlib
    win_ver              ``win_ver``: this machine's os-release          Himmelblau (auth.rs
                         ``PRETTY_NAME VERSION_ID`` by default; a        ExchangePRTPayload),
                         string sends that, None none                    roadlib (renew_prt:
                                                                         a Windows build)
    ===================  ==============================================  =====================
    """
    if "aza" not in text(scope, "scope").split(" "):
        raise InvalidData(f"a PRT renewal asks for the scope 'aza' (MS-OAPXBC): {scope!r}")
    claims = _claims(refresh_token, nonce, client_id, scope, win_ver)
    return _signed_request(prt_session, claims, tenant, tgt)


def app_token_request(
    prt_session: PRTSession,
    refresh_token: str,
    *,
    nonce: str,
    client_id: str,
    resource: str | None = None,
    redirect_uri: str | None = None,
    scope: str = "openid",
    tenant: str = "common",
    win_ver: str | WinVer | None = OS_RELEASE,
    tgt: bool = True,
) -> Request:
    """An app's tokens for the PRT: signed by the session key, for ``client_id``.

    As ``refresh_prt_request`` (same form, same ``iss``, ``grant_type``, ``aud``), with:

    ==============  ==========================================================  ============
    claim           value                                                       source
    ==============  ==========================================================  ============
    client_id       the app's client id                                         MS-OAPXBC
    scope           ``scope``, "openid" (roadlib; Himmelblau "openid ugs");     MS-OAPXBC,
                    with ``aza`` the reply also carries a new PRT               roadlib
    resource        the resource of the access token, when given                MS-OAPXBC,
                                                                                roadlib,
                                                                                Himmelblau
    redirect_uri    when given, e.g. ``ms-appx-web://Microsoft.AAD.BrokerPlugin/  roadlib,
                    {client_id}`` (roadlib's default)                           Himmelblau
    ==============  ==========================================================  ============

    At least one of ``resource`` and ``redirect_uri`` is needed. roadlib sends no ``tgt`` for
    app tokens: ``tgt=False`` leaves it out.
    """
    claims = _claims(refresh_token, nonce, client_id, scope, win_ver)
    given = {
        "resource": optional_text(resource, "resource"),
        "redirect_uri": optional_text(redirect_uri, "redirect_uri"),
    }
    if not any(given.values()):
        raise InvalidData("an app token request names a resource or a redirect_uri")
    claims.update({name: value for name, value in given.items() if value is not None})
    return _signed_request(prt_session, claims, tenant, tgt)


def prt_cookie(prt_session: PRTSession, refresh_token: str, *, nonce: str) -> str:
    """The ``x-ms-RefreshTokenCredential`` header (or cookie) value: the PRT, signed by its
    session key, for a browser-style sign-in.

    ==============  ==================================================  =====================
    field           value                                               source
    ==============  ==================================================  =====================
    header          alg HS256, typ JWT, ctx, kdf_ver 2                  MS-OAPXBC, roadlib
    refresh_token   the PRT                                             MS-OAPXBC
    request_nonce   ``nonce``                                           MS-OAPXBC
    is_primary      ``"true"``                                          roadlib
    ==============  ==================================================  =====================
    """
    claims = {
        "refresh_token": text(refresh_token, "refresh_token"),
        "is_primary": "true",
        "request_nonce": text(nonce, "nonce"),
    }
    return _session(prt_session).sign_request(claims)
