"""The PRT session key: import it from ``session_key_jwe``, derive keys, sign requests, decrypt.

Entra sends the Primary Refresh Token with a 32-byte session key encrypted to the transport key
(``session_key_jwe``). Every later use of the PRT proves possession of that key through a key
derived from it (MS-OAPXBC 3.1.5.1.3.3, SP 800-108 counter mode with HMAC-SHA256)::

    derived = HMAC-SHA256(session_key, 00000001 || "AzureAD-SecureConversation" || 00
                                       || context || 00000100)

with ``context`` = ctx (KDF v1) or SHA-256(ctx || payload) (KDF v2). The session key stays in
the provider (a keyed-hash object in a TPM), so each derivation is one ``hmac_sha256`` call, one
TPM2_HMAC; a derived key is a per-request key and is used here, in Python, for one HS256
signature or one response decryption.

``ctx`` travels in JOSE headers as *standard* base64 with padding (RFC 4648 §4), as Windows and
the open-source peers write it (a Windows request header: ``"ctx": "ET4R9hXL...a3/Mz1Y"``); all
other JOSE segments are base64url without padding. Both are read strictly (``_json``).

A reply to a session-key-signed request is a compact ``dir`` JWE under that session (MS-OAPXBC
3.2.5.1.3.3): its header is exactly ``{"alg":"dir","enc":"A256GCM","ctx":...}`` (``typ``,
``cty`` and ``kid``, strings that change nothing, are let through), its Encrypted Key is empty
(RFC 7516 §5.2 step 10), and it comes in one of the two forms Entra writes under that label: a
12-byte IV with a 16-byte tag is AES-256-GCM (AAD the ASCII header segment); a 16-byte IV with
an *empty* tag is AES-256-CBC + PKCS#7, which nothing authenticates (the MS-OAPXBC exchange
captured in kanidm/compact-jwt's ``ms_oapxbc`` test is such a reply, a PRT renewal). Any other
``enc``, ``alg``, header member or Encrypted Key is InvalidData (the header is public: refused
before decryption begins); any other IV or tag length is the DecryptionError below.

Whether a CBC reply opens tells whoever altered it something of its plaintext (a chosen IV and
spliced blocks make "is it still a JSON object" a byte-by-byte oracle), so the CBC form is
opened only where the caller says so: ``allow_cbc=True``, or ``PRTSession.decrypt_reply``, which
the protocol's reply parsers use with the reply's expected shape (required members, no error
object: a CBC reply that is not the reply expected is the one DecryptionError, nothing of its
plaintext in any message). ``require_gcm=True`` refuses it in every case; both switches are
True or False only (a TypeError otherwise: "no" would read as true). A ``PRTSession`` counts
the CBC replies that fail: each takes an attempt under a lock before anything is derived,
given back only once it opened (and was read), so that no more than ``CBC_FAILURE_LIMIT`` are
answered even when they arrive at once; that many failed, it refuses CBC replies for
``CBC_LOCKOUT`` seconds, so an oracle that needs thousands of answers gets a few an hour.

So that no padding oracle is offered, every failure once decryption begins (form, tag, padding,
UTF-8, JSON, not an object) is the same ``DecryptionError`` with the same message; bad padding is
followed by the same JSON parse as good padding, and the padding check runs the same operations
whatever the pad byte. A response must decrypt to a JSON object. A plain JSON body is never
passed as if decrypted: the service's error object is a ``ServiceError`` carrying its ``error``,
anything else InvalidData. Bodies over ``MAX_RESPONSE_SIZE`` (1 MiB unless set) are refused
before any decoding, a ``session_key_jwe`` over ``MAX_SESSION_KEY_JWE`` before it is split.

Nothing here logs key material, puts it in an exception message or shows it in a ``repr``: not
the session key, not a derived key, not a decrypted response.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._json import (
    MAX_JSON_SIZE,
    Members,
    as_bytes,
    b64_encode,
    b64url_decode,
    b64url_encode,
    dump_object,
    is_json_object,
    load_object,
)
from .errors import (
    DecryptionError,
    EntraKeysError,
    InvalidData,
    KeyUsageError,
    ServiceError,
    UnsupportedAlgorithm,
)
from .provider import EntraPrivateKey, KeyUsage, Provider, SessionKey
from .store.keystore import KeyStore

__all__ = [
    "CBC_FAILURE_LIMIT",
    "CBC_LOCKOUT",
    "CTX_BYTES",
    "KDF_LABEL",
    "MAX_CTX_BYTES",
    "MAX_RESPONSE_SIZE",
    "MAX_SESSION_KEY_JWE",
    "SESSION_KEY_ALGORITHMS",
    "PRTSession",
    "decrypt_jwe",
    "decrypt_response",
    "delete_session_key",
    "derive_key",
    "import_session_key",
    "kdf_context",
    "kdf_input",
    "parse_session_key_jwe",
    "sign_request",
]

log = logging.getLogger(__name__)

#: The SP 800-108 label of every Entra derived key.
KDF_LABEL = b"AzureAD-SecureConversation"
#: The length of the random ctx a request carries.
CTX_BYTES = 24
#: The longest ctx whose KDF input still fits one TPM2_HMAC (1024 bytes, TPM2B_MAX_BUFFER).
MAX_CTX_BYTES = 1024 - (4 + len(KDF_LABEL) + 1 + 4)
#: The default limit on a response body, in bytes: a larger one is refused before decoding.
MAX_RESPONSE_SIZE = 1 << 20
#: The longest ``session_key_jwe`` taken, in characters (an RSA-4096 key's is under 1,000).
MAX_SESSION_KEY_JWE = 1 << 14
#: How many AES-CBC replies may fail to open on a ``PRTSession`` before it refuses CBC replies.
CBC_FAILURE_LIMIT = 3
#: How long, in seconds, a ``PRTSession`` refuses CBC replies once that many failed.
CBC_LOCKOUT = 600.0

_T = TypeVar("_T")

# Counter i = 1 and the length L = 256 bits, 32-bit big-endian; one HMAC block is the whole key.
_KDF_PREFIX = (1).to_bytes(4, "big") + KDF_LABEL + b"\x00"
_KDF_SUFFIX = (256).to_bytes(4, "big")
_GCM_IV_BYTES = 12
_GCM_TAG_BYTES = 16
_CBC_IV_BYTES = 16
_AES_BLOCK_BYTES = 16
#: The one ``enc`` Entra writes on its replies, whether the reply is GCM or CBC.
_ENC = "A256GCM"
# The header of a reply: Entra's members, and RFC 7516 §4.1's informational ones, ignored.
_REPLY_HEADER = ("alg", "enc", "ctx")
_REPLY_HEADER_IGNORED = ("typ", "cty", "kid")
_REPLY_HEADER_SET = frozenset(_REPLY_HEADER)
# A plain body is told from a JWE by its first character past at most this much whitespace.
_PLAIN_LOOKAHEAD = 64
# The one message of every response that fails once decryption begins: a padding oracle needs
# failures it can tell apart, so none carries a detail (see _open_response).
_NOT_DECRYPTED = (
    "the response does not decrypt to a JSON object (another session key, a damaged or altered "
    "response, or the unauthenticated AES-CBC form where it is not allowed: see allow_cbc)"
)
#: The ``alg`` a session_key_jwe may carry, and the OAEP hash each means (RFC 7518 §4.3):
#: RSA-OAEP (SHA-1), what Entra's PRT replies carry, and RSA-OAEP-256 (SHA-256), what MSAL's
#: bound refresh tokens carry.
SESSION_KEY_ALGORITHMS = {"RSA-OAEP": "sha1", "RSA-OAEP-256": "sha256"}
_SESSION_KEY_ENC = "A256GCM"
_SESSION_KEY_JWE_PARTS = ((2, "IV"), (3, "ciphertext"), (4, "tag"))


# -- compact JOSE ---------------------------------------------------------------------------


def _segments(token: str, count: int, what: str) -> list[str]:
    if not isinstance(token, str):
        raise InvalidData(f"{what} is a str, not {type(token).__name__}")
    parts = token.split(".")
    if len(parts) != count:
        raise InvalidData(f"{what} has {count} dot-separated segments, this one has {len(parts)}")
    return parts


def _segment(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except InvalidData as exc:
        raise InvalidData(f"{what}: {exc}") from exc


def _check_ctx(ctx: bytes) -> bytes:
    if type(ctx) is not bytes:  # the common case first: derivation is a hot path
        if not isinstance(ctx, bytes | bytearray | memoryview):
            raise TypeError(f"ctx is bytes, not {type(ctx).__name__}")
        ctx = as_bytes(ctx, "ctx")
    if not 1 <= len(ctx) <= MAX_CTX_BYTES:
        raise InvalidData(f"ctx is {len(ctx)} bytes; it must be 1 to {MAX_CTX_BYTES}")
    return ctx


# -- the session key ------------------------------------------------------------------------


def parse_session_key_jwe(jwe: str) -> bytes:
    """The encrypted key (segment 1) of a compact session_key_jwe: ``{"alg":"RSA-OAEP",
    "enc":"A256GCM"}`` or ``{"alg":"RSA-OAEP-256","enc":"A256GCM"}``.

    Every segment must be strict base64url, the IV 12 bytes and the tag 16 (A256GCM; with the
    one-byte ciphertext they carry nothing); a JWE over ``MAX_SESSION_KEY_JWE`` characters is
    InvalidData before it is split, and so is any other ``alg`` (RSA1_5, RSA-OAEP-384, dir...)
    or ``enc``.
    """
    return _read_session_key_jwe(jwe)[0]


def _read_session_key_jwe(jwe: str) -> tuple[bytes, str]:
    """The encrypted key of a session_key_jwe and the OAEP hash its ``alg`` names."""
    if isinstance(jwe, str) and len(jwe) > MAX_SESSION_KEY_JWE:
        raise InvalidData(
            f"a session_key_jwe is {len(jwe)} characters, over the limit of {MAX_SESSION_KEY_JWE}"
        )
    parts = _segments(jwe.strip() if isinstance(jwe, str) else jwe, 5, "a session_key_jwe")
    header = load_object(_segment(parts[0], "session_key_jwe header"), "session_key_jwe header")
    alg = header.get("alg")
    oaep_hash = SESSION_KEY_ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if oaep_hash is None:
        raise InvalidData(
            f"session_key_jwe header: alg is {_shown(alg)}, not 'RSA-OAEP' or 'RSA-OAEP-256'"
        )
    if header.get("enc") != _SESSION_KEY_ENC:
        raise InvalidData(
            f"session_key_jwe header: enc is {_shown(header.get('enc'))}, not {_SESSION_KEY_ENC!r}"
        )
    if "crit" in header or "zip" in header:
        raise InvalidData("session_key_jwe header: 'crit' and 'zip' are not supported")
    encrypted_key = _segment(parts[1], "session_key_jwe encrypted key")
    iv, _, tag = (_segment(parts[i], f"session_key_jwe {n}") for i, n in _SESSION_KEY_JWE_PARTS)
    # Not authenticated here (the GCM key is the session key, which only the TPM holds), but
    # of the form A256GCM prescribes (RFC 7518 §5.3) and Entra writes: nothing else is taken.
    if len(iv) != _GCM_IV_BYTES or len(tag) != _GCM_TAG_BYTES:
        raise InvalidData(
            f"session_key_jwe: an A256GCM JWE has a {_GCM_IV_BYTES}-byte IV and a "
            f"{_GCM_TAG_BYTES}-byte tag (RFC 7518 §5.3), not {len(iv)} and {len(tag)} bytes"
        )
    if not encrypted_key:
        raise InvalidData("session_key_jwe: the encrypted key segment is empty")
    return encrypted_key, oaep_hash


def import_session_key(
    provider: Provider, transport_key: EntraPrivateKey, session_key_jwe: str
) -> SessionKey:
    """Decrypt the session key with the transport key and bind it to the provider (a TPM object).

    The JWE's ``alg`` says how it is wrapped: RSA-OAEP (SHA-1, Entra's PRT replies) or
    RSA-OAEP-256 (SHA-256, MSAL's bound refresh tokens); the transport key decrypts either. In a
    TPM both steps run under parameter encryption, so the key never crosses the TPM interface
    in the clear. A JWE for another transport key is a DecryptionError.
    """
    encrypted_key, oaep_hash = _read_session_key_jwe(session_key_jwe)
    key = provider.import_session_key(transport_key, encrypted_key, oaep_hash=oaep_hash)
    log.debug("imported a session key into the %s provider", provider.kind)
    return key


# -- derived keys ---------------------------------------------------------------------------


def kdf_context(ctx: bytes, *, kdf_version: int = 2, payload: bytes | None = None) -> bytes:
    """The SP 800-108 context: ctx itself (v1) or SHA-256(ctx || payload) (v2)."""
    ctx = _check_ctx(ctx)
    if kdf_version == 1:
        if payload is not None:
            raise InvalidData("KDF v1 takes no payload (the payload is hashed only in v2)")
        return ctx
    if kdf_version == 2:
        if payload is None:
            raise InvalidData("KDF v2 needs the exact payload bytes of the JWT")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"the payload is bytes, not {type(payload).__name__}")
        return hashlib.sha256(ctx + as_bytes(payload, "the payload")).digest()
    raise UnsupportedAlgorithm(f"KDF version {kdf_version!r}: versions 1 and 2 are offered")


def kdf_input(context: bytes) -> bytes:
    """The one HMAC block of the KDF: counter 1, label, 0x00, context, L = 256 bits."""
    if type(context) is not bytes:  # bytes(5) would be five zero bytes: only bytes-likes
        context = as_bytes(context, "the KDF context")
    return _KDF_PREFIX + context + _KDF_SUFFIX


def derive_key(
    session_key: SessionKey, ctx: bytes, *, kdf_version: int = 2, payload: bytes | None = None
) -> bytes:
    """The 32-byte derived key for this ctx (and payload in v2): one TPM2_HMAC in a TPM."""
    if not isinstance(session_key, SessionKey):
        raise TypeError(f"a SessionKey is needed, not {type(session_key).__name__}")
    context = kdf_context(ctx, kdf_version=kdf_version, payload=payload)
    return session_key.hmac_sha256(kdf_input(context))


# -- requests -------------------------------------------------------------------------------


def _payload_bytes(payload: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        body = as_bytes(payload, "the request payload", max_size=MAX_JSON_SIZE)
        load_object(body, "the request payload")
        return body
    if isinstance(payload, Mapping):
        # Only what the strict reader reads back member for member: a name that is no str
        # (json.dumps writes 1 and "1" as one name twice), a name twice, NaN, a lone surrogate
        # or a number out of range would be signed bytes that services read differently.
        return dump_object(payload, "the request payload")
    raise TypeError(f"a request payload is a mapping or bytes, not {type(payload).__name__}")


def sign_request(session_key: SessionKey, payload: Mapping[str, Any] | bytes) -> str:
    """A compact JWS ``{"alg":"HS256","typ":"JWT","ctx":...,"kdf_ver":2}``, fresh ctx, KDF v2.

    A mapping is serialized once, compactly, and those bytes are hashed and sent; bytes (a strict
    JSON object of at most ``MAX_JSON_SIZE``, 1 MiB) are hashed and sent as they are. Either way
    the payload is one the strict reader takes: a mapping with a member name that is no str, or
    whose JSON has a member twice or a number out of range, is InvalidData.
    """
    body = _payload_bytes(payload)
    ctx = os.urandom(CTX_BYTES)
    header = {"alg": "HS256", "typ": "JWT", "ctx": b64_encode(ctx), "kdf_ver": 2}
    header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))
    signing_input = f"{header_b64}.{b64url_encode(body)}"
    derived = derive_key(session_key, ctx, kdf_version=2, payload=body)
    signature = hmac.new(derived, signing_input.encode("ascii"), hashlib.sha256).digest()
    log.debug("signed a %d-byte request payload with a derived key (KDF v2)", len(body))
    return f"{signing_input}.{b64url_encode(signature)}"


# -- responses ------------------------------------------------------------------------------


def _check_limit(limit: int) -> int:
    """A response size limit: an int of at least 1 (a bool or another type is a caller's bug)."""
    if type(limit) is not int:
        raise TypeError(f"max_response_size is an int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"max_response_size is at least 1 byte, not {limit}")
    return limit


def _refuse_oversize(size: int, limit: int, unit: str = "bytes") -> None:
    if size > limit:
        raise InvalidData(
            f"the response is {size} {unit}, over the limit of {limit} bytes (max_response_size)"
        )


def _pkcs7_strip(padded: bytes) -> tuple[bytes, bool]:
    """The text without its PKCS#7 padding and whether that padding was valid; never raises.

    The same operations run whatever the pad byte says: a pad byte of 0 or over 16 is taken as
    16 (and marked bad) by arithmetic, not by a branch, the last 16 bytes are always checked,
    and a text is always returned to parse, so that bad padding costs what good padding
    followed by bad JSON costs.
    """
    count = padded[-1]
    # 1 when count is 0 or over 16 ((count - 1) mod 256 over 15), else 0.
    out_of_range = (((count - 1) & 0xFF) + 0xF0) >> 8
    strip = count + out_of_range * (_AES_BLOCK_BYTES - count)  # 1 to 16
    bad = out_of_range
    for back in range(1, _AES_BLOCK_BYTES + 1):
        in_pad = ((back - strip - 1) >> 8) & 1  # 1 for the last `strip` bytes
        bad |= in_pad * (padded[-back] ^ count)
    return padded[: len(padded) - strip], bad == 0


def _reply_form(iv: bytes, tag: bytes) -> str | None:
    """Which of the two forms Entra writes a reply is in, by its IV and tag lengths together:
    "gcm" (12 and 16), "cbc" (16 and 0), else None."""
    if len(iv) == _GCM_IV_BYTES and len(tag) == _GCM_TAG_BYTES:
        return "gcm"
    if len(iv) == _CBC_IV_BYTES and not tag:
        return "cbc"
    return None


def _open_response(
    key: bytes,
    form: str,
    iv: bytes,
    ciphertext: bytes,
    tag: bytes,
    aad: bytes,
    *,
    json_limit: int | None,
    cbc_size: int | None = None,
) -> bytes | None:
    """The plaintext if it decrypts (and, with ``json_limit``, is a JSON object of at most that
    many bytes; under CBC, with ``cbc_size``, is that long), else None, the same for every
    failure. CBC does not authenticate the length: a wrong one cannot be told from another
    key's valid padding.

    Nothing here raises or returns early on the padding: the candidate text is JSON-parsed
    whether or not the padding was valid, and both results are combined at the end.
    """
    if form == "gcm":
        try:
            plain = AESGCM(key).decrypt(iv, ciphertext + tag, aad)
        except InvalidTag:
            return None
        padding_ok = size_ok = True
    elif ciphertext and not len(ciphertext) % _AES_BLOCK_BYTES:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        plain, padding_ok = _pkcs7_strip(decryptor.update(ciphertext) + decryptor.finalize())
        size_ok = cbc_size is None or len(plain) == cbc_size
    else:
        return None
    is_object = json_limit is None or is_json_object(plain, max_size=json_limit)
    return plain if is_object and padding_ok and size_ok else None


def decrypt_response(
    session_key: SessionKey,
    body: bytes | str,
    *,
    max_response_size: int = MAX_RESPONSE_SIZE,
    require_gcm: bool = False,
    allow_cbc: bool = False,
) -> bytes:
    """The plaintext of a reply to a session-key-signed request, a UTF-8 JSON object: the
    ``dir`` JWE opened (KDF v1 over the header's ctx).

    12-byte IV and 16-byte tag: AES-256-GCM, AAD the header segment. 16-byte IV and empty tag:
    AES-256-CBC + PKCS#7, unauthenticated, opened only with ``allow_cbc=True`` (and never with
    ``require_gcm=True``): whether such a reply opens tells whoever altered it about its
    plaintext, and nothing here counts the attempts (``PRTSession`` does; the protocol's parsers
    also check the reply's shape). A body over ``max_response_size`` bytes (default 1 MiB) is
    InvalidData before any decoding, as are a malformed JWE and a header other than Entra's. A
    plain JSON body is never taken: the service's error object is a ``ServiceError`` (its
    ``error`` and ``error_description``), anything else InvalidData. Every failure once
    decryption begins (form, tag, padding, UTF-8, JSON, not an object, CBC where not allowed)
    is one DecryptionError with one message, so that no padding oracle is offered.
    """
    cbc = _switch(allow_cbc, "allow_cbc") and not _switch(require_gcm, "require_gcm")
    limit = _check_limit(max_response_size)
    return _open_jwe(
        session_key,
        _response_text(body, limit),
        what="an encrypted response",
        json_limit=limit,
        cbc=cbc,
    )


def _response_text(body: bytes | str, limit: int) -> str:
    """A response body as the text of a compact JWE, refused by its size before anything is
    decoded; a plain JSON body is refused (``_plain_refusal``)."""
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            size = memoryview(body).nbytes
        except ValueError:  # a released memoryview
            raise InvalidData("a response body is a released memoryview") from None
        _refuse_oversize(size, limit)
        raw = as_bytes(body, "a response body")
        if raw[:_PLAIN_LOOKAHEAD].lstrip().startswith(b"{"):
            raise _plain_refusal(raw, limit)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidData("an encrypted response is ASCII (a compact JWE)") from None
    if isinstance(body, str):
        _refuse_oversize(len(body), limit, "characters")
        if body[:_PLAIN_LOOKAHEAD].lstrip().startswith("{"):
            raw = body.encode("utf-8", "surrogatepass")
            _refuse_oversize(len(raw), limit)
            raise _plain_refusal(raw, limit)
        return body
    raise TypeError(f"a response body is bytes or str, not {type(body).__name__}")


def decrypt_jwe(
    session_key: SessionKey,
    token: str,
    *,
    max_size: int = MAX_RESPONSE_SIZE,
    size: int | None = None,
    require_gcm: bool = False,
    allow_cbc: bool = False,
) -> bytes:
    """The plaintext bytes of a ``dir`` JWE that need not hold JSON, such as a Kerberos
    ``clientKey`` of ``tgt_ad`` / ``tgt_cloud`` (raw key bytes): KDF v1 over the header's ctx,
    the GCM form of ``decrypt_response``, or its CBC form with ``allow_cbc=True`` (never with
    ``require_gcm=True``): whether a CBC token opens is a padding oracle on it unless ``size``
    pins its length.

    A token over ``max_size`` characters, a malformed JWE or a header other than Entra's is
    InvalidData; every failure once decryption begins (form, tag, padding) is one
    DecryptionError with one message, so no padding oracle is offered. With ``size``, an
    AES-CBC plaintext of another length is that same error (CBC does not authenticate it, so it
    may be another key's); under GCM the length is authenticated and left to the caller to
    check.
    """
    cbc = _switch(allow_cbc, "allow_cbc") and not _switch(require_gcm, "require_gcm")
    limit = _check_limit(max_size)
    if not isinstance(token, str):
        raise TypeError(f"a JWE is a str, not {type(token).__name__}")
    _refuse_oversize(len(token), limit, "characters")
    return _open_jwe(session_key, token, what="a JWE", json_limit=None, cbc_size=size, cbc=cbc)


class _Jwe(NamedTuple):
    """A compact ``dir`` JWE of Entra's form and header, read but not opened."""

    header_b64: str
    ctx: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes
    #: "gcm", "cbc", or None for any other IV and tag lengths (``_reply_form``).
    form: str | None


def _read_jwe(text: str, what: str) -> _Jwe:
    """A compact ``dir`` JWE's segments, its form and header checked (InvalidData): all public,
    so refused before any key is derived."""
    parts = _segments(text.strip(), 5, f"{what} (compact JWE)")
    header_b64 = parts[0]
    header = Members.load(_segment(header_b64, "JWE header"), "JWE header")
    # crit, zip and every parameter that would name another key or algorithm are refused here
    # (Entra's exact three members need no search).
    if header.value.keys() != _REPLY_HEADER_SET:
        header.only(_REPLY_HEADER, _REPLY_HEADER_IGNORED)
        for name in _REPLY_HEADER_IGNORED:
            header.optional_text(name)  # RFC 7516 §4.1.9-11: strings
    if header.value["alg"] != "dir":
        raise InvalidData(f"JWE header: alg is {_shown(header.value['alg'])}, not 'dir'")
    if header.value["enc"] != _ENC:
        raise InvalidData(
            f"JWE header: enc is {_shown(header.value['enc'])}, not {_ENC!r} (the one enc "
            "Entra writes, over GCM and CBC alike)"
        )
    try:
        ctx = _check_ctx(header.base64("ctx"))
    except InvalidData as exc:
        raise InvalidData(f"JWE header ctx: {exc}") from exc
    if parts[1]:
        # RFC 7516 §5.2 step 10: with direct encryption the JWE Encrypted Key is empty. It is
        # outside the GCM tag (AAD is the header alone), so it is checked here, undecoded.
        raise InvalidData(
            f"JWE encrypted key: a dir JWE's is empty (RFC 7516 §5.2), this one is "
            f"{len(parts[1])} characters"
        )
    iv = _segment(parts[2], "JWE IV")
    ciphertext = _segment(parts[3], "JWE ciphertext")
    tag = _segment(parts[4], "JWE tag")
    return _Jwe(header_b64, ctx, iv, ciphertext, tag, _reply_form(iv, tag))


def _form_taken(jwe: _Jwe, cbc: bool) -> str:
    """The one DecryptionError for a form not taken (the lengths are public: before any key is
    derived). From here on every failure is the same: form, lengths, tag, padding, content."""
    if jwe.form is None or (jwe.form == "cbc" and not cbc):
        raise DecryptionError(_NOT_DECRYPTED)
    return jwe.form


def _decrypt(
    session_key: SessionKey,
    jwe: _Jwe,
    form: str,
    *,
    json_limit: int | None,
    cbc_size: int | None,
) -> bytes:
    """The plaintext of a JWE in a form taken (``_form_taken``), or the one DecryptionError."""
    key = derive_key(session_key, jwe.ctx, kdf_version=1)
    plain = _open_response(
        key,
        form,
        jwe.iv,
        jwe.ciphertext,
        jwe.tag,
        jwe.header_b64.encode("ascii"),
        json_limit=json_limit,
        cbc_size=cbc_size,
    )
    if plain is None:
        # Raised outside any except block: no chained exception holds the failed plaintext.
        raise DecryptionError(_NOT_DECRYPTED)
    log.debug("decrypted a %d-byte JWE", len(plain))
    return plain


def _open_jwe(
    session_key: SessionKey,
    text: str,
    *,
    what: str,
    json_limit: int | None,
    cbc: bool,
    cbc_size: int | None = None,
) -> bytes:
    """Check a compact ``dir`` JWE's form and header (InvalidData) and open it (one
    DecryptionError), the CBC form only with ``cbc``; nothing counts (``PRTSession._open``
    does)."""
    jwe = _read_jwe(text, what)
    form = _form_taken(jwe, cbc)
    return _decrypt(session_key, jwe, form, json_limit=json_limit, cbc_size=cbc_size)


def _switch(value: object, name: str) -> bool:
    """A caller's switch: True or False only (a string such as "no" is a caller's bug that
    truthiness would read as True)."""
    if type(value) is not bool:
        raise TypeError(f"{name} is True or False, not {value!r:.40}")
    return value


def _identity(plain: bytes) -> bytes:
    return plain


def _shown(value: object) -> str:
    """A header value for a message: a short repr (the header comes from outside)."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:40] + "..."


def _plain_refusal(raw: bytes, limit: int) -> InvalidData:
    """Why a plain JSON body is refused where the session encrypts: the service's error object
    (a ServiceError carrying it), else InvalidData; a body that is no JSON object is refused
    as such."""
    what = "the reply, plain JSON where the session encrypts,"
    reply = Members.load(raw, what, max_size=limit)
    if "error" in reply:  # RFC 6749 §5.2
        return ServiceError(what, reply.text("error"), reply.optional_text("error_description"))
    return InvalidData(
        f"{what} is not an encrypted reply (a dir JWE) nor the service's error object: it is "
        "refused, as anyone who can alter the reply could have written it"
    )


# -- the session key in a key store ---------------------------------------------------------


def delete_session_key(store: KeyStore, name: str) -> None:
    """Remove the session key stored under ``name`` (on leave); refuses any other kind of key.

    It does not load the key, so the blob of another TPM (after a TPM clear) can be removed.
    """
    info = store.info(name)
    if info.usage is not KeyUsage.DERIVE:
        raise KeyUsageError(f"key {name!r} is a {info.usage.value} key, not a session key")
    store.delete(name)
    log.debug("deleted session key %r", name)


class PRTSession:
    """The PRT session key kept under a name in a key store, beside the device keys.

    ``create`` imports it from a ``session_key_jwe``, ``open`` loads it after a restart,
    ``renew`` replaces it atomically when a new PRT arrives, ``delete`` removes it on leave.
    ``max_response_size`` (default ``MAX_RESPONSE_SIZE``, 1 MiB) bounds ``decrypt_response``;
    set it on the instance to accept larger responses. A session counts the AES-CBC replies
    that fail to open: once ``cbc_failure_limit`` (``CBC_FAILURE_LIMIT``, 3) have, it refuses
    CBC replies for ``cbc_lockout`` seconds (``CBC_LOCKOUT``, 10 minutes), GCM ones still open.
    """

    #: The largest response body ``decrypt_response`` accepts, in bytes.
    max_response_size: int = MAX_RESPONSE_SIZE
    #: How many CBC replies may fail before the session refuses CBC replies for a while.
    cbc_failure_limit: int = CBC_FAILURE_LIMIT
    #: How long the session refuses CBC replies once that many failed, in seconds.
    cbc_lockout: float = CBC_LOCKOUT

    def __init__(self, store: KeyStore, name: str, key: SessionKey) -> None:
        self.store = store
        self.name = name
        self.key = key
        self._cbc_lock = threading.Lock()
        self._cbc_failures = 0
        self._cbc_pending = 0
        self._cbc_locked_until = 0.0

    @classmethod
    def create(
        cls,
        store: KeyStore,
        name: str,
        transport_key: EntraPrivateKey,
        session_key_jwe: str,
        *,
        passphrase: bytes | None = None,
        replace: bool = False,
    ) -> PRTSession:
        """Import the session key of a new PRT and store it under ``name``."""
        key = import_session_key(store.provider, transport_key, session_key_jwe)
        store.save_session_key(name, key, passphrase=passphrase, replace=replace)
        return cls(store, name, key)

    @classmethod
    def open(cls, store: KeyStore, name: str, *, passphrase: bytes | None = None) -> PRTSession:
        """Load the session key stored under ``name`` (after a process or TPM restart)."""
        return cls(store, name, store.load_session_key(name, passphrase=passphrase))

    def renew(
        self,
        transport_key: EntraPrivateKey,
        session_key_jwe: str,
        *,
        passphrase: bytes | None = None,
    ) -> None:
        """Replace the stored key with a new PRT's: imported first, then renamed into place."""
        key = import_session_key(self.store.provider, transport_key, session_key_jwe)
        self.store.save_session_key(self.name, key, passphrase=passphrase, replace=True)
        self.key = key

    def delete(self) -> None:
        """Remove the stored session key (on leave); this object cannot be used afterwards."""
        delete_session_key(self.store, self.name)

    @property
    def hardware_backed(self) -> bool:
        """True when the session key lives in a TPM."""
        return self.key.hardware_backed

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        """Keep the session key loaded for a run of derivations (one TPM object slot)."""
        with self.key.loaded():
            yield

    def derive_key(
        self, ctx: bytes, *, kdf_version: int = 2, payload: bytes | None = None
    ) -> bytes:
        """The derived key for this ctx (and payload in v2); see ``derive_key``."""
        return derive_key(self.key, ctx, kdf_version=kdf_version, payload=payload)

    def sign_request(self, payload: Mapping[str, Any] | bytes) -> str:
        """A compact JWS over the payload, HS256 with a KDF v2 key; see ``sign_request``."""
        return sign_request(self.key, payload)

    def decrypt_response(
        self,
        body: bytes | str,
        *,
        max_response_size: int | None = None,
        require_gcm: bool = False,
        allow_cbc: bool = False,
    ) -> bytes:
        """The plaintext of a reply, a JSON object; see ``decrypt_response``. The size limit
        is ``max_response_size`` if given, else the session's ``max_response_size``. The
        unauthenticated CBC form opens only with ``allow_cbc=True`` (not with ``require_gcm``),
        and only while the session takes CBC replies (``cbc_failure_limit``)."""
        cbc = _switch(allow_cbc, "allow_cbc") and not _switch(require_gcm, "require_gcm")
        limit = _check_limit(
            self.max_response_size if max_response_size is None else max_response_size
        )
        return self._open(
            _response_text(body, limit),
            _identity,
            what="an encrypted response",
            json_limit=limit,
            cbc=cbc,
        )

    def decrypt_reply(
        self, body: bytes | str, read: Callable[[bytes], _T], *, require_gcm: bool = False
    ) -> _T:
        """A reply whose shape the caller knows (the protocol's reply parsers call this): opened
        as ``decrypt_response`` opens it, the CBC form Entra sends included unless
        ``require_gcm``, then ``read``, which returns what the caller wants of the plaintext
        (a JSON object of at most the session's ``max_response_size``) and raises InvalidData
        when it is not the reply expected.

        Under GCM the reply is authenticated and what ``read`` raises goes out as it is (a
        ServiceError for the service's error object). Under CBC, every EntraKeysError ``read``
        raises (a missing member, a number out of range, an error object, which Entra sends in
        the clear, a key in it that does not open) is the one DecryptionError of a reply that
        does not decrypt, counted as a CBC failure: a reply altered through its IV must decrypt
        to the whole expected reply to tell its author anything, and nothing of its plaintext
        is in any message. So ``read`` does every check of the plaintext itself.
        """
        cbc = not _switch(require_gcm, "require_gcm")
        limit = self.max_response_size
        return self._open(
            _response_text(body, _check_limit(limit)),
            read,
            what="an encrypted response",
            json_limit=limit,
            cbc=cbc,
        )

    def decrypt_jwe(
        self,
        token: str,
        *,
        size: int | None = None,
        require_gcm: bool = False,
        allow_cbc: bool = False,
    ) -> bytes:
        """The plaintext bytes of a ``dir`` JWE that need not hold JSON (a Kerberos clientKey);
        see ``decrypt_jwe``. Bounded by the session's ``max_response_size``; the CBC form only
        with ``allow_cbc=True`` and while the session takes CBC replies."""
        cbc = _switch(allow_cbc, "allow_cbc") and not _switch(require_gcm, "require_gcm")
        limit = _check_limit(self.max_response_size)
        if not isinstance(token, str):
            raise TypeError(f"a JWE is a str, not {type(token).__name__}")
        _refuse_oversize(len(token), limit, "characters")
        return self._open(token, _identity, what="a JWE", json_limit=None, cbc=cbc, cbc_size=size)

    def _open(
        self,
        text: str,
        read: Callable[[bytes], _T],
        *,
        what: str,
        json_limit: int | None,
        cbc: bool,
        cbc_size: int | None = None,
    ) -> _T:
        """Open a reply and ``read`` it. A CBC reply first takes one of the session's attempts
        (refused while none is left), and every failure, the decryption's or what ``read``
        raises, is the one DecryptionError, its attempt counted as failed; a success gives its
        attempt back. Under GCM what ``read`` raises goes out as it is."""
        jwe = _read_jwe(text, what)
        form = _form_taken(jwe, cbc)
        if form == "gcm":
            return read(_decrypt(self.key, jwe, form, json_limit=json_limit, cbc_size=cbc_size))
        self._reserve_cbc_attempt()
        failed = True
        try:
            plain = _decrypt(self.key, jwe, form, json_limit=json_limit, cbc_size=cbc_size)
            try:
                value = read(plain)
                failed = False
            except EntraKeysError:  # InvalidData, ServiceError, DecryptionError alike
                pass
        finally:
            self._settle_cbc_attempt(failed)
        if failed:
            # Raised outside the except block: no chained exception holds the plaintext.
            raise DecryptionError(_NOT_DECRYPTED)
        return value

    def _reserve_cbc_attempt(self) -> None:
        """Take one CBC attempt before anything is derived, counted as failed until it is
        settled, so that concurrent replies cannot all be answered: a DecryptionError while the
        session is locked out or its failed and pending attempts reach ``cbc_failure_limit``.
        The count starts again once the lockout has passed."""
        with self._cbc_lock:
            now = time.monotonic()
            if self._cbc_locked_until and self._cbc_locked_until <= now:
                self._cbc_failures, self._cbc_locked_until = 0, 0.0
            failures, pending = self._cbc_failures, self._cbc_pending
            if not self._cbc_locked_until and failures + pending < self.cbc_failure_limit:
                self._cbc_pending += 1
                return
            left = max(self._cbc_locked_until - now, 0.0)
        if left:
            raise DecryptionError(
                f"this session refuses AES-CBC replies for {left:.0f} s more: {failures} failed "
                "to open (the unauthenticated form, which an attacker can probe by altering "
                "replies); GCM replies still open"
            )
        raise DecryptionError(
            f"this session refuses AES-CBC replies while {pending} are being opened and "
            f"{failures} failed (at most {self.cbc_failure_limit} may be at stake at once: the "
            "unauthenticated form, which an attacker can probe by altering replies); GCM "
            "replies still open"
        )

    def _settle_cbc_attempt(self, failed: bool) -> None:
        """Give a reserved attempt back (the reply opened) or count it as failed, locking the
        session out for ``cbc_lockout`` seconds once ``cbc_failure_limit`` have failed."""
        with self._cbc_lock:
            self._cbc_pending -= 1
            if failed:
                self._cbc_failures += 1
                if self._cbc_failures >= self.cbc_failure_limit and not self._cbc_locked_until:
                    self._cbc_locked_until = time.monotonic() + self.cbc_lockout

    def __repr__(self) -> str:
        backing = "hardware" if self.hardware_backed else "software"
        return f"<PRTSession {self.name!r} {backing}>"
