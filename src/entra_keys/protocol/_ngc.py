"""Windows Hello for Business (NGC): the key's id, its registration and the assertion it signs.

The NGC key is an RSA-2048 signing key that only its PIN opens; in a TPM the PIN is the key's
authorization value, so wrong PINs count toward the TPM's dictionary-attack lockout::

    ngc_key = store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=pin)
    ngc_key = store.load("ngc", pin=pin)                            # later

Sources: MS-OAPXBC 3.2.5.1.2.1.2 (the assertion), MS-KPP 3.1.5.1.1.1 (the registration body, as
libhimmelblau cites it), roadlib ``deviceauth.py`` (``create_hello_prt_assertion``,
``register_winhello_key``, ``get_privkey_kid``), libhimmelblau ``auth.rs``
(``HelloForBusinessAssertion``) and ``discovery.rs`` (``provision_key``).
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import formats
from .._json import b64_encode
from ..errors import InvalidData
from ..formats import PrivateKey, PublicKey
from ._common import DRS_URL, PRT_SCOPE, Request, json_request, rsa2048, text

#: Where an NGC key is registered (roadlib, Himmelblau).
NGC_KEY_URL = f"{DRS_URL}/EnrollmentServer/key/?api-version=1.0"
#: How far the assertion's ``iat`` and ``exp`` lie from now, by default (Himmelblau; roadlib 1 h).
NGC_ASSERTION_LIFETIME = datetime.timedelta(minutes=5)


def ngc_key_id(key: PrivateKey | PublicKey) -> str:
    """The NGC ``kid``: standard base64 of SHA-256 of the public BCRYPT_RSAKEY_BLOB (roadlib
    ``get_privkey_kid``, Himmelblau; the key as DRS registered it)."""
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) or key.key_size != 2048:
        raise InvalidData("an NGC key is an RSA-2048 key")
    digest = hashlib.sha256(formats.bcrypt_rsakey_blob(key)).digest()
    return b64_encode(digest)


def ngc_registration_request(ngc_key: PrivateKey, *, access_token: str) -> Request:
    """The NGC key registration: ``POST .../EnrollmentServer/key/?api-version=1.0``.

    ===========  ==============================================  ==========================
    part         value                                           source
    ===========  ==============================================  ==========================
    header       ``Authorization: Bearer <access_token>``: a     roadlib, Himmelblau
                 DRS token whose ``amr`` holds ``ngcmfa``
                 (the user signed in with MFA just now)
    kngc         base64 of the public BCRYPT_RSAKEY_BLOB         MS-KPP, roadlib,
                                                                 Himmelblau
    ===========  ==============================================  ==========================
    """
    blob = formats.bcrypt_rsakey_blob(rsa2048(ngc_key, "NGC key"))
    body = {"kngc": b64_encode(blob)}
    return json_request("POST", NGC_KEY_URL, body, access_token)


def ngc_assertion(
    ngc_key: PrivateKey,
    *,
    upn: str,
    nonce: str,
    scope: str = PRT_SCOPE,
    audience: str = "common",
    lifetime: datetime.timedelta = NGC_ASSERTION_LIFETIME,
    now: datetime.datetime | None = None,
) -> str:
    """The user's proof by the NGC key, the ``assertion`` of an NGC PRT request (RS256).

    ==================  =========================================================  ===========
    field               value                                                      source
    ==================  =========================================================  ===========
    header typ          ``"JWT"``                                                  MS-OAPXBC
    header alg          ``"RS256"``                                                MS-OAPXBC
    header use          ``"ngc"``                                                  MS-OAPXBC
    header kid          ``ngc_key_id(ngc_key)``                                    MS-OAPXBC,
                                                                                   roadlib,
                                                                                   Himmelblau
    iss                 ``upn``: the user                                          MS-OAPXBC
    aud                 ``audience``: ``"common"`` (see below)                     roadlib,
                                                                                   Himmelblau
    iat, exp            ``now - lifetime``, ``now + lifetime`` (epoch seconds)     roadlib,
                                                                                   Himmelblau
    request_nonce       ``nonce``                                                  MS-OAPXBC
    scope               ``scope``                                                  roadlib,
                                                                                   Himmelblau
    ==================  =========================================================  ===========

    MS-OAPXBC says ``aud`` is the server's issuer identifier; both peers send ``"common"``
    (roadlib: "not verified"), so that is the default and ``audience`` the choice. MS-OAPXBC
    says ``request_nonce`` is the same nonce as the enclosing PRT request's: pass that one
    (both peers fetch a second nonce; Entra accepts either). Both peers backdate ``iat`` by the
    lifetime for clock skew (roadlib 1 hour, Himmelblau 5 minutes).
    """
    key = rsa2048(ngc_key, "NGC key")
    if not isinstance(lifetime, datetime.timedelta) or lifetime <= datetime.timedelta(0):
        raise InvalidData("lifetime is a positive datetime.timedelta")
    moment = datetime.datetime.now(datetime.UTC) if now is None else now
    if not isinstance(moment, datetime.datetime) or moment.tzinfo is None:
        raise InvalidData("now is an aware datetime (UTC)")
    seconds = int(moment.timestamp())
    span = int(lifetime.total_seconds())
    claims = {
        "iss": text(upn, "upn"),
        "aud": text(audience, "audience"),
        "iat": seconds - span,
        "exp": seconds + span,
        "request_nonce": text(nonce, "nonce"),
        "scope": text(scope, "scope"),
    }
    header = {"typ": "JWT", "use": "ngc", "kid": ngc_key_id(key)}
    return formats.jws_sign(key, claims, "RS256", header)
