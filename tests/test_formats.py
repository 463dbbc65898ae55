"""Formats: PEM/DER, JWK, BCRYPT blobs, CSRs, compact JWS and raw signatures.

What a user would check, checked independently: openssl verifies the CSRs and the raw
signatures, the JWK thumbprint matches RFC 7638's example, the BCRYPT blob's bytes are laid out
by hand, and JWS segments are decoded and verified with the standard library and pyca directly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as PycaInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_keys.errors import (
    EntraKeysError,
    InvalidData,
    InvalidSignature,
    KeyUsageError,
    UnsupportedAlgorithm,
)
from entra_keys.formats import (
    REGISTRATION_SUBJECT,
    SIGNATURE_ALGORITHMS,
    algorithms_for,
    bcrypt_rsakey_blob,
    build_csr,
    csr_der,
    csr_pem,
    jwk,
    jwk_thumbprint,
    jws_sign,
    jws_verify,
    load_public_key,
    parse_subject,
    public_der,
    public_key_from_bcrypt,
    public_key_from_jwk,
    public_pem,
    sign_raw,
    verify_raw,
)
from entra_keys.provider import EntraPrivateKey, KeyType, KeyUsage
from entra_keys.providers.software import SoftwareProvider

DATA = b"the bytes a join agent signs\n"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

# Hypothesis over a function-scoped key fixture: the key does not change between examples.
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# The openssl digest option and extra -sigopt arguments of each JWS algorithm.
OPENSSL_DGST: dict[str, tuple[str, ...]] = {
    "RS256": ("-sha256",),
    "PS256": (
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:digest",
    ),
    "ES256": ("-sha256",),
    "ES384": ("-sha384",),
}
JWK_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- keys -----------------------------------------------------------------------------------


@functools.cache
def software_key(key_type: KeyType, usage: KeyUsage = KeyUsage.SIGN) -> EntraPrivateKey:
    """A software provider key of that type, made once per test run."""
    return SoftwareProvider().create_key(key_type, usage)


@functools.cache
def other_key(key_type: KeyType) -> PrivateKey:
    """A second, unrelated plain pyca key of the same type (for wrong-key checks)."""
    if key_type.is_rsa:
        return rsa.generate_private_key(65537, key_type.bits)
    return ec.generate_private_key(key_type.curve)


@functools.cache
def _pyca_key(name: str) -> PrivateKey:
    if name == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(params=["rsa2048", "ecc256"])
def pyca_key(request: pytest.FixtureRequest) -> PrivateKey:
    """A plain pyca key (not an entra_keys key): the formats take any cryptography key."""
    return _pyca_key(request.param)


def key_type(key: PrivateKey) -> KeyType:
    return KeyType.of(key.public_key())


def b64d(text: str) -> bytes:
    """Independent base64url decoding (stdlib, padding restored) to check our output."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data: bytes) -> str:
    """Independent base64url encoding without padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def openssl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def openssl_dgst_verify(
    tmp_path: Path, pub: bytes, data: bytes, signature: bytes, alg: str
) -> subprocess.CompletedProcess[str]:
    """``openssl dgst -verify pub.pem -signature sig data`` with the algorithm's options."""
    (tmp_path / "pub.pem").write_bytes(pub)
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(signature)
    return openssl(
        tmp_path,
        "dgst",
        *OPENSSL_DGST[alg],
        "-verify",
        "pub.pem",
        "-signature",
        "sig",
        "data",
    )


def numbers(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> object:
    return key.public_numbers()


# --- PEM / DER ------------------------------------------------------------------------------


@needs_openssl
def test_public_pem_and_der_are_the_spki_openssl_reads(
    signing_key: EntraPrivateKey, tmp_path: Path
) -> None:
    pem = public_pem(signing_key)
    der = public_der(signing_key)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert public_pem(signing_key.public_key()) == pem
    assert public_der(signing_key.public_key()) == der
    loaded = serialization.load_der_public_key(der)
    assert isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    assert numbers(loaded) == numbers(signing_key.public_key())
    (tmp_path / "pub.der").write_bytes(der)
    out = openssl(tmp_path, "pkey", "-pubin", "-inform", "DER", "-in", "pub.der")
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode() == pem
    assert numbers(load_public_key(pem)) == numbers(signing_key.public_key())
    assert numbers(load_public_key(der)) == numbers(signing_key.public_key())


def test_load_public_key_takes_bytes_likes_and_refuses_the_rest_typed(
    signing_key: EntraPrivateKey,
) -> None:
    """A memoryview raised AttributeError, None AttributeError and a str TypeError; every
    bytes-like is read as its bytes, anything else is InvalidData (as public_key_from_bcrypt)."""
    want = numbers(signing_key.public_key())
    for data in (public_pem(signing_key.public_key()), public_der(signing_key.public_key())):
        spread = bytes(b for c in data for b in (c, 0))
        for view in (memoryview(data), bytearray(data), memoryview(spread)[::2]):
            assert numbers(load_public_key(view)) == want  # type: ignore[arg-type]
    for bad in (None, 5, public_pem(signing_key.public_key()).decode()):
        with pytest.raises(InvalidData, match="SubjectPublicKeyInfo is bytes, not"):
            load_public_key(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"0\x82\x01\x22",
    ],
    ids=["empty", "garbage", "bad-pem", "truncated-der"],
)
def test_load_public_key_refuses_what_does_not_parse(data: bytes) -> None:
    with pytest.raises(InvalidData, match="not a PEM or DER SubjectPublicKeyInfo"):
        load_public_key(data)


def test_keys_other_than_rsa_and_ec_are_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    spki = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnsupportedAlgorithm, match="Ed25519"):
        load_public_key(spki)
    with pytest.raises(UnsupportedAlgorithm, match="only RSA and elliptic-curve"):
        public_pem(other)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedAlgorithm, match="only RSA and elliptic-curve"):
        jwk(other.public_key())  # type: ignore[arg-type]


# --- JWK ------------------------------------------------------------------------------------

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc7638_example_thumbprint() -> None:
    key = public_key_from_jwk(RFC7638_JWK)
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    assert jwk_thumbprint(key) == RFC7638_THUMBPRINT
    assert jwk(key) == {
        "kty": "RSA",
        "n": RFC7638_JWK["n"],
        "e": "AQAB",
        "kid": RFC7638_THUMBPRINT,
    }


def test_jwk_members_are_the_key_numbers_in_base64url(signing_key: EntraPrivateKey) -> None:
    doc = jwk(signing_key)
    public = signing_key.public_key()
    assert jwk(public) == doc
    for value in doc.values():
        assert not set(value) & set("=+/")
    if isinstance(public, rsa.RSAPublicKey):
        assert set(doc) == {"kty", "n", "e", "kid"}
        assert doc["kty"] == "RSA"
        assert doc["e"] == "AQAB"
        assert b64d(doc["n"]) == public.public_numbers().n.to_bytes(public.key_size // 8, "big")
        required: tuple[str, ...] = ("e", "kty", "n")
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        size = (public.curve.key_size + 7) // 8
        point = public.public_numbers()
        assert set(doc) == {"kty", "crv", "x", "y", "kid"}
        assert doc["kty"] == "EC"
        assert doc["crv"] == JWK_CURVES[public.curve.name]
        assert b64d(doc["x"]) == point.x.to_bytes(size, "big")
        assert b64d(doc["y"]) == point.y.to_bytes(size, "big")
        required = ("crv", "kty", "x", "y")
    # RFC 7638 §3: the required members, sorted, no whitespace, SHA-256, base64url.
    canonical = "{" + ",".join(f'"{name}":"{doc[name]}"' for name in required) + "}"
    thumbprint = b64e(hashlib.sha256(canonical.encode()).digest())
    assert doc["kid"] == thumbprint
    assert jwk_thumbprint(signing_key) == thumbprint
    assert jwk_thumbprint(public) == thumbprint


@pytest.mark.parametrize("kind", KeyType.asymmetric(), ids=lambda t: t.value)
def test_jwk_round_trips(kind: KeyType) -> None:
    key = software_key(kind)
    back = public_key_from_jwk(jwk(key))
    assert numbers(back) == numbers(key.public_key())
    assert jwk_thumbprint(back) == jwk_thumbprint(key)


def test_ec_jwk_coordinates_keep_their_leading_zero_bytes() -> None:
    # Find a P-256 key whose x coordinate starts with a zero byte (about 1 in 256).
    for scalar in range(1, 20_000):
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        if key.public_key().public_numbers().x < 1 << 248:
            break
    else:  # pragma: no cover
        pytest.fail("no P-256 point with a short x coordinate found")
    doc = jwk(key)
    x = b64d(doc["x"])
    assert len(x) == 32
    assert x[0] == 0
    assert numbers(public_key_from_jwk(doc)) == numbers(key.public_key())


def _rsa_doc() -> dict[str, Any]:
    return dict(jwk(software_key(KeyType.RSA2048)))


def _ec_doc() -> dict[str, Any]:
    return dict(jwk(software_key(KeyType.ECC256)))


def _with(base: Callable[[], dict[str, Any]], **changes: Any) -> Callable[[], object]:
    def make() -> object:
        doc = base()
        for name, value in changes.items():
            if value is None:
                del doc[name]
            else:
                doc[name] = value(doc[name]) if callable(value) else value
        return doc

    return make


def _flip_last_byte(text: str) -> str:
    raw = bytearray(b64d(text))
    raw[-1] ^= 1
    return b64e(bytes(raw))


BAD_JWKS: list[tuple[str, Callable[[], object], type[EntraKeysError], str]] = [
    ("a list", lambda: [], InvalidData, "a JWK is a JSON object"),
    ("no kty", _with(_rsa_doc, kty=None), InvalidData, "'kty' member is missing"),
    ("symmetric", lambda: {"kty": "oct", "k": "AAAA"}, UnsupportedAlgorithm, "'oct'"),
    ("rsa no n", _with(_rsa_doc, n=None), InvalidData, "'n' member is missing"),
    ("rsa e int", _with(_rsa_doc, e=65537), InvalidData, "'e' member must be a string"),
    ("rsa padded n", _with(_rsa_doc, n=lambda n: n + "=="), InvalidData, "padding"),
    ("rsa std alphabet", _with(_rsa_doc, n=lambda n: "+" + n[1:]), InvalidData, "standard"),
    (
        "rsa n leading zero",
        _with(_rsa_doc, n=lambda n: b64e(b"\0" + b64d(n))),
        InvalidData,
        "minimal-length",
    ),
    ("rsa even n", _with(_rsa_doc, n=_flip_last_byte), InvalidData, "not a valid RSA"),
    ("rsa private", _with(_rsa_doc, d="AQAB"), InvalidData, "carries d"),
    ("ec no crv", _with(_ec_doc, crv=None), InvalidData, "'crv' member"),
    ("ec secp256k1", _with(_ec_doc, crv="secp256k1"), UnsupportedAlgorithm, "secp256k1"),
    ("ec short x", _with(_ec_doc, x=lambda x: b64e(b64d(x)[1:])), InvalidData, "32 bytes"),
    ("ec off curve", _with(_ec_doc, y=_flip_last_byte), InvalidData, "not a valid EC"),
    ("ec private", _with(_ec_doc, d="AAAA"), InvalidData, "carries d"),
]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [case[1:] for case in BAD_JWKS],
    ids=[case[0] for case in BAD_JWKS],
)
def test_public_key_from_jwk_refuses_bad_input(
    make: Callable[[], object], error: type[EntraKeysError], message: str
) -> None:
    with pytest.raises(error, match=message):
        public_key_from_jwk(make())  # type: ignore[arg-type]


# --- BCRYPT_RSAKEY_BLOB ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "length"), [(KeyType.RSA2048, 283), (KeyType.RSA3072, 411)], ids=["2048", "3072"]
)
def test_bcrypt_blob_layout(kind: KeyType, length: int) -> None:
    key = software_key(kind)
    public = key.public_key().public_numbers()
    assert isinstance(public, rsa.RSAPublicNumbers)
    blob = bcrypt_rsakey_blob(key)
    assert len(blob) == length
    magic, bits, exp_len, mod_len, prime1, prime2 = struct.unpack_from("<4s5I", blob)
    assert (magic, bits, exp_len, mod_len, prime1, prime2) == (
        b"RSA1",
        kind.bits,
        3,
        kind.bits // 8,
        0,
        0,
    )
    assert blob[24:27] == b"\x01\x00\x01"
    assert blob[27:] == public.n.to_bytes(kind.bits // 8, "big")
    assert public_key_from_bcrypt(blob).public_numbers() == public


def test_bcrypt_blob_round_trips_rsa_and_refuses_ec(signing_key: EntraPrivateKey) -> None:
    public = signing_key.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        with pytest.raises(UnsupportedAlgorithm, match="RSA key, not an EC key"):
            bcrypt_rsakey_blob(signing_key)
        return
    blob = bcrypt_rsakey_blob(signing_key)
    assert bcrypt_rsakey_blob(public) == blob
    assert public_key_from_bcrypt(blob).public_numbers() == public.public_numbers()


def _blob(
    magic: bytes = b"RSA1",
    bits: int = 2048,
    exponent: bytes = b"\x01\x00\x01",
    modulus: bytes | None = None,
    primes: tuple[bytes, bytes] = (b"", b""),
    exp_len: int | None = None,
    mod_len: int | None = None,
) -> bytes:
    """A BCRYPT blob laid out by hand around the RSA-2048 test key."""
    if modulus is None:
        public = software_key(KeyType.RSA2048).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        modulus = public.public_numbers().n.to_bytes(256, "big")
    header = struct.pack(
        "<4s5I",
        magic,
        bits,
        len(exponent) if exp_len is None else exp_len,
        len(modulus) if mod_len is None else mod_len,
        len(primes[0]),
        len(primes[1]),
    )
    return header + exponent + modulus + primes[0] + primes[1]


def _private_blob() -> bytes:
    numbers = software_key(KeyType.RSA2048).private_numbers()
    assert isinstance(numbers, rsa.RSAPrivateNumbers)
    primes = (numbers.p.to_bytes(128, "big"), numbers.q.to_bytes(128, "big"))
    return _blob(magic=b"RSA2", primes=primes)


def _even_modulus() -> bytes:
    good = bytearray(_blob())
    good[-1] ^= 1
    return bytes(good)


BAD_BLOBS: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "shorter than the 24-byte header"),
    ("short header", lambda: _blob()[:20], "shorter than the 24-byte header"),
    ("truncated", lambda: _blob()[:-1], "truncated: the header says 283 bytes"),
    ("trailing", lambda: _blob() + b"\0", "trailing bytes: the header says 283 bytes"),
    ("private RSA2", _private_blob, "magic b'RSA2' is a private blob"),
    ("full private RSA3", lambda: _blob(magic=b"RSA3"), "magic b'RSA3' is a private blob"),
    (
        "RSA1 with primes",
        lambda: _blob(primes=(b"\x01" * 128, b"\x01" * 128)),
        "carries no primes",
    ),
    ("ECC magic", lambda: _blob(magic=b"ECS1"), "magic b'ECS1' is not 'RSA1'"),
    ("bits too few", lambda: _blob(bits=2047), "BitLength=2047 but the modulus has 2048 bits"),
    ("bits too many", lambda: _blob(bits=2056), "is 257 bytes, but cbModulus=256"),
    ("no exponent", lambda: _blob(exponent=b""), "cannot be empty"),
    ("padded exponent", lambda: _blob(exponent=b"\0\x01\x00\x01"), "leading zero"),
    ("exponent 1", lambda: _blob(exponent=b"\x01"), "not a valid RSA public key"),
    ("even modulus", _even_modulus, "not a valid RSA public key"),
    ("exp length lies", lambda: _blob(exp_len=4), "trailing bytes|truncated"),
    ("huge modulus length", lambda: _blob(bits=0xFFFFFFF8, mod_len=0x1FFFFFFF), "truncated"),
]


@pytest.mark.parametrize(
    ("make", "message"), [case[1:] for case in BAD_BLOBS], ids=[case[0] for case in BAD_BLOBS]
)
def test_public_key_from_bcrypt_refuses_bad_blobs(make: Callable[[], bytes], message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        public_key_from_bcrypt(make())


@st.composite
def near_blobs(draw: st.DrawFn) -> bytes:
    """A valid public blob of a random odd modulus, then up to two random mutations."""
    n = draw(st.integers(min_value=2**64, max_value=2**600)) | 1
    e = draw(st.sampled_from([3, 65537]) | st.integers(3, 2**40)) | 1
    modulus, exponent = n.to_bytes((n.bit_length() + 7) // 8, "big"), e.to_bytes(6, "big")
    exponent = exponent.lstrip(b"\0")
    header = struct.pack("<4s5I", b"RSA1", n.bit_length(), len(exponent), len(modulus), 0, 0)
    blob = bytearray(header + exponent + modulus)
    for _ in range(draw(st.integers(0, 2))):
        if not blob:
            break
        at = draw(st.integers(0, len(blob) - 1))
        change = draw(st.sampled_from(["flip", "cut", "append", "field"]))
        if change == "flip":
            blob[at] ^= draw(st.integers(1, 255))
        elif change == "cut":
            del blob[at:]
        elif change == "append":
            blob += draw(st.binary(min_size=1, max_size=4))
        elif len(blob) >= 24:
            field = draw(st.integers(0, 5))
            blob[4 * field : 4 * field + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(blob)


@HYPOTHESIS
@given(blob=st.binary(max_size=400) | near_blobs() | near_blobs())
def test_public_key_from_bcrypt_random_bytes_raise_only_invalid_data(blob: bytes) -> None:
    try:
        key = public_key_from_bcrypt(blob)
    except InvalidData:
        return
    # The parser is strict: whatever it accepts is exactly the blob we would write.
    assert bcrypt_rsakey_blob(key) == blob


# --- CSR ------------------------------------------------------------------------------------


@needs_openssl
def test_csr_verifies_with_openssl(signing_key: EntraPrivateKey, tmp_path: Path) -> None:
    csr = build_csr(signing_key)
    (tmp_path / "csr.pem").write_bytes(csr_pem(csr))
    verified = openssl(tmp_path, "req", "-in", "csr.pem", "-verify", "-noout")
    # openssl 3.0 exits 0 even when the check fails: read what it says.
    assert verified.returncode == 0, verified.stderr
    assert "self-signature verify OK" in verified.stdout + verified.stderr
    subject = openssl(
        tmp_path, "req", "-in", "csr.pem", "-noout", "-subject", "-nameopt", "RFC2253"
    )
    assert subject.stdout.strip() == f"subject={REGISTRATION_SUBJECT}"
    pubkey = openssl(tmp_path, "req", "-in", "csr.pem", "-noout", "-pubkey")
    assert pubkey.stdout.encode() == public_pem(signing_key)
    # The same request as DER, as the Device Registration Service receives it.
    assert x509.load_der_x509_csr(csr_der(csr)) == csr
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    expected_oid = (
        SignatureAlgorithmOID.RSA_WITH_SHA256
        if isinstance(signing_key, rsa.RSAPrivateKey)
        else SignatureAlgorithmOID.ECDSA_WITH_SHA256
    )
    assert csr.signature_algorithm_oid == expected_oid
    # openssl's check means something: a request with a damaged signature fails it.
    damaged = bytearray(csr_der(csr))
    damaged[-1] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(damaged))
    (tmp_path / "bad.pem").write_bytes(csr_pem(tampered))
    assert not tampered.is_signature_valid
    refused = openssl(tmp_path, "req", "-in", "bad.pem", "-verify", "-noout")
    assert "verify OK" not in refused.stdout + refused.stderr
    assert "verify failure" in refused.stdout + refused.stderr


@needs_openssl
@pytest.mark.parametrize(
    ("subject", "rfc2253"),
    [
        ("CN=foo,O=bar", "CN=foo,O=bar"),
        (
            "CN=device\\, one,OU=Devices,O=Contoso,C=US",
            "CN=device\\, one,OU=Devices,O=Contoso,C=US",
        ),
        (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "named")]),
            "CN=named",
        ),
    ],
    ids=["cn-o", "escaped", "x509-name"],
)
def test_csr_subject(subject: str | x509.Name, rfc2253: str, tmp_path: Path) -> None:
    csr = build_csr(software_key(KeyType.ECC256), subject)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == rfc2253
    (tmp_path / "csr.pem").write_bytes(csr_pem(csr))
    out = openssl(tmp_path, "req", "-in", "csr.pem", "-noout", "-subject", "-nameopt", "RFC2253")
    assert out.stdout.strip() == f"subject={rfc2253}"


@pytest.mark.parametrize("subject", ["", "CN", "FOO=bar", "CN=a,,O=b", "C=USA", "CN="], ids=repr)
def test_bad_subjects_are_invalid_data(subject: str) -> None:
    with pytest.raises(InvalidData, match=r"RFC 4514|subject is empty"):
        parse_subject(subject)
    with pytest.raises(InvalidData):
        build_csr(software_key(KeyType.ECC256), subject)


def test_csr_is_signed_through_the_keys_own_sign() -> None:
    # Only the key's own sign() refuses a decryption key: pyca's builder alone would not.
    with pytest.raises(KeyUsageError, match="created to decrypt"):
        build_csr(software_key(KeyType.RSA2048, KeyUsage.DECRYPT))
    with pytest.raises(UnsupportedAlgorithm, match="private key"):
        build_csr(software_key(KeyType.RSA2048).public_key())  # type: ignore[arg-type]


# --- raw signatures -------------------------------------------------------------------------


def test_algorithms_for_each_key_type() -> None:
    assert algorithms_for(software_key(KeyType.RSA2048)) == ("RS256", "PS256")
    assert algorithms_for(software_key(KeyType.RSA3072).public_key()) == ("RS256", "PS256")
    assert algorithms_for(software_key(KeyType.ECC256)) == ("ES256",)
    assert algorithms_for(software_key(KeyType.ECC384)) == ("ES384",)


@needs_openssl
def test_raw_signatures_verify_with_openssl(signing_key: EntraPrivateKey, tmp_path: Path) -> None:
    pub = public_pem(signing_key)
    for alg in algorithms_for(signing_key):
        signature = sign_raw(signing_key, DATA, alg)
        if alg.startswith("ES"):
            utils.decode_dss_signature(signature)  # DER, as openssl wants
        out = openssl_dgst_verify(tmp_path, pub, DATA, signature, alg)
        assert out.returncode == 0, (alg, out.stdout, out.stderr)
        assert "Verified OK" in out.stdout
        verify_raw(signing_key.public_key(), DATA, signature, alg)
        verify_raw(signing_key, DATA, signature, alg)
        # Both openssl and verify_raw refuse other data.
        assert openssl_dgst_verify(tmp_path, pub, DATA + b"!", signature, alg).returncode != 0
        with pytest.raises(InvalidSignature, match=f"the {alg} signature does not verify"):
            verify_raw(signing_key.public_key(), DATA + b"!", signature, alg)


@pytest.fixture(scope="module")
def openssl_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys made by openssl itself, to check that verify_raw accepts openssl's signatures."""
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("openssl-keys")
    for name, options in [
        ("rsa", ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")),
        ("p256", ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")),
        ("p384", ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384")),
    ]:
        made = openssl(where, "genpkey", *options, "-out", f"{name}.key")
        assert made.returncode == 0, made.stderr
        exported = openssl(where, "pkey", "-in", f"{name}.key", "-pubout", "-out", f"{name}.pem")
        assert exported.returncode == 0, exported.stderr
    (where / "data").write_bytes(DATA)
    return where


@pytest.mark.parametrize(
    ("alg", "name"), [("RS256", "rsa"), ("PS256", "rsa"), ("ES256", "p256"), ("ES384", "p384")]
)
def test_verify_raw_accepts_openssl_signatures(openssl_keys: Path, alg: str, name: str) -> None:
    made = openssl(
        openssl_keys, "dgst", *OPENSSL_DGST[alg], "-sign", f"{name}.key", "-out", "sig", "data"
    )
    assert made.returncode == 0, made.stderr
    public = load_public_key((openssl_keys / f"{name}.pem").read_bytes())
    signature = (openssl_keys / "sig").read_bytes()
    verify_raw(public, DATA, signature, alg)
    with pytest.raises(InvalidSignature):
        verify_raw(public, DATA[:-1], signature, alg)


def test_algorithms_that_do_not_fit_the_key_are_refused(signing_key: EntraPrivateKey) -> None:
    misfits = [alg for alg in SIGNATURE_ALGORITHMS if alg not in algorithms_for(signing_key)]
    assert misfits
    for alg in [*misfits, "HS256", "none", "RS512"]:
        with pytest.raises(UnsupportedAlgorithm, match=alg):
            sign_raw(signing_key, DATA, alg)
        with pytest.raises(UnsupportedAlgorithm, match=alg):
            verify_raw(signing_key.public_key(), DATA, b"\0" * 64, alg)
        with pytest.raises(UnsupportedAlgorithm, match=alg):
            jws_sign(signing_key, DATA, alg)
    with pytest.raises(UnsupportedAlgorithm, match="private key"):
        sign_raw(signing_key.public_key(), DATA, algorithms_for(signing_key)[0])  # type: ignore[arg-type]


# --- compact JWS ----------------------------------------------------------------------------


def segments(token: str) -> tuple[dict[str, Any], bytes, bytes]:
    """A token's header, payload and signature, decoded with the standard library only."""
    header, payload, signature = token.split(".")
    return json.loads(b64d(header)), b64d(payload), b64d(signature)


def pyca_verify(public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, token: str) -> None:
    """Verify a JWS with pyca directly, following RFC 7518 by hand."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    signature = b64d(signature_b64)
    alg = json.loads(b64d(header_b64))["alg"]
    if isinstance(public, rsa.RSAPublicKey):
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if alg == "PS256":
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public.verify(signature, signing_input, pad, hashes.SHA256())
        return
    size = {"ES256": 32, "ES384": 48}[alg]
    assert len(signature) == 2 * size
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
    public.verify(utils.encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))


def test_jws_round_trip_with_a_json_payload(signing_key: EntraPrivateKey) -> None:
    claims = {"sub": "device", "iat": 1700000000, "nonce": "é"}
    for alg in algorithms_for(signing_key):
        token = jws_sign(signing_key, claims, alg, {"typ": "JWT"})
        header, payload, _ = segments(token)
        assert header == {"alg": alg, "typ": "JWT"}
        assert b64d(token.split(".")[0]) == f'{{"alg":"{alg}","typ":"JWT"}}'.encode()
        assert payload == '{"sub":"device","iat":1700000000,"nonce":"é"}'.encode()
        assert json.loads(payload) == claims
        pyca_verify(signing_key.public_key(), token)
        assert jws_verify(token, signing_key.public_key(), [alg]) == (header, payload)
        assert jws_verify(token, signing_key, SIGNATURE_ALGORITHMS) == (header, payload)


def test_jws_sign_refuses_a_member_named_twice(signing_key: EntraPrivateKey) -> None:
    """json.dumps wrote {1: "a", "1": "b"} as '{"1":"a","1":"b"}', which was signed, though the
    strict reader (and so every service of ours) refuses it; the payload and the header alike."""
    alg = algorithms_for(signing_key)[0]
    for payload in ({1: "a", "1": "b"}, {None: "a", "null": "b"}, {"x": {2: "a", "2": "b"}}):
        with pytest.raises(InvalidData, match="a member name is a str"):
            jws_sign(signing_key, payload, alg)
    with pytest.raises(InvalidData, match="the JWS header: a member name is a str"):
        jws_sign(signing_key, b"x", alg, {5: "a", "5": "b"})  # type: ignore[dict-item]
    token = jws_sign(signing_key, {"1": "a"}, alg)  # the control
    assert jws_verify(token, signing_key.public_key(), [alg])[1] == b'{"1":"a"}'


def test_jws_header_is_alg_then_the_callers_members(signing_key: EntraPrivateKey) -> None:
    alg = algorithms_for(signing_key)[0]
    bare = jws_sign(signing_key, b"x", alg)
    assert b64d(bare.split(".")[0]) == f'{{"alg":"{alg}"}}'.encode()
    token = jws_sign(signing_key, b"x", alg, {"x5c": ["MIIB"], "kdf_ver": 2, "alg": alg})
    assert b64d(token.split(".")[0]) == f'{{"alg":"{alg}","x5c":["MIIB"],"kdf_ver":2}}'.encode()
    with pytest.raises(UnsupportedAlgorithm, match="the header says alg 'HS256'"):
        jws_sign(signing_key, b"x", alg, {"alg": "HS256"})


@HYPOTHESIS
@given(payload=st.binary(max_size=300))
def test_jws_payload_bytes_round_trip(signing_key: EntraPrivateKey, payload: bytes) -> None:
    for alg in algorithms_for(signing_key):
        token = jws_sign(signing_key, payload, alg)
        assert segments(token)[1] == payload
        assert jws_verify(token, signing_key.public_key(), [alg]) == ({"alg": alg}, payload)


def _replace(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def test_jws_tampering_is_invalid_signature(signing_key: EntraPrivateKey) -> None:
    public = signing_key.public_key()
    for alg in algorithms_for(signing_key):
        token = jws_sign(signing_key, {"sub": "device"}, alg)
        _, _, signature = segments(token)
        flipped = bytes([signature[0] ^ 0x80]) + signature[1:]
        tampered = {
            "payload": _replace(token, 1, b64e(b'{"sub":"attacker"}')),
            "header": _replace(token, 0, b64e(f'{{"alg":"{alg}","typ":"JWT"}}'.encode())),
            "signature bit": _replace(token, 2, b64e(flipped)),
            "signature short": _replace(token, 2, b64e(signature[:-1])),
            "signature empty": _replace(token, 2, ""),
            "other key": jws_sign(other_key(key_type(signing_key)), {"sub": "device"}, alg),
        }
        for what, bad in tampered.items():
            with pytest.raises(InvalidSignature):
                jws_verify(bad, public, [alg])
            if alg.startswith("ES") and what in ("signature short", "signature empty"):
                continue  # not an r || s pair at all: nothing for pyca to verify
            with pytest.raises(PycaInvalidSignature):  # the independent check agrees
                pyca_verify(public, bad)


def _token(header: dict[str, Any] | bytes, payload: bytes = b"{}", signature: bytes = b"") -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return f"{b64e(raw)}.{b64e(payload)}.{b64e(signature)}"


def test_jws_alg_confusion_is_refused(signing_key: EntraPrivateKey) -> None:
    public = signing_key.public_key()
    allowed = algorithms_for(signing_key)
    # HS256 keyed with the public key, the classic confusion attack, and alg "none".
    hs_header = b64e(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = hs_header + "." + b64e(b"{}")
    mac = hmac.new(public_pem(signing_key), signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{b64e(mac)}"
    none = _token({"alg": "none"})
    for token in (hs256, none):
        with pytest.raises(InvalidData, match="is not allowed here"):
            jws_verify(token, public, allowed)
    for asked in (["HS256"], ["none"], [*allowed, "HS256"]):
        with pytest.raises(UnsupportedAlgorithm, match="cannot verify"):
            jws_verify(hs256, public, asked)
    with pytest.raises(TypeError, match="not a str"):
        jws_verify(hs256, public, allowed[0])
    # A token of another key family, with its algorithm allowed: refused before any math.
    if isinstance(public, rsa.RSAPublicKey):
        foreign = jws_sign(software_key(KeyType.ECC256), b"x", "ES256")
    else:
        foreign = jws_sign(software_key(KeyType.RSA2048), b"x", "RS256")
    with pytest.raises(InvalidData, match="does not fit the key"):
        jws_verify(foreign, public, SIGNATURE_ALGORITHMS)
    # A real token of this key, but its algorithm not among the allowed ones.
    token = jws_sign(signing_key, b"x", allowed[0])
    others = [alg for alg in SIGNATURE_ALGORITHMS if alg != allowed[0]]
    with pytest.raises(InvalidData, match="is not allowed here"):
        jws_verify(token, public, others)


def test_jws_curve_mismatch_is_invalid_data() -> None:
    token = jws_sign(software_key(KeyType.ECC384), b"x", "ES384")
    with pytest.raises(InvalidData, match="ES384 needs a secp384r1 key, not secp256r1"):
        jws_verify(token, software_key(KeyType.ECC256).public_key(), ["ES256", "ES384"])


MALFORMED_TOKENS: list[tuple[str, Callable[[str], object], str]] = [
    ("empty", lambda t: "", "has 3 segments, this token has 1"),
    ("two segments", lambda t: t.rsplit(".", 1)[0], "this token has 2"),
    ("JWE shape", lambda t: t + ".a.b", "this token has 5"),
    ("bytes", lambda t: t.encode(), "a compact JWS is a str"),
    ("trailing newline", lambda t: t + "\n", "JWS signature: base64url"),
    ("header std alphabet", lambda t: "+" + t[1:], "JWS header: base64url"),
    ("header padded", lambda t: _replace(t, 0, t.split(".")[0] + "=="), "padding"),
    ("header not JSON", lambda t: _replace(t, 0, b64e(b"not json")), "JWS header is not JSON"),
    ("header array", lambda t: _replace(t, 0, b64e(b'["RS256"]')), "JSON object"),
    ("header latin-1", lambda t: _replace(t, 0, b64e(b'{"alg":"\xe9"}')), "not UTF-8 JSON"),
    (
        "header UTF-16",
        lambda t: _replace(t, 0, b64e('{"alg":"RS256"}'.encode("utf-16"))),
        "not UTF-8 JSON",
    ),
    (
        "duplicate alg",
        lambda t: _replace(t, 0, b64e(b'{"alg":"none","alg":"RS256"}')),
        "'alg' appears twice",
    ),
    ("no alg", lambda t: _replace(t, 0, b64e(b'{"typ":"JWT"}')), "'alg' is missing"),
    ("alg list", lambda t: _replace(t, 0, b64e(b'{"alg":["RS256"]}')), "not a string"),
    ("NaN", lambda t: _replace(t, 0, b64e(b'{"alg":"RS256","n":NaN}')), "NaN is not JSON"),
    (
        "crit",
        lambda t: _replace(t, 0, b64e(b'{"alg":"RS256","crit":["b64"],"b64":false}')),
        "'crit'",
    ),
    ("payload padded", lambda t: _replace(t, 1, "e30="), "JWS payload: base64url"),
    ("signature bad char", lambda t: _replace(t, 2, "!!"), "JWS signature: base64url"),
    ("signature non-canonical", lambda t: _replace(t, 2, "AR"), "not canonical"),
]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [case[1:] for case in MALFORMED_TOKENS],
    ids=[case[0] for case in MALFORMED_TOKENS],
)
def test_jws_malformed_tokens_are_invalid_data(
    mangle: Callable[[str], object], message: str
) -> None:
    key = software_key(KeyType.RSA2048)
    token = jws_sign(key, {"sub": "device"}, "RS256")
    with pytest.raises(InvalidData, match=message):
        jws_verify(mangle(token), key.public_key(), ["RS256"])  # type: ignore[arg-type]


TOKEN_CHARS = "AQgwz09-_.+/= \n"
HEADER_VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
ALG_NAMES = st.sampled_from([*SIGNATURE_ALGORITHMS, "HS256", "none", ""]) | HEADER_VALUES


@HYPOTHESIS
@given(token=st.text(alphabet="eyJAQ.-_+=/ ", max_size=60) | st.text(max_size=30))
def test_jws_verify_random_text_raises_only_entra_keys_errors(
    signing_key: EntraPrivateKey, token: str
) -> None:
    with pytest.raises((InvalidData, InvalidSignature)):
        jws_verify(token, signing_key.public_key(), SIGNATURE_ALGORITHMS)


@HYPOTHESIS
@given(data=st.data())
def test_jws_verify_mutated_tokens_raise_only_entra_keys_errors(
    signing_key: EntraPrivateKey, data: st.DataObject
) -> None:
    alg = data.draw(st.sampled_from(algorithms_for(signing_key)))
    original = jws_sign(signing_key, data.draw(st.binary(max_size=40)), alg, {"typ": "JWT"})
    token = original
    for _ in range(data.draw(st.integers(1, 2))):
        at = data.draw(st.integers(0, len(token)))
        change = data.draw(st.sampled_from(["replace", "delete", "insert", "header"]))
        if change == "replace" and at < len(token):
            token = token[:at] + data.draw(st.sampled_from(TOKEN_CHARS)) + token[at + 1 :]
        elif change == "delete":
            token = token[:at] + token[at + 1 :]
        elif change == "insert":
            token = token[:at] + data.draw(st.sampled_from(TOKEN_CHARS)) + token[at:]
        else:
            members = data.draw(st.dictionaries(st.text(max_size=5), HEADER_VALUES, max_size=3))
            if data.draw(st.booleans()):
                members["alg"] = data.draw(ALG_NAMES)
            raw = (
                json.dumps(members).encode() if data.draw(st.booleans()) else data.draw(st.binary())
            )
            token = _replace(token, 0, b64e(raw)) if token.count(".") == 2 else token
    if token == original:
        assert jws_verify(token, signing_key.public_key(), [alg])[0]["alg"] == alg
        return
    # Any other text is another token: base64url is canonical, so nothing else verifies.
    with pytest.raises((InvalidData, InvalidSignature)):
        jws_verify(token, signing_key.public_key(), SIGNATURE_ALGORITHMS)


# --- plain pyca keys ------------------------------------------------------------------------


@needs_openssl
def test_plain_pyca_keys_work_everywhere(pyca_key: PrivateKey, tmp_path: Path) -> None:
    public = pyca_key.public_key()
    assert numbers(load_public_key(public_pem(pyca_key))) == numbers(public)
    assert numbers(public_key_from_jwk(jwk(pyca_key))) == numbers(public)
    if isinstance(public, rsa.RSAPublicKey):
        blob = bcrypt_rsakey_blob(pyca_key)
        assert len(blob) == 283
        assert public_key_from_bcrypt(blob).public_numbers() == public.public_numbers()
    csr = build_csr(pyca_key)
    (tmp_path / "csr.pem").write_bytes(csr_pem(csr))
    verified = openssl(tmp_path, "req", "-in", "csr.pem", "-verify", "-noout")
    assert "self-signature verify OK" in verified.stdout + verified.stderr
    for alg in algorithms_for(pyca_key):
        token = jws_sign(pyca_key, {"a": 1}, alg)
        assert jws_verify(token, public, [alg]) == ({"alg": alg}, b'{"a":1}')
        signature = sign_raw(pyca_key, DATA, alg)
        out = openssl_dgst_verify(tmp_path, public_pem(pyca_key), DATA, signature, alg)
        assert out.returncode == 0, out.stderr


def test_pyjwt_signs_with_the_key_object_as_it_is(signing_key: EntraPrivateKey) -> None:
    """PyJWT calls only sign(): a TPM key works in it as it is (the README says so). PyJWT is no
    dependency: this runs where it is installed (jwcrypto, joserfc and Authlib call
    private_numbers(), which a TPM key refuses: formats.jws_sign is the way there)."""
    jwt = pytest.importorskip("jwt")
    alg = {2048: "RS256", 256: "ES256", 384: "ES384"}[signing_key.key_size]
    token = jwt.encode({"sub": "device"}, signing_key, algorithm=alg)
    assert jwt.decode(token, signing_key.public_key(), algorithms=[alg]) == {"sub": "device"}
    ours = jws_sign(signing_key, {"sub": "device"}, alg)
    assert jwt.decode(ours, signing_key.public_key(), algorithms=[alg]) == {"sub": "device"}
