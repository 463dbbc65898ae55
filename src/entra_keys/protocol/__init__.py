"""The Entra messages a device makes with its keys, exactly as the service expects them.

entra_keys holds the keys, so it builds every message a key signs or carries and parses every
reply that carries key material. It does no HTTP: a ``Request`` is data (method, URL, headers,
body) for the agent's own client, and a parser takes the reply body. A join agent's flow::

    device_key = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport_key = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    join = registration_request(device_key, transport_key, access_token=drs_token,
                                domain="contoso.com", display_name="pc", os_version="Debian 13")
    registration = parse_registration_response(send(join), device_key=device_key)

    nonce = parse_nonce(send(nonce_request()))
    request = prt_request(device_key, registration.certificate, nonce=nonce,
                          username=upn, password=password)
    prt = parse_prt_response(send(request), transport_key, store, "prt")

    nonce = parse_nonce(send(nonce_request()))
    renewed = parse_refresh_response(
        send(refresh_prt_request(prt.session, prt.refresh_token, nonce=nonce)), prt.session)
    cookie = prt_cookie(prt.session, renewed.refresh_token, nonce=nonce)  # a fresh nonce each
    send(leave_request(registration.device_id))          # over mutual TLS, the device key's

Where the public sources disagree (MS-DVRJ and MS-OAPXBC, Microsoft's specifications;
ROADtools roadlib ``deviceauth.py``; Himmelblau's ``aad-join-spec.md`` and libhimmelblau) the
specification is followed, the choice is a parameter, and each docstring's field table says
who does what. Every malformed value or reply is an ``InvalidData`` with an exact message;
a key that does not open what it should is a ``DecryptionError``; the service's own error
object is a ``ServiceError`` (an InvalidData carrying ``error`` and ``error_description``).

Each parser says which kind of reply it takes: plain JSON, which Entra sends in the clear over
TLS (the nonces, the join, the first PRT reply), or a ``dir`` JWE under the PRT's session key
(renewals, app tokens), where a plain body is refused. Every reply is bounded before it is
decoded (``MAX_JSON_SIZE``, ``MAX_RESPONSE_SIZE``: 1 MiB).
"""

from ._common import (
    AUTHENTICATION_BROKER_CLIENT_ID,
    BROKER_ISSUER,
    BROKER_PLUGIN_CLIENT_ID,
    DRS_URL,
    JWT_BEARER,
    LOGIN_URL,
    OS_RELEASE,
    PRT_SCOPE,
    Request,
    WinVer,
    os_release_version,
)
from ._device import device_credential, nonce_request, prt_request
from ._drs import (
    JOIN_ATTRIBUTES,
    REGISTRATION_URL,
    JoinType,
    Registration,
    drs_nonce_request,
    leave_request,
    parse_drs_nonce,
    parse_registration_response,
    registration_request,
    tls_openssl_config,
)
from ._ngc import (
    NGC_ASSERTION_LIFETIME,
    NGC_KEY_URL,
    ngc_assertion,
    ngc_key_id,
    ngc_registration_request,
)
from ._replies import (
    KERBEROS_AES256_CTS,
    KERBEROS_KEY_NONE,
    PRT,
    KerberosTGT,
    parse_nonce,
    parse_prt_response,
    parse_refresh_response,
    parse_token_response,
)
from ._session import (
    SESSION_API_VERSION,
    TOKEN_AUDIENCE,
    app_token_request,
    prt_cookie,
    refresh_prt_request,
)

__all__ = [
    "AUTHENTICATION_BROKER_CLIENT_ID",
    "BROKER_ISSUER",
    "BROKER_PLUGIN_CLIENT_ID",
    "DRS_URL",
    "JOIN_ATTRIBUTES",
    "JWT_BEARER",
    "KERBEROS_AES256_CTS",
    "KERBEROS_KEY_NONE",
    "LOGIN_URL",
    "NGC_ASSERTION_LIFETIME",
    "NGC_KEY_URL",
    "OS_RELEASE",
    "PRT",
    "PRT_SCOPE",
    "REGISTRATION_URL",
    "SESSION_API_VERSION",
    "TOKEN_AUDIENCE",
    "JoinType",
    "KerberosTGT",
    "Registration",
    "Request",
    "WinVer",
    "app_token_request",
    "device_credential",
    "drs_nonce_request",
    "leave_request",
    "ngc_assertion",
    "ngc_key_id",
    "ngc_registration_request",
    "nonce_request",
    "os_release_version",
    "parse_drs_nonce",
    "parse_nonce",
    "parse_prt_response",
    "parse_refresh_response",
    "parse_registration_response",
    "parse_token_response",
    "prt_cookie",
    "prt_request",
    "refresh_prt_request",
    "registration_request",
    "tls_openssl_config",
]
