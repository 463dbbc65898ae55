"""The token service's replies that carry key material: the nonce, the PRT with its session key
and Kerberos client keys, a renewed PRT, app tokens.

Two kinds, and each parser says which it takes. Entra sends in the clear (plain JSON, over TLS)
the ``srv_challenge`` nonce and the first PRT reply (to the device-key-signed request):
``parse_nonce``, ``parse_prt_response``. It encrypts under the PRT's session key (a ``dir`` JWE)
every reply to a session-key-signed request: ``parse_refresh_response``,
``parse_token_response`` take only that, so a plain body there (which anyone who can alter the
reply could have written) is refused; the service's error object is a ``ServiceError``. Every
reply is at most ``MAX_JSON_SIZE`` (1 MiB; an encrypted one ``MAX_RESPONSE_SIZE``, 1 MiB), checked
before anything is decoded, and every number in it has a range.

Sources: MS-OAPXBC 3.2.5.1.2.2 (the PRT reply), roadlib ``deviceauth.py``
(``request_token_with_devicecert_signed_payload``: ``tgt_ad`` / ``tgt_cloud`` and their
``clientKey``), libhimmelblau ``auth.rs`` (``PrimaryRefreshToken``, ``TGT``), RFC 6749 §5.1 and
§5.2 (token and error replies).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._json import Members, b64_decode
from ..errors import InvalidData, ServiceError
from ..provider import EntraPrivateKey, SessionKey
from ..session import PRTSession, decrypt_jwe, import_session_key
from ..store.keystore import KeyStore

#: ``keyType`` of a TGT with no client key.
KERBEROS_KEY_NONE = 0
#: ``keyType`` aes256-cts-hmac-sha1-96 (RFC 3962): a 32-byte client key.
KERBEROS_AES256_CTS = 18
# The key length of each Kerberos encryption type: des-cbc-crc, des-cbc-md5 (RFC 3961 §6.2),
# des3-cbc-sha1-kd (§6.3), aes128/256-cts-hmac-sha1-96 (RFC 3962), aes128-cts-hmac-sha256-128,
# aes256-cts-hmac-sha384-192 (RFC 8009), rc4-hmac, rc4-hmac-exp (RFC 4757), camellia128/256-
# cts-cmac (RFC 6803). A CBC clientKey opens only at its type's exact length: at least 8 pad
# bytes must then be right at once, which leaves no padding oracle (2**64 tries, not 256 a
# byte). A keyType not here has a clientKey opened only in the authenticated GCM form.
_CLIENT_KEY_BYTES = {
    1: 8,
    3: 8,
    16: 24,
    17: 16,
    KERBEROS_AES256_CTS: 32,
    19: 16,
    20: 32,
    23: 16,
    24: 16,
    25: 16,
    26: 32,
}
# Kerberos numbers (encryption types, account types) are 32-bit signed (RFC 4120 §5.2.9).
_INT32 = (-(2**31), 2**31 - 1)
# The longest refresh_token_expires_in taken, in seconds (a 32-bit count, 68 years): a date
# can always be computed from it.
_MAX_LIFETIME = 2**31 - 1
# The latest epoch second taken (9999-12-31T23:59:59Z): a datetime can always be made of it.
_MAX_EPOCH = 253_402_300_799
# The numbers of a token reply (Entra writes most as strings of digits) and their ranges.
_LIFETIMES = ("expires_in", "ext_expires_in", "refresh_token_expires_in", "refresh_in")
_MOMENTS = ("expires_on", "not_before")


@dataclass(frozen=True)
class KerberosTGT:
    """A ``tgt_ad`` or ``tgt_cloud`` of a PRT reply, its client key decrypted.

    ===============  ===========================================================  ============
    member           kept as                                                      source
    ===============  ===========================================================  ============
    keyType          ``key_type``: 18 aes256-cts-hmac-sha1-96, 0 none             roadlib,
                                                                                  Himmelblau
    clientKey        ``client_key``: the decrypted key (a ``dir`` JWE opened      roadlib,
                     with the session key, KDF v1; or plain base64, which         Himmelblau
                     Himmelblau also accepts); None when keyType is 0
    messageBuffer    ``message_buffer``: the KDC's AS-REP, base64-decoded         Himmelblau
    realm, cn, sn    ``realm``, ``client_name``, ``server_name``                  Himmelblau
    sessionKeyType,  ``session_key_type``, ``account_type``                       Himmelblau
    accountType
    error            ``error``: why the service gave no TGT                       Himmelblau
    ===============  ===========================================================  ============
    """

    key_type: int
    client_key: bytes | None = field(repr=False)
    message_buffer: bytes | None = field(repr=False)
    realm: str | None = None
    client_name: str | None = None
    server_name: str | None = None
    session_key_type: int | None = None
    account_type: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class PRT:
    """A Primary Refresh Token as the device keeps it; its session key stays in the provider.

    Neither the refresh token, the id token, the Kerberos keys nor the reply show in the
    ``repr``.
    """

    session: PRTSession
    refresh_token: str = field(repr=False)
    #: When the refresh token expires (UTC): receipt time + ``refresh_token_expires_in``.
    refresh_token_expires_at: datetime.datetime
    id_token: str = field(repr=False)
    #: ``"pop"`` from Entra (proof of possession, MS-OAPXBC).
    token_type: str | None = None
    tgt_ad: KerberosTGT | None = None
    tgt_cloud: KerberosTGT | None = None
    kerberos_top_level_names: str | None = None
    #: The whole reply (decrypted), for members not lifted out here.
    reply: Mapping[str, Any] = field(default_factory=dict, repr=False)


def parse_nonce(body: bytes | str | Mapping[str, Any]) -> str:
    """The ``Nonce`` of a ``srv_challenge`` reply (MS-OAPXBC 3.1.5.1.1, MS-RDPBCGR 4.11.3;
    roadlib, Himmelblau): plain JSON, sent in the clear over TLS, at most ``MAX_JSON_SIZE``
    (1 MiB); the service's error object is a ``ServiceError``."""
    reply = Members.load(body, "the nonce reply")
    _check_refusal(reply)
    return reply.text("Nonce")


def _check_refusal(reply: Members) -> None:
    """An OAuth error reply (RFC 6749 §5.2) as a ServiceError carrying its error and
    description (bounded, without control characters)."""
    if "error" in reply:
        raise ServiceError(
            reply.what, reply.text("error"), reply.optional_text("error_description")
        )


def _check_numbers(reply: Members) -> None:
    """The token reply's counts and moments, when present: a number or a string of digits in
    range (seconds up to 2**31 - 1, epoch seconds up to the end of year 9999), else
    InvalidData naming the member."""
    for name in _LIFETIMES:
        reply.optional_integer(name, 0, _MAX_LIFETIME, digit_strings=True)
    for name in _MOMENTS:
        reply.optional_integer(name, 0, _MAX_EPOCH, digit_strings=True)


@dataclass
class _Tgt:
    """A TGT's members, checked, before its client key is decrypted."""

    key_type: int
    client_key: str | None
    fields: dict[str, Any]


def _tgt(value: object, what: str) -> _Tgt | None:
    if value is None:
        return None
    # roadlib reads a JSON string, Himmelblau either
    tgt = Members.load(value, what) if isinstance(value, str) else Members(value, what)
    key_type = tgt.integer("keyType", *_INT32, digit_strings=True)
    client_key = tgt.optional_text("clientKey")
    error = tgt.optional_text("error")
    if key_type != KERBEROS_KEY_NONE and client_key is None and error is None:
        raise InvalidData(f"{what}: keyType {key_type} but no clientKey (and no error)")
    fields = {
        "message_buffer": tgt.optional_base64("messageBuffer"),
        "realm": tgt.optional_text("realm"),
        "client_name": tgt.optional_text("cn"),
        "server_name": tgt.optional_text("sn"),
        "session_key_type": tgt.optional_integer("sessionKeyType", *_INT32, digit_strings=True),
        "account_type": tgt.optional_integer("accountType", *_INT32, digit_strings=True),
        "error": error,
    }
    return _Tgt(key_type, client_key if key_type != KERBEROS_KEY_NONE else None, fields)


def _open_tgt(
    spec: _Tgt | None, key: SessionKey, what: str, require_gcm: bool
) -> KerberosTGT | None:
    if spec is None:
        return None
    expected = _CLIENT_KEY_BYTES.get(spec.key_type)
    client_key = (
        None
        if spec.client_key is None
        else _open_client_key(key, spec.client_key, expected, require_gcm)
    )
    if client_key is not None and expected is not None and len(client_key) != expected:
        raise InvalidData(
            f"{what}: a keyType {spec.key_type} client key is {expected} bytes, "
            f"not {len(client_key)}"
        )
    return KerberosTGT(spec.key_type, client_key, **spec.fields)


def _open_client_key(key: SessionKey, token: str, size: int | None, require_gcm: bool) -> bytes:
    """A clientKey's plaintext: the bytes of a ``dir`` JWE opened with KDF v1 over its ctx
    (12-byte IV AES-256-GCM, AAD the header; 16-byte IV AES-256-CBC + PKCS#7), or plain base64.

    A client key is raw key bytes (roadlib hex-encodes them, Himmelblau takes 32 bytes), so it
    is opened by ``session.decrypt_jwe``, not by ``decrypt_response``, which insists on JSON;
    every failure once decryption begins is the same DecryptionError, a CBC plaintext not
    ``size`` bytes long included (its length is not authenticated: it may be another session's
    key). The CBC form is taken only with a ``size`` (a keyType of known length) and without
    ``require_gcm``: whether an unpinned CBC token opens is a padding oracle on it.
    """
    if "." not in token:
        try:
            return b64_decode(token)
        except InvalidData as exc:
            raise InvalidData(f"a clientKey that is no JWE is base64: {exc}") from exc
    if token.count(".") != 4:
        raise InvalidData(f"a clientKey JWE has 5 segments, this one has {token.count('.') + 1}")
    # The CBC form (roadlib, Himmelblau: either) is taken at a pinned length. Nothing counts
    # here: a plain PRT reply makes a new session each time, and a renewal's reply is counted
    # as a whole (PRTSession.decrypt_reply).
    return decrypt_jwe(key, token, size=size, allow_cbc=size is not None, require_gcm=require_gcm)


@dataclass
class _Prt:
    """A PRT reply's members, checked, before any key is touched."""

    reply: Mapping[str, Any]
    refresh_token: str
    expires_at: datetime.datetime
    id_token: str
    token_type: str | None
    tgt_ad: _Tgt | None
    tgt_cloud: _Tgt | None
    top_level_names: str | None
    session_key_jwe: str | None


def _received(received_at: datetime.datetime | None) -> datetime.datetime:
    """When the reply was received, in UTC: ``received_at`` (an aware datetime) or now."""
    moment = datetime.datetime.now(datetime.UTC) if received_at is None else received_at
    if not isinstance(moment, datetime.datetime) or moment.tzinfo is None:
        raise InvalidData("received_at is an aware datetime (UTC)")
    try:
        return moment.astimezone(datetime.UTC)
    except OverflowError:  # within a day of datetime.min or datetime.max
        raise InvalidData(f"received_at {moment.isoformat()} is out of range") from None


def _prt_fields(fields: Members, moment: datetime.datetime) -> _Prt:
    what = fields.what
    _check_refusal(fields)
    lifetime = fields.integer("refresh_token_expires_in", 0, _MAX_LIFETIME, digit_strings=True)
    _check_numbers(fields)
    try:
        expires_at = moment + datetime.timedelta(seconds=lifetime)
    except OverflowError:
        raise InvalidData(
            f"{what}: received_at plus refresh_token_expires_in ({lifetime} s) is past the "
            "year 9999"
        ) from None
    return _Prt(
        reply=fields.value,
        refresh_token=fields.text("refresh_token"),
        expires_at=expires_at,
        id_token=fields.text("id_token"),
        token_type=fields.optional_text("token_type"),
        tgt_ad=_tgt(fields.optional("tgt_ad"), f"{what}'s tgt_ad"),
        tgt_cloud=_tgt(fields.optional("tgt_cloud"), f"{what}'s tgt_cloud"),
        top_level_names=fields.optional_text("kerberos_top_level_names"),
        session_key_jwe=fields.optional_text("session_key_jwe"),
    )


def _prt(parsed: _Prt, session: PRTSession, key: SessionKey, what: str, require_gcm: bool) -> PRT:
    return PRT(
        session=session,
        refresh_token=parsed.refresh_token,
        refresh_token_expires_at=parsed.expires_at,
        id_token=parsed.id_token,
        token_type=parsed.token_type,
        tgt_ad=_open_tgt(parsed.tgt_ad, key, f"{what}'s tgt_ad", require_gcm),
        tgt_cloud=_open_tgt(parsed.tgt_cloud, key, f"{what}'s tgt_cloud", require_gcm),
        kerberos_top_level_names=parsed.top_level_names,
        reply=parsed.reply,
    )


def parse_prt_response(
    body: bytes | str | Mapping[str, Any],
    transport_key: EntraPrivateKey,
    store: KeyStore,
    name: str,
    *,
    replace: bool = False,
    passphrase: bytes | None = None,
    received_at: datetime.datetime | None = None,
    require_gcm: bool = False,
) -> PRT:
    """The PRT of a PRT reply: its session key imported into the provider and stored under
    ``name`` (as ``PRTSession.create`` does), its Kerberos client keys decrypted.

    ========================  ===================================================  ===========
    member                    kept as                                              source
    ========================  ===================================================  ===========
    token_type                ``token_type`` ("pop")                               MS-OAPXBC
    refresh_token             ``refresh_token``: the PRT; required                 MS-OAPXBC
    refresh_token_expires_in  ``refresh_token_expires_at`` = ``received_at``       MS-OAPXBC
                              (default now, UTC) + that many seconds (0 to
                              2**31 - 1; a number or a string of digits); required
    session_key_jwe           imported (RSA-OAEP to the transport key) into        MS-OAPXBC
                              ``session``, a PRTSession named ``name``; required
    id_token                  ``id_token``; required                               MS-OAPXBC
    tgt_ad, tgt_cloud         ``KerberosTGT`` (a JSON string or an object)         roadlib,
                                                                                   Himmelblau
    kerberos_top_level_names  ``kerberos_top_level_names``                         Himmelblau
    ========================  ===================================================  ===========

    The reply to the device-key-signed PRT request is plain JSON, sent in the clear over TLS
    (MS-OAPXBC 3.2.5.1.2.2): nothing but TLS protects it, which is why a session key is only
    ever taken from it or from an encrypted renewal. ``expires_in``, ``ext_expires_in``,
    ``expires_on`` and ``not_before``, when present, are checked as ``parse_token_response``
    checks them. The session key is stored only once the whole reply checked out and every
    client key decrypted, so a refused reply leaves the store as it was. A malformed reply
    (also one over ``MAX_JSON_SIZE``, 1 MiB, refused before it is decoded) is InvalidData, the
    service's error object a ``ServiceError``; a session key or client key for another key is
    DecryptionError.

    A client key comes as a ``dir`` JWE under the new session key, GCM or CBC (roadlib and
    Himmelblau take either): a CBC one opens only at its keyType's exact key length (so that
    whoever alters the reply gets no padding oracle), one of a keyType whose length is not
    known only under GCM, and ``require_gcm=True`` refuses the CBC form for every keyType.
    """
    what = "the PRT reply"
    if type(require_gcm) is not bool:  # before any key is touched; "no" would read as True
        raise TypeError(f"require_gcm is True or False, not {require_gcm!r:.40}")
    parsed = _prt_fields(Members.load(body, what), _received(received_at))
    if parsed.session_key_jwe is None:
        raise InvalidData(f"{what} has no 'session_key_jwe'")
    key = import_session_key(store.provider, transport_key, parsed.session_key_jwe)
    session = PRTSession(store, name, key)
    prt = _prt(parsed, session, key, what, require_gcm)
    store.save_session_key(name, key, passphrase=passphrase, replace=replace)
    return prt


def parse_refresh_response(
    body: bytes | str,
    prt_session: PRTSession,
    *,
    transport_key: EntraPrivateKey | None = None,
    passphrase: bytes | None = None,
    received_at: datetime.datetime | None = None,
    require_gcm: bool = False,
) -> PRT:
    """The renewed PRT of a ``refresh_prt_request`` reply: an encrypted reply, a ``dir`` JWE
    under ``prt_session`` (``PRTSession.decrypt_reply``, at most its ``max_response_size``,
    1 MiB), GCM or the unauthenticated CBC form Entra sends renewals in (``require_gcm``
    refuses CBC, for the reply and its client keys). A CBC reply that is not the whole
    expected reply (a member missing or out of range, an error object, a client key or a new
    session key that does not open, a new session key without ``transport_key``) is the one
    DecryptionError and counts toward the session's CBC limit, so that whoever alters it
    learns nothing of its plaintext: every check of the plaintext runs before the reply is
    settled.

    A plain body is refused (the service's error object as a ``ServiceError``): only the
    session can vouch for a reply that carries a PRT and, perhaps, a new session key. Its
    members are those of ``parse_prt_response``, ``session_key_jwe`` optional: a renewal keeps
    the session key (roadlib), and when the reply carries a new one it replaces the stored key
    (``transport_key`` needed), once the rest of the reply checked out.
    """
    what = "the PRT renewal reply"
    if not isinstance(prt_session, PRTSession):
        raise InvalidData(f"a PRTSession opens the reply, not {type(prt_session).__name__}")
    moment = _received(received_at)  # the caller's value, checked before anything is opened

    def read(plain: bytes) -> tuple[PRT, SessionKey | None]:
        # decrypt_reply bounded the reply: its plaintext is read whatever its size
        parsed = _prt_fields(Members.load(plain, what, max_size=len(plain)), moment)
        if parsed.session_key_jwe is None:
            return _prt(parsed, prt_session, prt_session.key, what, require_gcm), None
        if transport_key is None:
            raise InvalidData(f"{what} carries a new session key: pass the transport key")
        key = import_session_key(prt_session.store.provider, transport_key, parsed.session_key_jwe)
        return _prt(parsed, prt_session, key, what, require_gcm), key

    prt, key = prt_session.decrypt_reply(body, read, require_gcm=require_gcm)
    if key is not None:
        # PRTSession.renew, once the reply is known good (renew would decrypt the key again).
        prt_session.store.save_session_key(
            prt_session.name, key, passphrase=passphrase, replace=True
        )
        prt_session.key = key
    return prt


def parse_token_response(
    body: bytes | str, prt_session: PRTSession, *, require_gcm: bool = False
) -> dict[str, Any]:
    """The members of an ``app_token_request`` reply (``access_token``, ``token_type``,
    ``refresh_token``, ``id_token``, ...): an encrypted reply, a ``dir`` JWE under
    ``prt_session`` (at most its ``max_response_size``, 1 MiB; ``require_gcm`` refuses the CBC
    form); a plain body is refused, the service's error object (plain, or encrypted under GCM)
    a ``ServiceError``. Under CBC, which nothing authenticates, a reply that is not the whole
    expected reply (below, or an error object) is the one DecryptionError, counted toward the
    session's CBC limit (``PRTSession.decrypt_reply``).

    ``access_token`` and ``token_type`` are required (RFC 6749 §5.1); ``expires_in``,
    ``ext_expires_in``, ``refresh_token_expires_in`` and ``refresh_in`` are 0 to 2**31 - 1
    seconds, ``expires_on`` and ``not_before`` epoch seconds up to the end of year 9999, as
    numbers or strings of digits (Entra writes strings); anything else is InvalidData naming
    the member. The members are returned as the reply has them.
    """
    if not isinstance(prt_session, PRTSession):
        raise InvalidData(f"a PRTSession opens the reply, not {type(prt_session).__name__}")
    return prt_session.decrypt_reply(body, _token_reply, require_gcm=require_gcm)


def _token_reply(plain: bytes) -> dict[str, Any]:
    """The members of a token reply's plaintext, checked (``parse_token_response``)."""
    reply = Members.load(plain, "the token reply", max_size=len(plain))  # bounded above
    _check_refusal(reply)
    reply.text("access_token")
    reply.text("token_type")
    _check_numbers(reply)
    return dict(reply.value)
