"""Public halves and signatures of keys in the forms the Entra join and its peers exchange.

PEM / DER SubjectPublicKeyInfo, JWK (RFC 7517) with RFC 7638 thumbprints, the public
BCRYPT_RSAKEY_BLOB, PKCS#10 requests, compact JWS (RFC 7515) and raw signatures that
``openssl dgst`` checks. Everything here works on ``cryptography`` keys, so a TPM key and a
software key go through the same code. Parsers raise only ``InvalidData`` (or
``UnsupportedAlgorithm`` for a well-formed key of a kind not offered), never ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ._json import MAX_JSON_SIZE, as_bytes, b64url_decode, b64url_encode, dump_object, load_object
from .errors import InvalidData, InvalidSignature, UnsupportedAlgorithm
from .tcg.public import PublicKey

if TYPE_CHECKING:  # cryptography.x509 costs ~40 ms to import: only the CSR functions load it
    from cryptography import x509

__all__ = [
    "MAX_JWS_SIZE",
    "REGISTRATION_SUBJECT",
    "SIGNATURE_ALGORITHMS",
    "PrivateKey",
    "PublicKey",
    "algorithms_for",
    "bcrypt_rsakey_blob",
    "build_csr",
    "csr_der",
    "csr_pem",
    "jwk",
    "jwk_thumbprint",
    "jws_sign",
    "jws_verify",
    "load_public_key",
    "parse_subject",
    "public_der",
    "public_key_from_bcrypt",
    "public_key_from_jwk",
    "public_pem",
    "sign_raw",
    "verify_raw",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: A key whose public half is wanted: the public key itself or its private key.
AnyKey = PublicKey | PrivateKey

#: The subject of the device key's CSR sent to the Device Registration Service.
REGISTRATION_SUBJECT = "CN=7E980AD9-B86D-4306-9425-9AC066FB014A"

#: The longest compact JWS ``jws_verify`` reads unless told otherwise, in characters: a
#: ``MAX_JSON_SIZE`` payload in base64url, with room for its header and signature.
MAX_JWS_SIZE = 2 * MAX_JSON_SIZE

#: The JWS (RFC 7518) names of the signatures offered, for compact JWS and raw signatures.
SIGNATURE_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256", "ES384")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "PS256": hashes.SHA256,
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
}
_ALG_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}

# JWK curve names (RFC 7518 §6.2.1.1) and the pyca curves they stand for.
_JWK_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_JWK_NAMES = {curve.name: name for name, curve in _JWK_CURVES.items()}
_JWK_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

# BCRYPT_RSAKEY_BLOB header: Magic, BitLength, cbPublicExp, cbModulus, cbPrime1, cbPrime2.
_BCRYPT_HEADER = struct.Struct("<4sIIIII")
_BCRYPT_RSAPUBLIC_MAGIC = b"RSA1"
_BCRYPT_PRIVATE_MAGICS = (b"RSA2", b"RSA3")


# --- keys -----------------------------------------------------------------------------------


def _public(key: AnyKey) -> PublicKey:
    """The public half of a public or private RSA / EC key; UnsupportedAlgorithm otherwise."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key.public_key()
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key
    raise UnsupportedAlgorithm(
        f"key type {type(key).__name__}: only RSA and elliptic-curve keys are offered"
    )


def _private(key: PrivateKey) -> PrivateKey:
    """The key itself when it can sign; UnsupportedAlgorithm for a public key or other types."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise UnsupportedAlgorithm(
        f"signing needs an RSA or elliptic-curve private key, not {type(key).__name__}"
    )


def public_pem(key: AnyKey) -> bytes:
    """The public half as a PEM SubjectPublicKeyInfo ("BEGIN PUBLIC KEY"), what openssl reads."""
    return _public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(key: AnyKey) -> bytes:
    """The public half as a DER SubjectPublicKeyInfo."""
    return _public(key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes) -> PublicKey:
    """Loads a PEM or DER SubjectPublicKeyInfo (any bytes-like); InvalidData when it does not
    parse or is not bytes."""
    data = as_bytes(data, "a SubjectPublicKeyInfo")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, _PycaUnsupported) as exc:
        raise InvalidData(f"not a PEM or DER SubjectPublicKeyInfo ({exc})") from exc
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key
    raise UnsupportedAlgorithm(
        f"public key type {type(key).__name__}: only RSA and elliptic-curve keys are offered"
    )


def _rsa_public_key(e: int, n: int, where: str) -> rsa.RSAPublicKey:
    """An RSA public key from its numbers; pyca's checks plus an odd modulus, else InvalidData."""
    if n % 2 == 0:
        raise InvalidData(f"{where}: not a valid RSA public key (the modulus is even)")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise InvalidData(f"{where}: not a valid RSA public key ({exc})") from exc


def _int_bytes(value: int) -> bytes:
    """The minimal big-endian bytes of a positive integer."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# --- JWK ------------------------------------------------------------------------------------


def _jwk_required(key: PublicKey) -> dict[str, str]:
    """The members RFC 7638 requires for the key type (its thumbprint input)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        n, e = _int_bytes(numbers.n), _int_bytes(numbers.e)
        return {"kty": "RSA", "n": b64url_encode(n), "e": b64url_encode(e)}
    crv = _CURVE_JWK_NAMES.get(key.curve.name)
    if crv is None:
        raise UnsupportedAlgorithm(f"curve {key.curve.name} has no JWK name")
    size = (key.curve.key_size + 7) // 8
    point = key.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64url_encode(point.x.to_bytes(size, "big")),
        "y": b64url_encode(point.y.to_bytes(size, "big")),
    }


def _thumbprint(required: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(required), sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def jwk_thumbprint(key: AnyKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of the public half, base64url: a stable key id."""
    return _thumbprint(_jwk_required(_public(key)))


def jwk(key: AnyKey) -> dict[str, str]:
    """The public half as a JWK (RFC 7517/7518) with ``kid`` set to its RFC 7638 thumbprint."""
    members = _jwk_required(_public(key))
    return {**members, "kid": _thumbprint(members)}


def _jwk_member(data: Mapping[str, object], name: str) -> bytes:
    value = data.get(name)
    if value is None:
        raise InvalidData(f"JWK: the {name!r} member is missing")
    if not isinstance(value, str):
        raise InvalidData(f"JWK: the {name!r} member must be a string, not {type(value).__name__}")
    try:
        return b64url_decode(value)
    except InvalidData as exc:
        raise InvalidData(f"JWK member {name!r}: {exc}") from exc


def _jwk_uint(data: Mapping[str, object], name: str) -> int:
    raw = _jwk_member(data, name)
    if not raw or raw[0] == 0:
        raise InvalidData(f"JWK: the {name!r} member must be a minimal-length positive integer")
    return int.from_bytes(raw, "big")


def public_key_from_jwk(data: Mapping[str, object]) -> PublicKey:
    """The public key of an RSA or EC JWK, checked strictly; InvalidData on bad input."""
    if not isinstance(data, Mapping):
        raise InvalidData(f"a JWK is a JSON object, not {type(data).__name__}")
    kty = data.get("kty")
    if not isinstance(kty, str):
        raise InvalidData("JWK: the 'kty' member is missing or not a string")
    if kty not in ("RSA", "EC"):
        raise UnsupportedAlgorithm(f"JWK key type {kty!r}: only 'RSA' and 'EC' are offered")
    private = [name for name in _JWK_PRIVATE_MEMBERS if name in data]
    if private:
        raise InvalidData(f"JWK: a public key was expected but it carries {', '.join(private)}")
    try:
        if kty == "RSA":
            n = _jwk_uint(data, "n")
            e = _jwk_uint(data, "e")
            return _rsa_public_key(e, n, "JWK")
        crv = data.get("crv")
        if not isinstance(crv, str):
            raise InvalidData("JWK: the 'crv' member is missing or not a string")
        curve = _JWK_CURVES.get(crv)
        if curve is None:
            raise UnsupportedAlgorithm(f"JWK curve {crv!r}: P-256, P-384 and P-521 are offered")
        size = (curve.key_size + 7) // 8
        x = _jwk_member(data, "x")
        y = _jwk_member(data, "y")
        if len(x) != size or len(y) != size:
            raise InvalidData(f"JWK: {crv} coordinates are {size} bytes, not {len(x)} and {len(y)}")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError as exc:
        raise InvalidData(f"JWK: not a valid {kty} public key ({exc})") from exc


# --- BCRYPT_RSAKEY_BLOB ---------------------------------------------------------------------


def bcrypt_rsakey_blob(key: AnyKey) -> bytes:
    """The public BCRYPT_RSAKEY_BLOB ("RSA1") the Entra join sends as ``TransportKey``."""
    public = _public(key)
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedAlgorithm("a BCRYPT_RSAKEY_BLOB holds an RSA key, not an EC key")
    numbers = public.public_numbers()
    exponent = _int_bytes(numbers.e)
    modulus = _int_bytes(numbers.n)
    header = _BCRYPT_HEADER.pack(
        _BCRYPT_RSAPUBLIC_MAGIC, public.key_size, len(exponent), len(modulus), 0, 0
    )
    return header + exponent + modulus


def public_key_from_bcrypt(blob: bytes) -> rsa.RSAPublicKey:
    """Parses a public BCRYPT_RSAKEY_BLOB strictly; a private blob or any slack is InvalidData."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise InvalidData(f"a BCRYPT_RSAKEY_BLOB is bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _BCRYPT_HEADER.size:
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: {len(blob)} bytes is shorter than the "
            f"{_BCRYPT_HEADER.size}-byte header"
        )
    magic, bits, exp_len, mod_len, prime1_len, prime2_len = _BCRYPT_HEADER.unpack_from(blob)
    if magic in _BCRYPT_PRIVATE_MAGICS:
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: magic {magic!r} is a private blob; only public 'RSA1' is read"
        )
    if magic != _BCRYPT_RSAPUBLIC_MAGIC:
        raise InvalidData(f"BCRYPT_RSAKEY_BLOB: magic {magic!r} is not 'RSA1'")
    if prime1_len or prime2_len:
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: a public blob carries no primes, but cbPrime1={prime1_len} "
            f"and cbPrime2={prime2_len}"
        )
    if exp_len == 0 or mod_len == 0:
        raise InvalidData("BCRYPT_RSAKEY_BLOB: the exponent and modulus cannot be empty")
    if mod_len != (bits + 7) // 8:
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: a {bits}-bit modulus is {(bits + 7) // 8} bytes, "
            f"but cbModulus={mod_len}"
        )
    expected = _BCRYPT_HEADER.size + exp_len + mod_len
    if len(blob) != expected:
        what = "truncated" if len(blob) < expected else "trailing bytes"
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: {what}: the header says {expected} bytes, "
            f"the blob has {len(blob)}"
        )
    exponent = blob[_BCRYPT_HEADER.size : _BCRYPT_HEADER.size + exp_len]
    modulus = blob[_BCRYPT_HEADER.size + exp_len :]
    if exponent[0] == 0:
        raise InvalidData("BCRYPT_RSAKEY_BLOB: the exponent has a leading zero byte")
    n = int.from_bytes(modulus, "big")
    if n.bit_length() != bits:
        raise InvalidData(
            f"BCRYPT_RSAKEY_BLOB: BitLength={bits} but the modulus has {n.bit_length()} bits"
        )
    return _rsa_public_key(int.from_bytes(exponent, "big"), n, "BCRYPT_RSAKEY_BLOB")


# --- PKCS#10 --------------------------------------------------------------------------------


def parse_subject(subject: str) -> x509.Name:
    """Parses an RFC 4514 name such as "CN=foo,O=bar"; InvalidData when it does not parse."""
    from cryptography import x509

    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise InvalidData(f"not an RFC 4514 distinguished name: {subject!r}{detail}") from exc
    if not list(name):
        raise InvalidData("the subject is empty")
    return name


def build_csr(
    key: PrivateKey, subject: str | x509.Name = REGISTRATION_SUBJECT
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request signed by the key with SHA-256 (PKCS#1 v1.5 for RSA, ECDSA for EC)."""
    from cryptography import x509

    name = subject if isinstance(subject, x509.Name) else parse_subject(subject)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    return builder.sign(_private(key), hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """The request as PEM ("BEGIN CERTIFICATE REQUEST"), what ``openssl req`` reads."""
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    """The request as DER, what the Device Registration Service gets base64-encoded."""
    return csr.public_bytes(serialization.Encoding.DER)


# --- signature algorithms -------------------------------------------------------------------


def algorithms_for(key: AnyKey) -> tuple[str, ...]:
    """The JWS algorithm names the key can sign or verify with; the first is the usual one."""
    public = _public(key)
    return tuple(name for name in SIGNATURE_ALGORITHMS if _mismatch(name, public) is None)


def _mismatch(alg: str, public: PublicKey) -> str | None:
    """Why the algorithm does not fit the key, or None; UnsupportedAlgorithm for unknown names."""
    if alg not in _HASHES:
        raise UnsupportedAlgorithm(
            f"signature algorithm {alg!r}: {', '.join(SIGNATURE_ALGORITHMS)} are offered"
        )
    curve = _ALG_CURVES.get(alg)
    if curve is None:
        if isinstance(public, rsa.RSAPublicKey):
            return None
        return f"{alg} needs an RSA key, not an elliptic-curve key"
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return f"{alg} needs an elliptic-curve key, not an RSA key"
    if public.curve.name != curve:
        return f"{alg} needs a {curve} key, not {public.curve.name}"
    return None


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg.startswith("PS"):
        hash_alg = _HASHES[alg]()
        return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.DIGEST_LENGTH)
    return padding.PKCS1v15()


def _sign(key: PrivateKey, data: bytes, alg: str) -> bytes:
    """Signs with a checked algorithm; DER for ECDSA."""
    mismatch = _mismatch(alg, key.public_key())
    if mismatch is not None:
        raise UnsupportedAlgorithm(mismatch)
    hash_alg = _HASHES[alg]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _rsa_padding(alg), hash_alg)
    return key.sign(data, ec.ECDSA(hash_alg))


def _verify(public: PublicKey, data: bytes, signature: bytes, alg: str) -> None:
    """Verifies with an algorithm already checked against the key; DER for ECDSA."""
    hash_alg = _HASHES[alg]()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, _rsa_padding(alg), hash_alg)
        else:
            public.verify(signature, data, ec.ECDSA(hash_alg))
    except _PycaInvalidSignature as exc:
        raise InvalidSignature(f"the {alg} signature does not verify") from exc


def sign_raw(key: PrivateKey, data: bytes, alg: str) -> bytes:
    """A detached signature as ``openssl dgst -verify`` takes it: PKCS#1 v1.5, PSS or DER ECDSA."""
    return _sign(_private(key), data, alg)


def verify_raw(public_key: AnyKey, data: bytes, signature: bytes, alg: str) -> None:
    """Checks a signature made by ``sign_raw`` or openssl; raises InvalidSignature if it fails."""
    public = _public(public_key)
    mismatch = _mismatch(alg, public)
    if mismatch is not None:
        raise UnsupportedAlgorithm(mismatch)
    _verify(public, data, signature, alg)


# --- compact JWS ----------------------------------------------------------------------------


def jws_sign(
    key: PrivateKey,
    payload: bytes | Mapping[str, Any],
    alg: str,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS (RFC 7515) over the payload; a mapping is sent as compact JSON, bytes as is.

    A mapping (payload or header) is signed only if the strict reader reads its JSON back member
    for member (``dump_object``): a name that is no str, which JSON writes as one already there,
    is InvalidData."""
    signer = _private(key)
    fields: dict[str, Any] = {"alg": alg}
    for name, value in (header or {}).items():
        if name == "alg" and value != alg:
            raise UnsupportedAlgorithm(f"the header says alg {value!r} but {alg!r} was asked for")
        fields[name] = value
    if isinstance(payload, bytes):
        body = payload
    elif isinstance(payload, Mapping):
        body = dump_object(payload, "the JWS payload")
    else:
        raise TypeError(f"a JWS payload is bytes or a mapping, not {type(payload).__name__}")
    signing_input = f"{b64url_encode(dump_object(fields, 'the JWS header'))}.{b64url_encode(body)}"
    signature = _sign(signer, signing_input.encode("ascii"), alg)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        size = (signer.curve.key_size + 7) // 8
        r, s = utils.decode_dss_signature(signature)
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input}.{b64url_encode(signature)}"


def _segment(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except InvalidData as exc:
        raise InvalidData(f"JWS {what}: {exc}") from exc


def jws_verify(
    token: str, public_key: AnyKey, algorithms: Collection[str], *, max_size: int = MAX_JWS_SIZE
) -> tuple[dict[str, Any], bytes]:
    """Checks a compact JWS and returns (header, payload); only the listed algorithms pass.

    A token over ``max_size`` characters (``MAX_JWS_SIZE``, 2 MiB, unless given) is InvalidData
    before it is split or decoded; a ``crit`` header, an algorithm not listed or not fitting
    the key, and any malformed segment are InvalidData; a bad signature InvalidSignature.
    """
    if isinstance(algorithms, str):
        raise TypeError("algorithms is a collection of names, such as ['RS256'], not a str")
    allowed = frozenset(algorithms)
    unknown = sorted(allowed.difference(_HASHES))
    if unknown:
        raise UnsupportedAlgorithm(
            f"cannot verify {', '.join(map(repr, unknown))}: "
            f"{', '.join(SIGNATURE_ALGORITHMS)} are offered"
        )
    public = _public(public_key)
    if not isinstance(token, str):
        raise InvalidData(f"a compact JWS is a str, not {type(token).__name__}")
    if len(token) > max_size:
        raise InvalidData(f"a compact JWS of {len(token)} characters is over {max_size}")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidData(f"a compact JWS has 3 segments, this token has {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    header = load_object(_segment(header_b64, "header"), "JWS header")
    payload = _segment(payload_b64, "payload")
    signature = _segment(signature_b64, "signature")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidData("JWS header: 'alg' is missing or not a string")
    if "crit" in header:
        raise InvalidData("JWS header: 'crit' names extensions this verifier does not implement")
    if alg not in allowed:
        raise InvalidData(
            f"JWS alg {alg!r} is not allowed here (allowed: {', '.join(sorted(allowed))})"
        )
    mismatch = _mismatch(alg, public)
    if mismatch is not None:
        raise InvalidData(f"JWS alg does not fit the key: {mismatch}")
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature(
                f"an {alg} signature is {2 * size} bytes (r || s), not {len(signature)}"
            )
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        signature = utils.encode_dss_signature(r, s)
    _verify(public, f"{header_b64}.{payload_b64}".encode("ascii"), signature, alg)
    return header, payload
