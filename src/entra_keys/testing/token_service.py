"""A local stand-in for the Entra token service's side of the PRT session key, for tests.

Join-agent authors can test their PRT code without Entra::

    service = TokenService()
    jwe = service.session_key_jwe(transport_key.public_key())   # what the PRT reply carries
    session = PRTSession.create(store, "prt", transport_key, jwe)
    service.verify_request(session.sign_request({"grant_type": "refresh_token"}))
    session.decrypt_response(service.encrypt_response(b'{"id_token": "..."}'))

It is the *other* side, written on pyca ``cryptography`` and the strict JSON and base64 reader
of ``entra_keys._json`` alone (its KDF is pyca's ``KBKDFHMAC``), so it checks the device's code
rather than repeating it. It knows the raw session key (``session_key``), as the real service
does; never use it outside tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from .._json import b64_decode, b64url_decode, b64url_encode, load_object
from ..errors import InvalidData, InvalidSignature

__all__ = ["LABEL", "TokenService"]

#: The SP 800-108 label of Entra derived keys (MS-OAPXBC 3.1.5.1.3.3).
LABEL = b"AzureAD-SecureConversation"
_REQUEST_MEMBERS = ("alg", "typ", "ctx", "kdf_ver")


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


class TokenService:
    """The token service holding one session key: it issues it, checks requests, encrypts."""

    def __init__(self, session_key: bytes | None = None) -> None:
        key = os.urandom(32) if session_key is None else bytes(session_key)
        if len(key) != 32:
            raise ValueError(f"a session key is 32 bytes, not {len(key)}")
        self._session_key = key

    @property
    def session_key(self) -> bytes:
        """The raw 32-byte session key (tests compare against it; the device never sees it)."""
        return self._session_key

    def __repr__(self) -> str:
        return "<TokenService>"

    # -- issuing the key ------------------------------------------------------------------

    def session_key_jwe(
        self,
        transport_key: rsa.RSAPublicKey,
        *,
        alg: Literal["RSA-OAEP", "RSA-OAEP-256"] = "RSA-OAEP",
    ) -> str:
        """The key encrypted to the transport key as Entra sends it: RSA-OAEP (SHA-1) in a
        compact JWE ``{"alg":"RSA-OAEP","enc":"A256GCM"}`` whose ciphertext is one byte; with
        ``alg="RSA-OAEP-256"``, OAEP with SHA-256 and MGF1-SHA-256 (RFC 7518 §4.3), as MSAL's
        bound refresh tokens wrap it. A key it cannot encrypt to is InvalidData."""
        if alg == "RSA-OAEP":
            chosen: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303 - what Entra encrypts with
        elif alg == "RSA-OAEP-256":
            chosen = hashes.SHA256()
        else:
            raise InvalidData(f"alg {alg!r}: 'RSA-OAEP' or 'RSA-OAEP-256'")
        if not isinstance(transport_key, rsa.RSAPublicKey):
            raise InvalidData(f"a transport key is RSA, not {type(transport_key).__name__}")
        try:
            encrypted_key = transport_key.encrypt(
                self._session_key, padding.OAEP(padding.MGF1(chosen), chosen, None)
            )
        except ValueError:  # pyca: a key too small (or too large) for OAEP of 32 bytes
            raise InvalidData(
                f"the session key cannot be {alg}-encrypted to an RSA-{transport_key.key_size} "
                "transport key"
            ) from None
        header_b64 = b64url_encode(_json({"alg": alg, "enc": "A256GCM"}))
        iv = os.urandom(12)
        sealed = AESGCM(self._session_key).encrypt(iv, b"\x00", header_b64.encode("ascii"))
        return ".".join(
            [
                header_b64,
                b64url_encode(encrypted_key),
                b64url_encode(iv),
                b64url_encode(sealed[:-16]),
                b64url_encode(sealed[-16:]),
            ]
        )

    # -- derived keys -----------------------------------------------------------------------

    def derived_key(
        self, ctx: bytes, *, kdf_version: int = 2, payload: bytes | None = None
    ) -> bytes:
        """The service's derived key: pyca KBKDFHMAC (SP 800-108 counter mode, HMAC-SHA256)."""
        if kdf_version == 2:
            if payload is None:
                raise ValueError("KDF v2 needs the payload bytes")
            context = hashlib.sha256(ctx + payload).digest()
        elif kdf_version == 1:
            context = ctx
        else:
            raise ValueError(f"KDF version {kdf_version}")
        kdf = KBKDFHMAC(
            algorithm=hashes.SHA256(),
            mode=Mode.CounterMode,
            length=32,
            rlen=4,
            llen=4,
            location=CounterLocation.BeforeFixed,
            label=LABEL,
            context=context,
            fixed=None,
        )
        return kdf.derive(self._session_key)

    # -- requests from the device -----------------------------------------------------------

    def verify_request(self, token: str) -> dict[str, Any]:
        """Check a device's HS256 request (KDF v2, the header as Entra expects it) and return
        its payload; InvalidSignature for a wrong signature, InvalidData for a wrong form."""
        if not isinstance(token, str):
            raise InvalidData(f"a request token is a str, not {type(token).__name__}")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidData(f"a compact JWS has 3 segments, not {len(parts)}")
        header_b64, payload_b64, signature_b64 = parts
        header = load_object(b64url_decode(header_b64), "request header")
        if tuple(header) != _REQUEST_MEMBERS:
            raise InvalidData(f"request header members are not exactly {_REQUEST_MEMBERS}")
        if header["alg"] != "HS256" or header["typ"] != "JWT":
            raise InvalidData("request header: alg HS256 and typ JWT expected")
        if type(header["kdf_ver"]) is not int or header["kdf_ver"] != 2:
            raise InvalidData("request header: kdf_ver 2 expected")
        try:
            ctx = b64_decode(header["ctx"])
        except InvalidData as exc:
            raise InvalidData(f"request header: ctx: {exc}") from None
        if len(ctx) != 24:
            raise InvalidData("request header: ctx is not 24 bytes in padded standard base64")
        payload = b64url_decode(payload_b64)
        key = self.derived_key(ctx, kdf_version=2, payload=payload)
        expected = hmac.new(key, f"{header_b64}.{payload_b64}".encode("ascii"), "sha256").digest()
        if not hmac.compare_digest(expected, b64url_decode(signature_b64)):
            raise InvalidSignature("the request's HS256 signature does not verify")
        return load_object(payload, "request payload")

    # -- responses to the device ------------------------------------------------------------

    def encrypt_response(
        self,
        plaintext: bytes,
        *,
        mode: Literal["gcm", "cbc"] = "gcm",
        ctx: bytes | None = None,
        enc: str = "A256GCM",
    ) -> str:
        """A ``dir`` JWE the device opens with KDF v1 over the header's ctx, in one of the two
        forms Entra writes under ``enc`` A256GCM: AES-256-GCM with a 12-byte IV and a 16-byte
        tag (the header segment as AAD), or AES-256-CBC + PKCS#7 with a 16-byte IV and an empty
        tag (the MS-OAPXBC 3.2.5.1.3.3 reply captured in kanidm/compact-jwt's test)."""
        ctx = os.urandom(24) if ctx is None else ctx
        header_b64 = b64url_encode(
            _json({"alg": "dir", "enc": enc, "ctx": base64.b64encode(ctx).decode("ascii")})
        )
        key = self.derived_key(ctx, kdf_version=1)
        if mode == "gcm":
            iv = os.urandom(12)
            sealed = AESGCM(key).encrypt(iv, plaintext, header_b64.encode("ascii"))
            ciphertext, tag = sealed[:-16], sealed[-16:]
        elif mode == "cbc":
            iv = os.urandom(16)
            padder = sym_padding.PKCS7(128).padder()
            padded = padder.update(plaintext) + padder.finalize()
            encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            ciphertext = encryptor.update(padded) + encryptor.finalize()
            tag = b""
        else:
            raise ValueError(f"mode {mode!r}: 'gcm' or 'cbc'")
        return ".".join(
            [header_b64, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag)]
        )
