"""What every message shares: the ``Request`` type, the service URLs, the client ids and the
checks on caller-given values (a bad value is InvalidData, never a malformed request)."""

from __future__ import annotations

import enum
import functools
import platform
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._json import b64_encode, dump_object
from ..errors import InvalidData
from ..formats import PrivateKey

if TYPE_CHECKING:  # cryptography.x509 costs ~40 ms to import: loaded where a certificate is read
    from cryptography import x509

#: The Device Registration Service (MS-DVRJ; join, leave, key registration).
DRS_URL = "https://enterpriseregistration.windows.net"
#: The Entra token service (MS-OAPXBC; nonce, PRT, session-key-signed requests).
LOGIN_URL = "https://login.microsoftonline.com"
#: The Windows broker plugin's client id: PRT by password or NGC, PRT renewal (roadlib,
#: Himmelblau ``BROKER_CLIENT_IDENT``, the MS-OAPXBC §4 example).
BROKER_PLUGIN_CLIENT_ID = "38aa3b87-a06d-4817-b275-7a316988d93b"
#: The Microsoft Authentication Broker's client id: PRT by refresh token (roadlib, Himmelblau
#: ``BROKER_APP_ID``).
AUTHENTICATION_BROKER_CLIENT_ID = "29d9ed98-a469-4536-ade2-f981bc1d605e"
#: The scope of a PRT request (MS-OAPXBC: at least ``aza`` and ``openid``; roadlib, Himmelblau).
PRT_SCOPE = "openid aza ugs"
#: The OAuth grant of every signed request (MS-OAPXBC 3.2.5.1.2.1).
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: ``iss`` of session-key-signed requests and of the device credential.
BROKER_ISSUER = "aad:brokerplugin"


class WinVer(enum.Enum):
    """``win_ver``'s default, read when a message is built: this machine's os-release."""

    #: ``PRETTY_NAME VERSION_ID`` of os-release(5), as Himmelblau sends it (libhimmelblau
    #: ``auth.rs``: every PRT, renewal and app-token payload); not sent where there is none.
    OS_RELEASE = "os-release"


#: ``win_ver=``'s default (``WinVer.OS_RELEASE``): pass a string to send another, None for none.
OS_RELEASE = WinVer.OS_RELEASE


@functools.cache
def os_release_version() -> str | None:
    """``PRETTY_NAME VERSION_ID`` of this machine's os-release(5) (Himmelblau's ``win_ver``),
    read once; None where there is no os-release file or it names nothing."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return None
    parts = [release.get("PRETTY_NAME", "").strip(), release.get("VERSION_ID", "").strip()]
    value = " ".join(part for part in parts if part)
    return value if value and not _HEADER_UNSAFE.search(value) else None


def win_ver_claim(value: str | WinVer | None) -> str | None:
    """The ``win_ver`` claim to send: the os-release default, the string given, or None."""
    if value is WinVer.OS_RELEASE:
        return os_release_version()
    return optional_text(value, "win_ver")


_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
# A tenant is a GUID, a domain name or "common" / "organizations": one safe path segment.
_TENANT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Request:
    """An HTTP request as data, for the agent's own client: nothing here talks to a network.

    Its ``repr`` names the headers but shows neither their values nor the body, which carry
    bearer tokens, passwords and refresh tokens.
    """

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    def __repr__(self) -> str:
        names = ", ".join(self.headers)
        return f"<Request {self.method} {self.url} headers=[{names}] body={len(self.body)} bytes>"


def json_request(method: str, url: str, body: Mapping[str, Any], bearer: str) -> Request:
    """A JSON request with a bearer token, the way DRS takes it."""
    headers = {
        "Authorization": f"Bearer {header_value(bearer, 'access_token')}",
        "Content-Type": _JSON,
        "Accept": _JSON,
    }
    # What the strict reader reads back member for member (no name that is no str, written as
    # one already there), ASCII.
    return Request(method, url, headers, dump_object(body, "the request body", ascii_only=True))


def form_request(url: str, fields: Sequence[tuple[str, str]]) -> Request:
    """A POST with a form body, the way the token service takes it."""
    headers = {"Content-Type": _FORM, "Accept": _JSON}
    error: str | None = None
    try:
        body = urllib.parse.urlencode(list(fields)).encode("ascii")
    except (UnicodeEncodeError, TypeError) as exc:  # a lone surrogate: not UTF-8
        error = f"a form field cannot be encoded ({type(exc).__name__}: {exc.args[0]!r:.80})"
    if error is not None:  # raised here, so that no chained exception holds the value
        raise InvalidData(error)
    return Request("POST", url, headers, body)


def token_url(tenant: str) -> str:
    """``https://login.microsoftonline.com/{tenant}/oauth2/token`` (the v1 endpoint)."""
    return f"{LOGIN_URL}/{tenant_segment(tenant)}/oauth2/token"


def tenant_segment(tenant: str) -> str:
    """The tenant as one URL path segment (GUID, domain or "common"), else InvalidData."""
    text(tenant, "tenant")
    if _TENANT.fullmatch(tenant) is None or ".." in tenant:
        raise InvalidData(f"tenant {tenant!r} is not a tenant id, a domain or 'common'")
    return tenant


def text(value: object, name: str) -> str:
    """A non-empty str, else InvalidData naming the parameter."""
    if not isinstance(value, str):
        raise InvalidData(f"{name} is a str, not {type(value).__name__}")
    if not value:
        raise InvalidData(f"{name} is empty")
    return value


def optional_text(value: object, name: str) -> str | None:
    """None, or a non-empty str."""
    return None if value is None else text(value, name)


def header_value(value: object, name: str) -> str:
    """A non-empty str with no control character (no header injection through CR/LF)."""
    if _HEADER_UNSAFE.search(text(value, name)):
        raise InvalidData(f"{name} holds a control character and cannot go in a header")
    return str(value)


def rsa2048(key: object, name: str) -> rsa.RSAPrivateKey:
    """An RSA-2048 private key (device, transport and NGC keys are), else InvalidData."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidData(f"the {name} is an RSA-2048 private key, not {type(key).__name__}")
    if key.key_size != 2048:
        raise InvalidData(f"the {name} is an RSA-2048 key, not RSA-{key.key_size}")
    return key


def same_public_key(a: object, b: object) -> bool:
    """True when two RSA keys (public or private) have the same public half."""
    pa = a.public_key() if isinstance(a, rsa.RSAPrivateKey) else a
    pb = b.public_key() if isinstance(b, rsa.RSAPrivateKey) else b
    if not isinstance(pa, rsa.RSAPublicKey) or not isinstance(pb, rsa.RSAPublicKey):
        return False
    return pa.public_numbers() == pb.public_numbers()


def certificate_x5c(device_key: PrivateKey, certificate: x509.Certificate) -> str:
    """The device certificate as ``x5c`` carries it (RFC 7515 §4.1.6: standard base64 of DER),
    once it is known to be the certificate of this device key."""
    from cryptography import x509

    if not isinstance(certificate, x509.Certificate):
        raise InvalidData(
            f"the device certificate is an x509.Certificate, not {type(certificate).__name__}"
        )
    if not same_public_key(device_key, certificate.public_key()):
        raise InvalidData("the device certificate is not the certificate of this device key")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return b64_encode(der)
