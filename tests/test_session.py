"""The PRT session key (``entra_keys.session``) against the token-service stand-in, over both
providers: import, derived keys, HS256 requests, encrypted responses, the key store lifecycle,
where the key's bytes must never show up, and (TPM) what crosses the TPM interface.

The stand-in (``entra_keys.testing.token_service``) is the other side: its expectations come from
pyca's KBKDFHMAC, AES-GCM and AES-CBC, never from the device's code. TPM tests run on the session
swtpm; the restart and foreign-TPM tests use a second swtpm of this module.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from entra_keys import (
    DecryptionError,
    EntraKeysError,
    ForeignKey,
    InvalidData,
    KeyExists,
    KeyNotFound,
    KeyStore,
    KeyType,
    KeyUsage,
    KeyUsageError,
    Provider,
    SessionKey,
    UnsupportedAlgorithm,
    WrongPassphrase,
    open_provider,
)
from entra_keys._json import b64_encode, b64url_decode, b64url_encode
from entra_keys.provider import EntraPrivateKey
from entra_keys.session import (
    CTX_BYTES,
    MAX_CTX_BYTES,
    PRTSession,
    decrypt_jwe,
    decrypt_response,
    delete_session_key,
    derive_key,
    import_session_key,
    kdf_context,
    kdf_input,
    parse_session_key_jwe,
    sign_request,
)
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService

from .helpers import cached_key, kbkdf, open_pcap_provider, transient_handles

LABEL = b"AzureAD-SecureConversation"
SHA1 = hashes.SHA1()
OAEP_SHA1 = padding.OAEP(padding.MGF1(SHA1), SHA1, None)
RESPONSE = b'{"refresh_token":"0.AXkA-very-secret-token","id_token":"eyJ0"}'


# -- independent references -----------------------------------------------------------------


def expected_key(key: bytes, ctx: bytes, kdf: int, payload: bytes | None = None) -> bytes:
    context = ctx if kdf == 1 else hashlib.sha256(ctx + (payload or b"")).digest()
    return kbkdf(key, context)


def jwe(header: dict[str, Any] | str, iv: bytes, ciphertext: bytes, tag: bytes) -> str:
    """A compact ``dir`` JWE from its parts (a header dict, or its segment as is)."""
    head = header if isinstance(header, str) else b64url_encode(json.dumps(header).encode())
    return ".".join([head, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag)])


def seal_gcm(raw_key: bytes, ctx: bytes, plaintext: bytes, header: dict[str, Any]) -> str:
    head = b64url_encode(json.dumps(header).encode())
    iv = os.urandom(12)
    sealed = AESGCM(kbkdf(raw_key, ctx)).encrypt(iv, plaintext, head.encode())
    return jwe(head, iv, sealed[:-16], sealed[-16:])


def seal_cbc_raw(raw_key: bytes, ctx: bytes, blocks: bytes) -> str:
    """AES-CBC over ``blocks`` as given (no padding added): to build bad padding on purpose."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(kbkdf(raw_key, ctx)), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(blocks) + encryptor.finalize()
    return jwe({"alg": "dir", "enc": "A256GCM", "ctx": b64_encode(ctx)}, iv, ciphertext, b"")


def segments(token: str) -> list[str]:
    return token.split(".")


def replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def secret_forms(secret: bytes) -> list[bytes]:
    """The secret as raw bytes, hex, and base64 / base64url at every byte alignment."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + secret)
            # Drop the groups that mix in the alignment bytes or the end of the data.
            start = 4 if shift else 0
            forms.append(text[start:-4])
    return forms


def leaks(data: bytes, secret: bytes) -> bool:
    """True when any form of the secret is in the data (whitespace removed for base64 lines)."""
    squeezed = b"".join(data.split())
    return any(form in data or form in squeezed for form in secret_forms(secret))


def store_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def reopen(provider: Provider) -> Provider:
    """A second provider of the same kind on the same TPM: a process restart, in effect."""
    return open_provider(provider.kind, tcti=getattr(provider, "tcti", None))


@pytest.fixture
def service() -> TokenService:
    return TokenService()


@pytest.fixture
def session_key(
    provider: Provider, transport_key: EntraPrivateKey, service: TokenService
) -> SessionKey:
    """The service's session key imported into the provider under test."""
    return import_session_key(
        provider, transport_key, service.session_key_jwe(public(transport_key))
    )


def public(key: EntraPrivateKey) -> rsa.RSAPublicKey:
    """The public half of an RSA key (what the service encrypts the session key to)."""
    found = key.public_key()
    assert isinstance(found, rsa.RSAPublicKey)
    return found


@pytest.fixture(scope="module")
def rsa_public() -> rsa.RSAPublicKey:
    """An RSA-2048 public key to encrypt to when no provider is involved."""
    return rsa.generate_private_key(65537, 2048).public_key()


@pytest.fixture(scope="module")
def other_swtpm(tmp_path_factory: pytest.TempPathFactory, swtpm: Swtpm) -> Iterator[Swtpm]:
    """A second swtpm (other seeds): for the restart and the foreign-blob tests."""
    tpm = Swtpm(tmp_path_factory.mktemp("other-swtpm"))
    tpm.start()
    yield tpm
    tpm.stop()


# -- end to end with the token-service stand-in ---------------------------------------------


def test_token_service_round_trip(
    provider: Provider, transport_key: EntraPrivateKey, store: KeyStore, service: TokenService
) -> None:
    prt = PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )
    assert prt.hardware_backed is provider.hardware_backed
    assert prt.key.hardware_backed is provider.hardware_backed
    tokens = [prt.sign_request({"grant_type": "refresh_token", "n": n}) for n in range(3)]
    for n, token in enumerate(tokens):
        assert service.verify_request(token) == {"grant_type": "refresh_token", "n": n}
    assert len({json.loads(b64url_decode(segments(t)[0]))["ctx"] for t in tokens}) == 3
    with prt.loaded():
        for mode in ("gcm", "cbc"):
            opened = prt.decrypt_response(
                service.encrypt_response(RESPONSE, mode=mode), allow_cbc=True
            )
            assert opened == RESPONSE
            body = service.encrypt_response(RESPONSE, mode=mode).encode()
            assert prt.decrypt_response(body, allow_cbc=True) == RESPONSE
        # The unauthenticated CBC form only where the caller allows it.
        with pytest.raises(DecryptionError, match="allow_cbc"):
            prt.decrypt_response(service.encrypt_response(RESPONSE, mode="cbc"))
    # Plain JSON is not passed as if decrypted (the reply of a session-key-signed request is a
    # JWE under the session).
    with pytest.raises(InvalidData, match="not an encrypted reply"):
        prt.decrypt_response(RESPONSE)
    with pytest.raises(InvalidData, match="not an encrypted reply"):
        prt.decrypt_response(RESPONSE.decode())
    assert store.info("prt").key_type is KeyType.HMAC_SHA256
    assert store.info("prt").usage is KeyUsage.DERIVE


def test_request_header_and_payload_are_exactly_what_is_signed(
    session_key: SessionKey, service: TokenService
) -> None:
    token = sign_request(session_key, {"b": "é", "a": [1, 2]})
    head, body, _ = segments(token)
    header = b64url_decode(head)
    ctx_b64 = json.loads(header)["ctx"]
    assert header == b'{"alg":"HS256","typ":"JWT","ctx":"%s","kdf_ver":2}' % ctx_b64.encode()
    ctx = base64.b64decode(ctx_b64, validate=True)
    assert len(ctx) == CTX_BYTES and base64.b64encode(ctx).decode() == ctx_b64
    assert b64url_decode(body) == '{"b":"é","a":[1,2]}'.encode()
    service.verify_request(token)
    # Bytes go in as they are: spacing and the final newline are signed and sent.
    raw = b'{ "refresh_token" : "0.A",\n  "request_nonce": "AwAB" }\n'
    token = sign_request(session_key, raw)
    assert b64url_decode(segments(token)[1]) == raw
    assert service.verify_request(token) == {"refresh_token": "0.A", "request_nonce": "AwAB"}


def test_a_request_signature_is_hs256_with_the_v2_derived_key(
    session_key: SessionKey, service: TokenService
) -> None:
    token = sign_request(session_key, {"x": 1})
    head, body, sig = segments(token)
    ctx = base64.b64decode(json.loads(b64url_decode(head))["ctx"])
    key = expected_key(service.session_key, ctx, 2, b64url_decode(body))
    assert b64url_decode(sig) == hmac.new(key, f"{head}.{body}".encode(), "sha256").digest()
    forged = replace_segment(token, 1, b64url_encode(b'{"x":2}'))
    with pytest.raises(EntraKeysError, match="does not verify"):
        service.verify_request(forged)


@pytest.mark.parametrize("payload", [b"not json", b"[1,2]", b"\xff{}", object()])
def test_sign_request_refuses_a_payload_that_is_not_a_json_object(
    payload: Any, session_key: SessionKey
) -> None:
    expected = TypeError if not isinstance(payload, bytes) else InvalidData
    with pytest.raises(expected):
        sign_request(session_key, payload)
    with pytest.raises(InvalidData):
        sign_request(session_key, {"nan": float("nan")})


# -- derived keys: known answers, KBKDFHMAC, both providers ---------------------------------


def test_kdf_known_answer() -> None:
    """A fixed vector (computed with KBKDFHMAC) through the module's own KDF input."""
    key, ctx = bytes(range(32)), bytes(range(100, 124))
    payload = b'{"refresh_token":"0.A","request_nonce":"AwAB"}'
    v1 = hmac.new(key, kdf_input(kdf_context(ctx, kdf_version=1)), "sha256").hexdigest()
    v2 = hmac.new(key, kdf_input(kdf_context(ctx, payload=payload)), "sha256").hexdigest()
    assert v1 == "fd86b1821bd2effa68009dee12e23d90b6889712dc9ec3a625075817ca47f47a"
    assert v2 == "ce6ffae72e4b4c281561e0b19a747763785af02c9b2ba98d6e52ebef8302381b"
    assert bytes.fromhex(v1) == kbkdf(key, ctx)
    prefix = b"\x00\x00\x00\x01AzureAD-SecureConversation\x00"
    assert kdf_input(ctx) == prefix + ctx + b"\x00\x00\x01\x00"


@pytest.mark.parametrize("kdf", [1, 2])
def test_derived_keys_equal_kbkdfhmac_on_the_raw_key(
    kdf: int, session_key: SessionKey, service: TokenService
) -> None:
    ctx = os.urandom(CTX_BYTES)
    payload = b'{"refresh_token":"0.A"}' if kdf == 2 else None
    want = expected_key(service.session_key, ctx, kdf, payload)
    assert derive_key(session_key, ctx, kdf_version=kdf, payload=payload) == want
    with session_key.loaded():
        assert derive_key(session_key, ctx, kdf_version=kdf, payload=payload) == want
    assert service.derived_key(ctx, kdf_version=kdf, payload=payload) == want


def test_derive_refuses_bad_arguments(session_key: SessionKey) -> None:
    ctx = os.urandom(CTX_BYTES)
    with pytest.raises(InvalidData, match="v2 needs"):
        derive_key(session_key, ctx)
    with pytest.raises(InvalidData, match="v1 takes no payload"):
        derive_key(session_key, ctx, kdf_version=1, payload=b"{}")
    with pytest.raises(UnsupportedAlgorithm):
        derive_key(session_key, ctx, kdf_version=3, payload=b"{}")
    for bad in (b"", os.urandom(MAX_CTX_BYTES + 1)):
        with pytest.raises(InvalidData, match="ctx is"):
            derive_key(session_key, bad, kdf_version=1)
    with pytest.raises(TypeError):
        derive_key(session_key, "ctx", kdf_version=1)  # type: ignore[arg-type]
    # The longest ctx still fits one TPM2_HMAC.
    assert len(derive_key(session_key, os.urandom(MAX_CTX_BYTES), kdf_version=1)) == 32


@settings(max_examples=25, deadline=None)
@given(
    raw=st.binary(min_size=32, max_size=32),
    ctx=st.binary(min_size=1, max_size=64),
    payload=st.binary(max_size=2048),
)
def test_tpm_and_software_agree_with_kbkdfhmac(
    tpm_provider: Provider, raw: bytes, ctx: bytes, payload: bytes
) -> None:
    software = open_provider("software")
    service = TokenService(raw)
    keys = []
    for provider in (software, tpm_provider):
        transport = cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        keys.append(
            import_session_key(provider, transport, service.session_key_jwe(public(transport)))
        )
    v1, v2 = kbkdf(raw, ctx), kbkdf(raw, hashlib.sha256(ctx + payload).digest())
    for key in keys:
        assert derive_key(key, ctx, kdf_version=1) == v1
        assert derive_key(key, ctx, kdf_version=2, payload=payload) == v2


# -- the session_key_jwe ----------------------------------------------------------------------


def _header(value: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(value).encode())


def _jwe_header(raw: bytes) -> Any:
    return lambda t: replace_segment(t, 0, b64url_encode(raw))


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t.rsplit(".", 1)[0], id="four-segments"),
        pytest.param(lambda t: t + ".", id="six-segments"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: replace_segment(t, 1, ""), id="empty-encrypted-key"),
        pytest.param(lambda t: replace_segment(t, 1, "ab+/"), id="std-alphabet"),
        pytest.param(lambda t: replace_segment(t, 1, segments(t)[1] + "=="), id="padding"),
        pytest.param(lambda t: replace_segment(t, 1, segments(t)[1] + "AAA"), id="length-mod-4"),
        pytest.param(lambda t: replace_segment(t, 2, "*"), id="bad-iv-char"),
        pytest.param(_jwe_header(b'{"alg":"RSA-OAEP-384","enc":"A256GCM"}'), id="alg"),
        pytest.param(_jwe_header(b'{"alg":"RSA1_5","enc":"A256GCM"}'), id="alg-rsa1_5"),
        pytest.param(_jwe_header(b'{"alg":"dir","enc":"A256GCM"}'), id="alg-dir"),
        pytest.param(_jwe_header(b'{"alg":["RSA-OAEP"],"enc":"A256GCM"}'), id="alg-list"),
        pytest.param(_jwe_header(b'{"alg":"RSA-OAEP","enc":"A128GCM"}'), id="enc"),
        pytest.param(_jwe_header(b'{"enc":"A256GCM"}'), id="no-alg"),
        pytest.param(_jwe_header(b'{"alg":"RSA-OAEP","enc":"A256GCM","crit":["x"]}'), id="crit"),
        pytest.param(
            _jwe_header(b'{"alg":"RSA-OAEP","alg":"RSA-OAEP","enc":"A256GCM"}'), id="duplicate"
        ),
        pytest.param(_jwe_header(b"[1]"), id="not-object"),
        pytest.param(_jwe_header(b"\xff"), id="not-utf8"),
    ],
)
def test_a_malformed_session_key_jwe_is_invalid_data(
    mangle: Any, service: TokenService, rsa_public: rsa.RSAPublicKey
) -> None:
    token = service.session_key_jwe(rsa_public)
    assert len(parse_session_key_jwe(token)) == 256
    assert parse_session_key_jwe(token + "\n") == parse_session_key_jwe(token)
    with pytest.raises(InvalidData):
        parse_session_key_jwe(mangle(token))


def test_a_session_key_wrapped_with_rsa_oaep_256_imports_as_rsa_oaep_does(
    provider: Provider, transport_key: EntraPrivateKey, store: KeyStore
) -> None:
    """MSAL's bound refresh tokens wrap the session key with RSA-OAEP-256 (SHA-256, MGF1
    SHA-256): the transport key decrypts it (in the TPM: TPM2_RSA_Decrypt, OAEP SHA-256, which
    its scheme NULL allows), and it derives what the service's key derives."""
    from entra_keys.tcg.public import TPMSRSAParms
    from entra_keys.tcg.structures import TPMTPublic
    from entra_keys.tcg.wire import TPM_ALG_NULL

    parameters = TPMTPublic.parse(transport_key.tpm_public).parameters
    assert isinstance(parameters, TPMSRSAParms) and parameters.scheme.scheme == TPM_ALG_NULL
    for alg in ("RSA-OAEP", "RSA-OAEP-256"):
        service = TokenService()
        jwe = service.session_key_jwe(public(transport_key), alg=alg)  # type: ignore[arg-type]
        assert json.loads(b64url_decode(segments(jwe)[0]))["alg"] == alg
        prt = PRTSession.create(store, "prt", transport_key, jwe, replace=True)
        assert prt.hardware_backed is provider.hardware_backed
        assert service.verify_request(prt.sign_request({"alg": alg})) == {"alg": alg}
        ctx = os.urandom(CTX_BYTES)
        assert derive_key(prt.key, ctx, kdf_version=1) == kbkdf(service.session_key, ctx)


def test_a_session_key_wrapped_with_another_hash_than_its_alg_names_does_not_decrypt(
    provider: Provider, transport_key: EntraPrivateKey
) -> None:
    """The alg decides the OAEP hash: a key wrapped with SHA-1 under an RSA-OAEP-256 header
    (or the reverse) is a DecryptionError, never a wrong session key."""
    raw = os.urandom(32)
    for header, hash_alg in (("RSA-OAEP-256", hashes.SHA1()), ("RSA-OAEP", hashes.SHA256())):
        wrapped = public(transport_key).encrypt(
            raw, padding.OAEP(padding.MGF1(hash_alg), hash_alg, None)
        )
        head = _header({"alg": header, "enc": "A256GCM"})
        token = ".".join([head, b64url_encode(wrapped), "AAAAAAAAAAAAAAAA", "AA", "A" * 22])
        with pytest.raises(DecryptionError):
            import_session_key(provider, transport_key, token)


def test_parse_session_key_jwe_takes_only_a_str() -> None:
    with pytest.raises(InvalidData):
        parse_session_key_jwe(b"a.b.c.d.e")  # type: ignore[arg-type]


def test_a_jwe_for_another_transport_key_does_not_decrypt(
    provider: Provider, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    other = cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN)  # another RSA key, same size
    token = service.session_key_jwe(public(other))
    with pytest.raises(DecryptionError):
        import_session_key(provider, transport_key, token)


def test_a_session_key_that_is_not_32_bytes_is_refused(
    provider: Provider, transport_key: EntraPrivateKey
) -> None:
    short = public(transport_key).encrypt(os.urandom(16), OAEP_SHA1)
    head = _header({"alg": "RSA-OAEP", "enc": "A256GCM"})
    token = ".".join([head, b64url_encode(short), "AAAAAAAAAAAAAAAA", "AA", "A" * 22])
    with pytest.raises(DecryptionError, match="32"):
        import_session_key(provider, transport_key, token)


def test_a_transport_key_of_another_use_is_refused(
    provider: Provider, service: TokenService
) -> None:
    device = cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN)
    with pytest.raises(KeyUsageError):
        import_session_key(provider, device, service.session_key_jwe(public(device)))


# -- encrypted responses: what is refused, and how ------------------------------------------


def test_standard_base64_ctx_with_plus_and_slash_decrypts_and_base64url_is_refused(
    session_key: SessionKey, service: TokenService
) -> None:
    ctx = bytes([0xFB, 0xEF, 0xBE]) * 4 + b"\xff" * 12  # "++++++++////////////////"
    assert b64_encode(ctx) == "+" * 16 + "/" * 16
    header = {"alg": "dir", "enc": "A256GCM", "ctx": b64_encode(ctx)}
    assert (
        decrypt_response(session_key, seal_gcm(service.session_key, ctx, RESPONSE, header))
        == RESPONSE
    )
    header["ctx"] = base64.urlsafe_b64encode(ctx).decode()
    with pytest.raises(InvalidData, match="base64url"):
        decrypt_response(session_key, seal_gcm(service.session_key, ctx, RESPONSE, header))


def test_cbc_tag_must_be_empty_and_the_padding_is_checked(
    session_key: SessionKey, service: TokenService
) -> None:
    """Entra's CBC form has an empty tag; a CBC reply with a tag of any length is refused, as a
    GCM reply without one is: one DecryptionError, the form being part of decryption."""
    token = service.encrypt_response(RESPONSE, mode="cbc")
    assert segments(token)[4] == ""
    opened = functools.partial(decrypt_response, session_key, allow_cbc=True)
    assert opened(token) == RESPONSE
    for tag in (b"x" * 16, b"x", b"x" * 12):
        with pytest.raises(DecryptionError, match="does not decrypt"):
            opened(replace_segment(token, 4, b64url_encode(tag)))
    ctx = os.urandom(24)
    # Bad padding is the one decryption failure, its message naming no stage (no padding oracle).
    bad = b'{"a":"bcdefgh"}\x00'  # last byte 0: never valid PKCS#7
    with pytest.raises(DecryptionError, match="does not decrypt") as caught:
        opened(seal_cbc_raw(service.session_key, ctx, bad))
    assert "padding" not in str(caught.value)
    bad = b'{"a":"bcdef"}\x03\x02\x03'  # inconsistent padding bytes
    with pytest.raises(DecryptionError, match="does not decrypt"):
        opened(seal_cbc_raw(service.session_key, ctx, bad))
    padder = sym_padding.PKCS7(128).padder()
    good = padder.update(b'{"ok":1}') + padder.finalize()
    assert opened(seal_cbc_raw(service.session_key, ctx, good)) == b'{"ok":1}'


def _flip(segment: str, index: int = 0) -> str:
    data = bytearray(b64url_decode(segment))
    data[index] ^= 1
    return b64url_encode(bytes(data))


def _recode(index: int, change: Any) -> Any:
    """A mangler that changes the decoded bytes of one segment and re-encodes them."""

    def mangle(token: str) -> str:
        data = change(b64url_decode(segments(token)[index]))
        return replace_segment(token, index, b64url_encode(data))

    return mangle


def _iv(size: int) -> Any:
    return _recode(2, lambda b: os.urandom(size))


DECRYPTION_ERRORS: dict[str, tuple[Literal["gcm", "cbc"], Any]] = {
    "gcm-bad-tag": ("gcm", lambda t: replace_segment(t, 4, _flip(segments(t)[4]))),
    "gcm-bad-ciphertext": ("gcm", lambda t: replace_segment(t, 3, _flip(segments(t)[3]))),
    "gcm-truncated-ciphertext": ("gcm", _recode(3, lambda b: b[:-1])),
    "gcm-header-changed": ("gcm", _recode(0, lambda b: b[:-1] + b',"typ":"JWT"}')),
    "gcm-other-iv": ("gcm", _recode(2, lambda b: os.urandom(12))),
    "cbc-truncated-block": ("cbc", _recode(3, lambda b: b[:-1])),
    "cbc-empty-ciphertext": ("cbc", _recode(3, lambda b: b"")),
    # Lengths are checked with the rest of decryption, so they fail the same way (no oracle).
    "gcm-short-tag": ("gcm", _recode(4, lambda b: b[:12])),
    **{f"iv-{n}-bytes": ("gcm", _iv(n)) for n in (0, 1, 8, 11, 13, 15, 17, 32)},
}


@pytest.mark.parametrize("case", DECRYPTION_ERRORS)
def test_responses_that_do_not_decrypt_are_decryption_errors(
    case: str, session_key: SessionKey, service: TokenService
) -> None:
    mode, mangle = DECRYPTION_ERRORS[case]
    token = service.encrypt_response(RESPONSE, mode=mode)
    with pytest.raises(DecryptionError) as caught:
        decrypt_response(session_key, mangle(token))
    assert isinstance(caught.value, ValueError)


def test_a_response_for_another_session_key_is_a_decryption_error(session_key: SessionKey) -> None:
    with pytest.raises(DecryptionError):
        decrypt_response(session_key, TokenService().encrypt_response(RESPONSE, mode="gcm"))


def _uncanonical(segment: str) -> str:
    """The segment with unused low bits set in its last character (22 chars: 4 spare bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 == 2
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


def _with_header(token: str, raw: bytes) -> str:
    return replace_segment(token, 0, b64url_encode(raw))


def _ctx(token: str) -> str:
    return str(json.loads(b64url_decode(segments(token)[0]))["ctx"])


def _head(template: bytes) -> Any:
    """A mangler that puts this header (CTX: the token's own ctx) on the token."""
    return lambda t: _with_header(t, template.replace(b"CTX", _ctx(t).encode()))


INVALID = {
    "truncated-4-segments": lambda t: t.rsplit(".", 1)[0],
    "truncated-1-segment": lambda t: segments(t)[0],
    "empty": lambda t: "",
    "six-segments": lambda t: t + ".AA",
    "iv-plus": lambda t: replace_segment(t, 2, "+" + segments(t)[2][1:]),
    "iv-slash": lambda t: replace_segment(t, 2, "/" + segments(t)[2][1:]),
    "ciphertext-padding": lambda t: replace_segment(t, 3, segments(t)[3] + "=="),
    "tag-bad-char": lambda t: replace_segment(t, 4, "*" + segments(t)[4][1:]),
    "tag-length-mod-4-is-1": lambda t: replace_segment(t, 4, segments(t)[4] + "AAA"),
    "tag-not-canonical": lambda t: replace_segment(t, 4, _uncanonical(segments(t)[4])),
    "encrypted-key-std-alphabet": lambda t: replace_segment(t, 1, "ab+/"),
    "header-not-json": _head(b"{not json"),
    "header-not-object": _head(b'["dir"]'),
    "header-duplicate": _head(b'{"alg":"dir","alg":"dir","enc":"A256GCM","ctx":"CTX"}'),
    "header-nan": _head(b'{"alg":"dir","enc":"A256GCM","ctx":"CTX","n":NaN}'),
    "alg-not-dir": _head(b'{"alg":"RSA-OAEP","enc":"A256GCM","ctx":"CTX"}'),
    "no-enc": _head(b'{"alg":"dir","ctx":"CTX"}'),
    "no-ctx": _head(b'{"alg":"dir","enc":"A256GCM"}'),
    "ctx-not-string": _head(b'{"alg":"dir","enc":"A256GCM","ctx":24}'),
    "ctx-empty": _head(b'{"alg":"dir","enc":"A256GCM","ctx":""}'),
    "ctx-unpadded": _head(b'{"alg":"dir","enc":"A256GCM","ctx":"AAAAAAA"}'),
    "ctx-bad-padding": _head(b'{"alg":"dir","enc":"A256GCM","ctx":"AAAAA==="}'),
    "ctx-bad-char": _head(b'{"alg":"dir","enc":"A256GCM","ctx":"AA*A"}'),
    "crit": _head(b'{"alg":"dir","enc":"A256GCM","ctx":"CTX","crit":["x"]}'),
}


@pytest.mark.parametrize("case", INVALID)
def test_malformed_responses_are_invalid_data(
    case: str, session_key: SessionKey, service: TokenService
) -> None:
    token = service.encrypt_response(RESPONSE, mode="gcm")
    with pytest.raises(InvalidData):
        decrypt_response(session_key, INVALID[case](token))


def test_response_bodies_of_other_kinds(session_key: SessionKey) -> None:
    with pytest.raises(InvalidData, match="ASCII"):
        decrypt_response(session_key, "é.a.b.c.d".encode())
    with pytest.raises(TypeError):
        decrypt_response(session_key, 42)  # type: ignore[arg-type]
    # Only a body that begins with '{"' is plain JSON; anything else must be a JWE.
    with pytest.raises(InvalidData):
        decrypt_response(session_key, b' {"a":1}')


# -- lifecycle in the key store -------------------------------------------------------------


def test_the_session_key_survives_a_new_provider(
    provider: Provider, transport_key: EntraPrivateKey, store: KeyStore, service: TokenService
) -> None:
    PRTSession.create(store, "prt", transport_key, service.session_key_jwe(public(transport_key)))
    ctx = os.urandom(CTX_BYTES)
    with reopen(provider) as again:
        prt = PRTSession.open(KeyStore(again, store.path), "prt")
        assert prt.derive_key(ctx, kdf_version=1) == expected_key(service.session_key, ctx, 1)
        service.verify_request(prt.sign_request({"after": "restart"}))


def test_the_session_key_survives_a_tpm_restart(other_swtpm: Swtpm, tmp_path: Path) -> None:
    service = TokenService()
    ctx = os.urandom(CTX_BYTES)
    with open_provider("tpm", tcti=other_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        PRTSession.create(store, "prt", transport, service.session_key_jwe(public(transport)))
    other_swtpm.stop()
    other_swtpm.start()
    with open_provider("tpm", tcti=other_swtpm.tcti) as provider:
        prt = PRTSession.open(KeyStore(provider, tmp_path / "store"), "prt")
        assert prt.hardware_backed
        assert prt.derive_key(ctx, kdf_version=1) == expected_key(service.session_key, ctx, 1)
    assert transient_handles(other_swtpm.tcti) == []


def test_a_new_prt_replaces_the_key_atomically(
    provider: Provider, transport_key: EntraPrivateKey, store: KeyStore
) -> None:
    first, second = TokenService(), TokenService()
    prt = PRTSession.create(
        store, "prt", transport_key, first.session_key_jwe(public(transport_key))
    )
    with pytest.raises(KeyExists):
        PRTSession.create(
            store, "prt", transport_key, second.session_key_jwe(public(transport_key))
        )
    ctx = os.urandom(CTX_BYTES)
    # A new PRT whose key does not import leaves the stored key as it was.
    foreign = cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN)
    with pytest.raises(DecryptionError):
        prt.renew(transport_key, second.session_key_jwe(public(foreign)))
    with pytest.raises(InvalidData):
        prt.renew(transport_key, "not.a.jwe")
    assert PRTSession.open(store, "prt").derive_key(ctx, kdf_version=1) == kbkdf(
        first.session_key, ctx
    )
    prt.renew(transport_key, second.session_key_jwe(public(transport_key)))
    assert prt.derive_key(ctx, kdf_version=1) == kbkdf(second.session_key, ctx)
    assert PRTSession.open(store, "prt").derive_key(ctx, kdf_version=1) == kbkdf(
        second.session_key, ctx
    )
    assert sorted(p.name for p in store.path.iterdir()) == ["prt.pem"]


def test_the_session_key_is_deleted_on_leave(
    provider: Provider, transport_key: EntraPrivateKey, store: KeyStore, service: TokenService
) -> None:
    store.save("transport", transport_key)
    prt = PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )
    with pytest.raises(KeyUsageError):
        delete_session_key(store, "transport")
    with pytest.raises(KeyUsageError):
        PRTSession.open(store, "transport")
    prt.delete()
    with pytest.raises(KeyNotFound):
        PRTSession.open(store, "prt")
    with pytest.raises(KeyNotFound):
        delete_session_key(store, "prt")
    assert store.load("transport").usage is KeyUsage.DECRYPT


def test_a_session_key_blob_on_another_tpm_is_a_foreign_key(
    tpm_provider: Provider, other_swtpm: Swtpm, tmp_path: Path, service: TokenService
) -> None:
    store = KeyStore(tpm_provider, tmp_path / "store")
    transport = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.DECRYPT)
    PRTSession.create(store, "prt", transport, service.session_key_jwe(public(transport)))
    with open_provider("tpm", tcti=other_swtpm.tcti) as other:
        with pytest.raises(ForeignKey) as caught:
            PRTSession.open(KeyStore(other, tmp_path / "store"), "prt")
        assert caught.value.key_name == "prt"
    assert transient_handles(other_swtpm.tcti) == []


def test_software_session_key_with_a_passphrase(
    transport_key: EntraPrivateKey, store: KeyStore, service: TokenService
) -> None:
    if store.provider.kind == "tpm":
        with pytest.raises(UnsupportedAlgorithm):
            PRTSession.create(
                store, "prt", transport_key, service.session_key_jwe(public(transport_key)),
                passphrase=b"pw",
            )  # fmt: skip
        return
    PRTSession.create(
        store,
        "prt",
        transport_key,
        service.session_key_jwe(public(transport_key)),
        passphrase=b"pw",
    )
    assert store.info("prt").encrypted
    with pytest.raises(WrongPassphrase):
        PRTSession.open(store, "prt")
    with pytest.raises(WrongPassphrase):
        PRTSession.open(store, "prt", passphrase=b"wrong")
    ctx = os.urandom(CTX_BYTES)
    prt = PRTSession.open(store, "prt", passphrase=b"pw")
    assert prt.derive_key(ctx, kdf_version=1) == kbkdf(service.session_key, ctx)


# -- where the key must never appear --------------------------------------------------------


def test_the_scan_finds_every_form_it_looks_for() -> None:
    secret = os.urandom(32)
    for data in (
        b"x" + secret,
        b"x" + secret.hex().encode(),
        base64.b64encode(b"ab" + secret + b"c"),
        base64.urlsafe_b64encode(b"a" + secret),
        base64.encodebytes(b"\0" * 40 + secret + b"\0" * 40),  # PEM-style lines
    ):
        assert leaks(data, secret)
    assert not leaks(os.urandom(4096), secret)


def test_the_session_key_is_in_no_store_file(
    provider: Provider, transport_key: EntraPrivateKey, tmp_path: Path, service: TokenService
) -> None:
    """TPM: in no file. Software: only in an unencrypted file (the scan's positive control)."""
    passphrases = [None] if provider.kind == "tpm" else [None, b"correct horse"]
    for passphrase in passphrases:
        store = KeyStore(provider, tmp_path / f"store-{passphrase is not None}")
        store.save("transport", transport_key, passphrase=passphrase)
        token = service.session_key_jwe(public(transport_key))
        PRTSession.create(store, "prt", transport_key, token, passphrase=passphrase)
        PRTSession.open(store, "prt", passphrase=passphrase).renew(
            transport_key, token, passphrase=passphrase
        )
        files = store_files(store.path)
        assert {p.name for p in files} == {"transport.pem", "prt.pem"}
        found = [p.name for p in files if leaks(p.read_bytes(), service.session_key)]
        readable = provider.kind == "software" and passphrase is None
        assert found == (["prt.pem"] if readable else [])


def _messages(exc: BaseException) -> list[str]:
    out = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return out


def test_no_secret_in_logs_reprs_or_error_messages(
    provider: Provider,
    transport_key: EntraPrivateKey,
    store: KeyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = TokenService()
    secrets = [service.session_key, RESPONSE]
    texts: list[str] = []
    prt = PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )
    prt = PRTSession.open(store, "prt")
    with prt.loaded():
        for _ in range(2):
            token = prt.sign_request({"refresh_token": "0.A"})
            head, body, _sig = segments(token)
            ctx = base64.b64decode(json.loads(b64url_decode(head))["ctx"])
            secrets.append(
                kbkdf(service.session_key, hashlib.sha256(ctx + b64url_decode(body)).digest())
            )
            service.verify_request(token)
        for mode in ("gcm", "cbc"):
            response = service.encrypt_response(RESPONSE, mode=mode)
            secrets.append(kbkdf(service.session_key, base64.b64decode(_ctx(response))))
            assert prt.decrypt_response(response, allow_cbc=True) == RESPONSE
    ctx = os.urandom(CTX_BYTES)
    secrets.append(prt.derive_key(ctx, kdf_version=1))
    prt.renew(transport_key, service.session_key_jwe(public(transport_key)))
    sealed = service.encrypt_response(RESPONSE)
    new_jwe = service.session_key_jwe(public(transport_key))
    foreign_jwe = service.session_key_jwe(
        public(cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN))
    )
    failures: list[Callable[[], object]] = [
        lambda: prt.decrypt_response(replace_segment(sealed, 4, _flip(segments(sealed)[4]))),
        lambda: prt.decrypt_response(
            seal_cbc_raw(service.session_key, ctx, RESPONSE[:16]), allow_cbc=True
        ),
        lambda: prt.decrypt_response(TokenService().encrypt_response(RESPONSE)),
        lambda: prt.decrypt_response(_with_header(sealed, b"{bad")),
        lambda: PRTSession.create(store, "prt", transport_key, new_jwe),
        lambda: import_session_key(provider, transport_key, foreign_jwe),
        lambda: derive_key(prt.key, b"", kdf_version=1),
    ]
    for fail in failures:
        with pytest.raises(EntraKeysError) as caught:
            fail()
        texts += _messages(caught.value)
    if provider.kind == "software":
        store.save_session_key("locked", prt.key, passphrase=b"pw")
        with pytest.raises(WrongPassphrase) as caught:
            PRTSession.open(store, "locked", passphrase=b"nope")
        texts += _messages(caught.value)
    for obj in (prt, prt.key, service, provider, store, transport_key):
        texts += [repr(obj), str(obj)]
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert any("session key" in r.getMessage() for r in caplog.records)  # the flow did log
    blob = "\n".join(texts).encode()
    for secret in secrets:
        assert not leaks(blob, secret)


# -- what crosses the TPM interface (pcap TCTI) ----------------------------------------------


@pytest.fixture
def pcap(swtpm: Swtpm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``open(name)``: a TPM connection wrapped in tpm2-tss's pcap TCTI, capturing to a file.

    The pcap TCTI reads ``TCTI_PCAP_FILE`` when it is opened, so each connection gets its own
    capture. The session swtpm must hold no transient object afterwards.
    """

    def capture(name: str) -> tuple[str, Path]:
        path = tmp_path / f"{name}.pcap"
        monkeypatch.setenv("TCTI_PCAP_FILE", str(path))
        return f"pcap:{swtpm.tcti}", path

    yield capture
    assert transient_handles(swtpm.tcti) == []


def _keyed_hash_template(t: Any) -> Any:
    public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
    public.objectAttributes = (
        t.TPMA_OBJECT.FIXEDTPM
        | t.TPMA_OBJECT.FIXEDPARENT
        | t.TPMA_OBJECT.USERWITHAUTH
        | t.TPMA_OBJECT.NODA
        | t.TPMA_OBJECT.SIGN_ENCRYPT
    )
    public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.HMAC
    public.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = t.TPM2_ALG.SHA256
    return t.TPM2B_PUBLIC(publicArea=public)


def test_the_session_key_never_crosses_the_tpm_interface_in_the_clear(
    pcap: Any, swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tpm2_pytss as t
    import tpm2_pytss.tsskey

    from entra_keys.providers.tpm._templates import storage_template

    service = TokenService()
    message = os.urandom(48)
    with open_provider("tpm", tcti=swtpm.tcti) as plain:  # the session's transport key blob
        transport_pem = plain.key_to_pem(cached_key(plain, KeyType.RSA2048, KeyUsage.DECRYPT))
    # entra_keys: import the session key and decrypt with the transport key, captured.
    _, capture = pcap("entra_keys")
    with open_pcap_provider(swtpm.tcti, capture, monkeypatch) as provider:
        transport = provider.key_from_pem(transport_pem, KeyUsage.DECRYPT)
        assert isinstance(transport, rsa.RSAPrivateKey)
        key = import_session_key(provider, transport, service.session_key_jwe(public(transport)))
        ctx = os.urandom(CTX_BYTES)
        assert derive_key(key, ctx, kdf_version=1) == kbkdf(service.session_key, ctx)
        ciphertext = transport.public_key().encrypt(message, OAEP_SHA1)
        assert transport.decrypt(ciphertext, OAEP_SHA1) == message
    ours = capture.read_bytes()
    assert len(ours) > 1000
    assert service.session_key not in ours
    assert message not in ours

    # The control: the same operations without parameter encryption, straight on ESAPI (the
    # default password session), do put both secrets into a capture: the check above can fail.
    tcti, capture = pcap("control")
    esys = t.ESAPI(tcti)
    try:
        template = storage_template(t, ecc=True)  # the provider's storage primary (swtpm: ECC)
        parent, _, _, _, _ = esys.create_primary(
            t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER
        )
        try:
            sensitive = t.TPM2B_SENSITIVE_CREATE(
                sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(service.session_key))
            )
            esys.create(parent, sensitive, _keyed_hash_template(t))
            blob = t.tsskey.TSSPrivKey.from_pem(transport_pem)
            handle = esys.load(parent, blob.private, blob.public)
            try:
                scheme = t.TPMT_RSA_DECRYPT(scheme=t.TPM2_ALG.OAEP)
                scheme.details.oaep.hashAlg = t.TPM2_ALG.SHA1
                plain = esys.rsa_decrypt(
                    handle, t.TPM2B_PUBLIC_KEY_RSA(ciphertext), scheme, t.TPM2B_DATA()
                )
                assert bytes(plain) == message
            finally:
                esys.flush_context(handle)
        finally:
            esys.flush_context(parent)
    finally:
        esys.close()
    control = capture.read_bytes()
    assert service.session_key in control
    assert message in control


# -- the stand-in itself --------------------------------------------------------------------


def _hs256(key: bytes, header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    signature = hmac.new(key, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def test_the_stand_in_accepts_only_the_entra_request_form() -> None:
    service = TokenService(bytes(range(32)))
    assert service.session_key == bytes(range(32)) and repr(service) == "<TokenService>"
    ctx, payload = os.urandom(24), b'{"a":1}'
    key = expected_key(service.session_key, ctx, 2, payload)
    good = b'{"alg":"HS256","typ":"JWT","ctx":"%s","kdf_ver":2}' % b64_encode(ctx).encode()
    assert service.verify_request(_hs256(key, good, payload)) == {"a": 1}
    wrong_forms = [
        good.replace(b'"kdf_ver":2', b'"kdf_ver":1'),
        good.replace(b'"kdf_ver":2', b'"kdf_ver":true'),
        good.replace(b'"typ":"JWT",', b""),
        good.replace(b"}", b',"kid":"x"}'),
        good.replace(b'"alg":"HS256","typ":"JWT"', b'"typ":"JWT","alg":"HS256"'),
        good.replace(b64_encode(ctx).encode(), base64.urlsafe_b64encode(ctx + b"\xff\xff\xff")),
        good.replace(b64_encode(ctx).encode(), b64_encode(ctx[:16]).encode()),
        b"not json",
    ]
    for header in wrong_forms:
        with pytest.raises(InvalidData):
            service.verify_request(_hs256(key, header, payload))
    with pytest.raises(EntraKeysError, match="does not verify"):  # signed with the raw key
        service.verify_request(_hs256(service.session_key, good, payload))
    with pytest.raises(InvalidData):
        service.verify_request(
            _hs256(expected_key(service.session_key, ctx, 2, b"[1]"), good, b"[1]")
        )
    with pytest.raises(ValueError, match="32 bytes"):
        TokenService(b"short")


def test_the_stand_in_session_key_jwe_is_a_real_a256gcm_jwe(rsa_public: rsa.RSAPublicKey) -> None:
    service = TokenService()
    head, _, iv, ciphertext, tag = segments(service.session_key_jwe(rsa_public))
    assert json.loads(b64url_decode(head)) == {"alg": "RSA-OAEP", "enc": "A256GCM"}
    assert len(b64url_decode(ciphertext)) == 1
    sealed = b64url_decode(ciphertext) + b64url_decode(tag)
    AESGCM(service.session_key).decrypt(b64url_decode(iv), sealed, head.encode())


@pytest.mark.parametrize(
    "payload",
    [
        {1: "a", "1": "b"},
        {None: "a", "null": "b"},
        {"grant_type": "refresh_token", "claims": {7: "x", "7": "y"}},
    ],
    ids=repr,
)
def test_sign_request_refuses_a_member_named_twice(
    session_key: SessionKey, service: TokenService, payload: dict[Any, Any]
) -> None:
    """json.dumps turns non-str names into strings, so {1: "a", "1": "b"} was signed as
    '{"1":"a","1":"b"}': one name twice, under a valid signature, which services may read
    differently. It is InvalidData now, as the bytes form already was."""
    with pytest.raises(InvalidData, match="a member name is a str"):
        sign_request(session_key, payload)
    with pytest.raises(InvalidData, match="appears twice"):
        sign_request(session_key, b'{"1":"a","1":"b"}')
    token = sign_request(session_key, {"1": "a"})  # the control
    assert service.verify_request(token) == {"1": "a"}


def test_hmac_input_has_one_limit_on_both_providers(
    session_key: SessionKey, service: TokenService
) -> None:
    """Over 1,024 bytes the software key computed the HMAC and the TPM raised: code written
    against one provider failed on the other. Both take at most SessionKey.MAX_INPUT bytes
    (the KDF's largest input, with a MAX_CTX_BYTES ctx, fits) and refuse more alike."""
    assert SessionKey.MAX_INPUT == type(session_key).MAX_INPUT == 1024
    for size in (0, 1, 1023, 1024):
        data = os.urandom(size)
        assert (
            session_key.hmac_sha256(data)
            == hmac.new(service.session_key, data, hashlib.sha256).digest()
        )
    for size in (1025, 4096, 1 << 20):
        with pytest.raises(UnsupportedAlgorithm, match="at most 1024 bytes, not"):
            session_key.hmac_sha256(bytes(size))
    assert len(kdf_input(b"c" * MAX_CTX_BYTES)) == SessionKey.MAX_INPUT


# -- dir JWEs that carry bytes (Kerberos clientKeys) ------------------------------------------


@pytest.mark.parametrize("mode", ["gcm", "cbc"])
def test_decrypt_jwe_gives_bytes_that_need_not_be_json(
    session_key: SessionKey, service: TokenService, mode: Literal["gcm", "cbc"]
) -> None:
    for plaintext in (os.urandom(32), b"\x00" * 16, b"not json at all"):
        token = service.encrypt_response(plaintext, mode=mode)
        assert decrypt_jwe(session_key, token, allow_cbc=True) == plaintext
        with pytest.raises(DecryptionError):  # the JSON-only reader refuses the same token
            decrypt_response(session_key, token, allow_cbc=True)


def test_decrypt_jwe_fails_with_one_message(session_key: SessionKey, service: TokenService) -> None:
    """Another session key, an altered GCM tag, bad CBC padding: the same error, the same words.
    (With ``size``: without it, another key's CBC token has valid padding 1 time in 256.)"""
    other = TokenService()
    ctx = os.urandom(24)
    bad_padding = seal_cbc_raw(service.session_key, ctx, os.urandom(31) + b"\x00")
    gcm = service.encrypt_response(b"key", mode="gcm")
    tag = segments(gcm)[4]
    altered = replace_segment(gcm, 4, ("A" if tag[0] != "A" else "B") + tag[1:])
    messages = set()
    for token in (other.encrypt_response(b"k" * 32, mode="cbc"), altered, bad_padding):
        with pytest.raises(DecryptionError) as caught:
            decrypt_jwe(session_key, token, size=32, allow_cbc=True)
        messages.add(str(caught.value))
    assert len(messages) == 1
    with pytest.raises(InvalidData):  # a malformed token is no decryption failure
        decrypt_jwe(session_key, "a.b.c")


def test_a_cbc_plaintext_of_another_size_is_the_same_failure(
    session_key: SessionKey, service: TokenService
) -> None:
    """CBC does not authenticate the length: a validly padded 47-byte plaintext (what another
    key gives 1 time in 256) is the one DecryptionError when 32 bytes are expected; GCM
    authenticates it, so there the plaintext comes back for the caller's own check."""
    cbc = seal_cbc_raw(service.session_key, os.urandom(24), os.urandom(47) + b"\x01")
    assert len(decrypt_jwe(session_key, cbc, allow_cbc=True)) == 47
    with pytest.raises(DecryptionError) as caught:
        decrypt_jwe(session_key, cbc, size=32, allow_cbc=True)
    with pytest.raises(DecryptionError) as other_key:
        decrypt_jwe(session_key, TokenService().encrypt_response(b"k" * 32, mode="gcm"), size=32)
    assert str(caught.value) == str(other_key.value)
    gcm = service.encrypt_response(os.urandom(16), mode="gcm")
    assert len(decrypt_jwe(session_key, gcm, size=32)) == 16
