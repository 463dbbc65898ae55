"""TPM 2.0 wire structures (TCG TPM 2.0 Library, Part 2) as frozen dataclasses.

Each structure has ``parse(data)``, strict (the whole input, no trailing bytes; every failure an
``InvalidData`` with an exact message), and ``to_bytes()``, its canonical marshaling:
``X.parse(b).to_bytes() == b``. Names follow the specification (``TPMS_ATTEST`` is
``TPMSAttest``, ``qualifiedSigner`` is ``qualified_signer``). Pure Python: no TSS is needed.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import ClassVar, Self

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from ..errors import InvalidData, UnsupportedAlgorithm

__all__ = [
    "HASH_ALGORITHMS",
    "TPMA_OBJECT",
    "TPM_ALG_AES",
    "TPM_ALG_CAMELLIA",
    "TPM_ALG_CFB",
    "TPM_ALG_ECC",
    "TPM_ALG_ECDAA",
    "TPM_ALG_ECDH",
    "TPM_ALG_ECDSA",
    "TPM_ALG_ECMQV",
    "TPM_ALG_ECSCHNORR",
    "TPM_ALG_HMAC",
    "TPM_ALG_KDF1_SP800_56A",
    "TPM_ALG_KDF1_SP800_108",
    "TPM_ALG_KDF2",
    "TPM_ALG_KEYEDHASH",
    "TPM_ALG_MGF1",
    "TPM_ALG_NULL",
    "TPM_ALG_OAEP",
    "TPM_ALG_RSA",
    "TPM_ALG_RSAES",
    "TPM_ALG_RSAPSS",
    "TPM_ALG_RSASSA",
    "TPM_ALG_SHA1",
    "TPM_ALG_SHA256",
    "TPM_ALG_SHA384",
    "TPM_ALG_SHA512",
    "TPM_ALG_SM2",
    "TPM_ALG_SM3_256",
    "TPM_ALG_SM4",
    "TPM_ALG_SYMCIPHER",
    "TPM_ALG_XOR",
    "TPM_ECC_NIST_P192",
    "TPM_ECC_NIST_P224",
    "TPM_ECC_NIST_P256",
    "TPM_ECC_NIST_P384",
    "TPM_ECC_NIST_P521",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_CERTIFY",
    "TPM_ST_ATTEST_QUOTE",
    "HashInfo",
    "TPMLPCRSelection",
    "TPMSAttest",
    "TPMSCertifyInfo",
    "TPMSClockInfo",
    "TPMSECCParms",
    "TPMSECCPoint",
    "TPMSKeyedHashParms",
    "TPMSPCRSelection",
    "TPMSQuoteInfo",
    "TPMSRSAParms",
    "TPMSSymCipherParms",
    "TPMTPublic",
    "TPMTScheme",
    "TPMTSignature",
    "TPMTSymDefObject",
    "hash_info",
    "hash_info_by_name",
    "parse_tpm2b",
    "tpm2b",
]

# --- constants (Part 2, section 6) -----------------------------------------------------------

#: TPM_GENERATED_VALUE: the magic at the start of every TPMS_ATTEST a TPM makes ("\xffTCG").
TPM_GENERATED_VALUE = 0xFF544347
#: TPM_ST_ATTEST_CERTIFY and TPM_ST_ATTEST_QUOTE: the TPMS_ATTEST types of TPM2_Certify/Quote.
TPM_ST_ATTEST_CERTIFY = 0x8017
TPM_ST_ATTEST_QUOTE = 0x8018

TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_HMAC = 0x0005
TPM_ALG_AES = 0x0006
TPM_ALG_MGF1 = 0x0007
TPM_ALG_KEYEDHASH = 0x0008
TPM_ALG_XOR = 0x000A
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_SM3_256 = 0x0012
TPM_ALG_SM4 = 0x0013
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAES = 0x0015
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_OAEP = 0x0017
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDH = 0x0019
TPM_ALG_ECDAA = 0x001A
TPM_ALG_SM2 = 0x001B
TPM_ALG_ECSCHNORR = 0x001C
TPM_ALG_ECMQV = 0x001D
TPM_ALG_KDF1_SP800_56A = 0x0020
TPM_ALG_KDF2 = 0x0021
TPM_ALG_KDF1_SP800_108 = 0x0022
TPM_ALG_ECC = 0x0023
TPM_ALG_SYMCIPHER = 0x0025
TPM_ALG_CAMELLIA = 0x0026
TPM_ALG_CFB = 0x0043

TPM_ECC_NIST_P192 = 0x0001
TPM_ECC_NIST_P224 = 0x0002
TPM_ECC_NIST_P256 = 0x0003
TPM_ECC_NIST_P384 = 0x0004
TPM_ECC_NIST_P521 = 0x0005


class TPMA_OBJECT(enum.IntFlag):  # noqa: N801 - the specification's name
    """TPMA_OBJECT: the object attribute bits of a TPMT_PUBLIC (Part 2, 8.3)."""

    FIXEDTPM = 1 << 1
    STCLEAR = 1 << 2
    FIXEDPARENT = 1 << 4
    SENSITIVEDATAORIGIN = 1 << 5
    USERWITHAUTH = 1 << 6
    ADMINWITHPOLICY = 1 << 7
    NODA = 1 << 10
    ENCRYPTEDDUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509SIGN = 1 << 19


@dataclass(frozen=True, slots=True)
class HashInfo:
    """A TPM hash algorithm: its TPM_ALG id, name, digest size and ``cryptography`` class."""

    alg: int
    name: str
    digest_size: int
    pyca: type[hashes.HashAlgorithm]

    def new(self) -> hashes.HashAlgorithm:
        """A fresh ``cryptography`` hash object of this algorithm."""
        return self.pyca()

    def digest(self, data: bytes) -> bytes:
        """The digest of the data."""
        return _HASHLIB[self.alg](data).digest()


#: The hash algorithms entra_keys knows, by TPM_ALG id.
HASH_ALGORITHMS: Mapping[int, HashInfo] = {
    info.alg: info
    for info in (
        HashInfo(TPM_ALG_SHA1, "sha1", 20, hashes.SHA1),
        HashInfo(TPM_ALG_SHA256, "sha256", 32, hashes.SHA256),
        HashInfo(TPM_ALG_SHA384, "sha384", 48, hashes.SHA384),
        HashInfo(TPM_ALG_SHA512, "sha512", 64, hashes.SHA512),
    )
}
_HASH_BY_NAME = {info.name: info for info in HASH_ALGORITHMS.values()}
_HASHLIB = {
    TPM_ALG_SHA1: hashlib.sha1,
    TPM_ALG_SHA256: hashlib.sha256,
    TPM_ALG_SHA384: hashlib.sha384,
    TPM_ALG_SHA512: hashlib.sha512,
}


def hash_info(alg: int, what: str = "hash algorithm") -> HashInfo:
    """The hash of a TPM_ALG id; UnsupportedAlgorithm for others (SM3, SHA-3, NULL)."""
    info = HASH_ALGORITHMS.get(alg)
    if info is None:
        raise UnsupportedAlgorithm(f"{what} 0x{alg:04x} is not SHA-1/256/384/512")
    return info


def hash_info_by_name(name: str) -> HashInfo:
    """The hash of a bank name such as "sha256"; UnsupportedAlgorithm for others."""
    info = _HASH_BY_NAME.get(name.lower()) if isinstance(name, str) else None
    if info is None:
        raise UnsupportedAlgorithm(f"hash {name!r}: sha1, sha256, sha384 and sha512 are offered")
    return info


# Limits of the TPM2B buffers (the TSS's sizes: TPMU_HA, TPMU_NAME, MAX_RSA_KEY_BYTES, ...).
_MAX_DIGEST = 64
_MAX_NAME = 2 + 64
_MAX_DATA = 2 + 64
_MAX_RSA = 512
_MAX_ECC = 128
_PCR_SELECT_MAX = 4
_NUM_PCR_BANKS = 16

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">IH")  # TPMS_ATTEST magic, type
_CLOCK = struct.Struct(">QIIBQ")  # TPMS_CLOCK_INFO and firmwareVersion


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"{what}: bytes expected, not {type(data).__name__}")
    return bytes(data)


def _truncated(what: str, name: str, n: int, pos: int, end: int) -> InvalidData:
    return InvalidData(
        f"{what}: truncated: {name} needs {n} bytes at offset {pos}, {end - pos} left"
    )


def _too_large(what: str, name: str, size: int, limit: int) -> InvalidData:
    return InvalidData(f"{what}: {name} is {size} bytes, more than the {limit} it can hold")


def _trailing(what: str, left: int) -> InvalidData:
    return InvalidData(f"{what}: {left} trailing bytes after the structure")


def _tpm2b_at(
    data: bytes, pos: int, end: int, what: str, name: str, limit: int
) -> tuple[bytes, int]:
    """The TPM2B at ``pos`` (at most ``limit`` bytes) and the offset after it."""
    start = pos + 2
    if start > end:
        raise _truncated(what, f"{name} size", 2, pos, end)
    size = data[pos] << 8 | data[pos + 1]
    if size > limit:
        raise _too_large(what, name, size, limit)
    stop = start + size
    if stop > end:
        raise _truncated(what, name, size, start, end)
    return data[start:stop], stop


class _Reader:
    """Reads big-endian TPM fields from bytes; every shortfall is an exact InvalidData."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: object, what: str) -> None:
        self.data = _as_bytes(data, what)
        self.pos = 0
        self.what = what

    def _need(self, n: int, name: str) -> int:
        pos = self.pos
        if pos + n > len(self.data):
            raise _truncated(self.what, name, n, pos, len(self.data))
        self.pos = pos + n
        return pos

    def u8(self, name: str) -> int:
        return self.data[self._need(1, name)]

    def u16(self, name: str) -> int:
        return int(_U16.unpack_from(self.data, self._need(2, name))[0])

    def u32(self, name: str) -> int:
        return int(_U32.unpack_from(self.data, self._need(4, name))[0])

    def u64(self, name: str) -> int:
        return int(_U64.unpack_from(self.data, self._need(8, name))[0])

    def take(self, n: int, name: str) -> bytes:
        pos = self._need(n, name)
        return self.data[pos : pos + n]

    def tpm2b(self, name: str, limit: int) -> bytes:
        out, self.pos = _tpm2b_at(self.data, self.pos, len(self.data), self.what, name, limit)
        return out

    def done(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise _trailing(self.what, left)


def tpm2b(data: bytes) -> bytes:
    """A TPM2B: the two-byte big-endian size, then the bytes."""
    if len(data) > 0xFFFF:
        raise InvalidData(f"a TPM2B holds at most 65535 bytes, not {len(data)}")
    return _U16.pack(len(data)) + data


def parse_tpm2b(data: bytes, what: str = "TPM2B", limit: int = 0xFFFF) -> bytes:
    """The contents of a TPM2B that is exactly the input (no trailing bytes)."""
    reader = _Reader(data, what)
    out = reader.tpm2b("buffer", limit)
    reader.done()
    return out


def _known(alg: int, allowed: Mapping[int, object] | frozenset[int], what: str, r: _Reader) -> int:
    if alg not in allowed:
        raise InvalidData(f"{r.what}: {what} 0x{alg:04x} is not one this structure allows")
    return alg


# --- TPMT_SYM_DEF_OBJECT, schemes --------------------------------------------------------------

_SYM_OBJECT_ALGS = frozenset({TPM_ALG_AES, TPM_ALG_SM4, TPM_ALG_CAMELLIA, TPM_ALG_NULL})


@dataclass(frozen=True, slots=True)
class TPMTSymDefObject:
    """TPMT_SYM_DEF_OBJECT: a storage key's symmetric algorithm (AES-128-CFB), or NULL."""

    algorithm: int = TPM_ALG_NULL
    key_bits: int = 0
    mode: int = 0

    @classmethod
    def _read(cls, r: _Reader) -> TPMTSymDefObject:
        alg = _known(r.u16("symmetric.algorithm"), _SYM_OBJECT_ALGS, "symmetric algorithm", r)
        if alg == TPM_ALG_NULL:
            return _SYM_NULL
        return cls(alg, r.u16("symmetric.keyBits"), r.u16("symmetric.mode"))

    def _write(self, out: list[bytes]) -> None:
        if self.algorithm == TPM_ALG_NULL:
            out.append(_U16.pack(TPM_ALG_NULL))
        else:
            out.append(struct.pack(">HHH", self.algorithm, self.key_bits, self.mode))


_SYM_NULL = TPMTSymDefObject()

# What follows each scheme id on the wire: nothing, a hash, a hash and a count (ECDAA), or a
# hash and a KDF (XOR).
_NO_DETAILS, _HASH, _HASH_COUNT, _HASH_KDF = range(4)
_RSA_SCHEMES = {
    TPM_ALG_NULL: _NO_DETAILS,
    TPM_ALG_RSAES: _NO_DETAILS,
    TPM_ALG_RSASSA: _HASH,
    TPM_ALG_RSAPSS: _HASH,
    TPM_ALG_OAEP: _HASH,
}
_ECC_SCHEMES = {
    TPM_ALG_NULL: _NO_DETAILS,
    TPM_ALG_ECDSA: _HASH,
    TPM_ALG_ECDH: _HASH,
    TPM_ALG_SM2: _HASH,
    TPM_ALG_ECSCHNORR: _HASH,
    TPM_ALG_ECMQV: _HASH,
    TPM_ALG_ECDAA: _HASH_COUNT,
}
_KEYEDHASH_SCHEMES = {TPM_ALG_NULL: _NO_DETAILS, TPM_ALG_HMAC: _HASH, TPM_ALG_XOR: _HASH_KDF}
_KDF_SCHEMES = {
    TPM_ALG_NULL: _NO_DETAILS,
    TPM_ALG_MGF1: _HASH,
    TPM_ALG_KDF1_SP800_56A: _HASH,
    TPM_ALG_KDF2: _HASH,
    TPM_ALG_KDF1_SP800_108: _HASH,
}


@dataclass(frozen=True, slots=True)
class TPMTScheme:
    """A TPMT_*_SCHEME (RSA, ECC, keyed-hash, KDF): the scheme id and its details.

    ``hash_alg`` is there for every scheme but NULL and RSAES; ``count`` only for ECDAA,
    ``kdf`` only for XOR. Fields a scheme does not carry stay at their defaults.
    """

    scheme: int = TPM_ALG_NULL
    hash_alg: int = TPM_ALG_NULL
    count: int = 0
    kdf: int = TPM_ALG_NULL

    @classmethod
    def _read(cls, r: _Reader, table: Mapping[int, int], what: str) -> TPMTScheme:
        scheme = _known(r.u16(f"{what}.scheme"), table, what, r)
        layout = table[scheme]
        if layout == _NO_DETAILS:
            return cls(scheme)
        hash_alg = r.u16(f"{what}.hashAlg")
        if layout == _HASH_COUNT:
            return cls(scheme, hash_alg, count=r.u16(f"{what}.count"))
        if layout == _HASH_KDF:
            return cls(scheme, hash_alg, kdf=r.u16(f"{what}.kdf"))
        return cls(scheme, hash_alg)

    def _write(self, out: list[bytes], table: Mapping[int, int], what: str) -> None:
        layout = table.get(self.scheme)
        if layout is None:
            raise InvalidData(f"{what} 0x{self.scheme:04x} is not one this structure allows")
        out.append(_U16.pack(self.scheme))
        if layout != _NO_DETAILS:
            out.append(_U16.pack(self.hash_alg))
        if layout == _HASH_COUNT:
            out.append(_U16.pack(self.count))
        elif layout == _HASH_KDF:
            out.append(_U16.pack(self.kdf))


_SCHEME_NULL = TPMTScheme()


# --- TPMT_PUBLIC ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSRSAParms:
    """TPMS_RSA_PARMS: symmetric (storage keys), scheme, keyBits, exponent (0 means 65537)."""

    symmetric: TPMTSymDefObject
    scheme: TPMTScheme
    key_bits: int
    exponent: int


@dataclass(frozen=True, slots=True)
class TPMSECCParms:
    """TPMS_ECC_PARMS: symmetric (storage keys), scheme, curveID, kdf."""

    symmetric: TPMTSymDefObject
    scheme: TPMTScheme
    curve_id: int
    kdf: TPMTScheme = _SCHEME_NULL


@dataclass(frozen=True, slots=True)
class TPMSKeyedHashParms:
    """TPMS_KEYEDHASH_PARMS: the keyed-hash scheme (HMAC with a hash, XOR, or NULL)."""

    scheme: TPMTScheme


@dataclass(frozen=True, slots=True)
class TPMSSymCipherParms:
    """TPMS_SYMCIPHER_PARMS: a symmetric key's algorithm, size and mode."""

    sym: TPMTSymDefObject


@dataclass(frozen=True, slots=True)
class TPMSECCPoint:
    """TPMS_ECC_POINT: x and y, big-endian (a TPM pads them to the curve size)."""

    x: bytes
    y: bytes

    @classmethod
    def _read(cls, r: _Reader, what: str) -> TPMSECCPoint:
        return cls(r.tpm2b(f"{what}.x", _MAX_ECC), r.tpm2b(f"{what}.y", _MAX_ECC))

    def to_bytes(self) -> bytes:
        """x and y, each a TPM2B_ECC_PARAMETER."""
        return tpm2b(self.x) + tpm2b(self.y)

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """A TPMS_ECC_POINT that is exactly the input."""
        r = _Reader(data, "TPMS_ECC_POINT")
        point = cls(r.tpm2b("x", _MAX_ECC), r.tpm2b("y", _MAX_ECC))
        r.done()
        return point


_CURVES: Mapping[int, ec.EllipticCurve] = {
    TPM_ECC_NIST_P192: ec.SECP192R1(),
    TPM_ECC_NIST_P224: ec.SECP224R1(),
    TPM_ECC_NIST_P256: ec.SECP256R1(),
    TPM_ECC_NIST_P384: ec.SECP384R1(),
    TPM_ECC_NIST_P521: ec.SECP521R1(),
}
_CURVE_IDS = {curve.name: curve_id for curve_id, curve in _CURVES.items()}

Parameters = TPMSRSAParms | TPMSECCParms | TPMSKeyedHashParms | TPMSSymCipherParms
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class TPMTPublic:
    """TPMT_PUBLIC (Part 2, 12.2.4): an object's public area, what its name is the hash of.

    ``unique`` is the RSA modulus, the ECC point, or a keyed-hash/symmetric object's digest.
    """

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    parameters: Parameters
    unique: bytes | TPMSECCPoint

    _TYPES: ClassVar[frozenset[int]] = frozenset(
        {TPM_ALG_RSA, TPM_ALG_ECC, TPM_ALG_KEYEDHASH, TPM_ALG_SYMCIPHER}
    )

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """A TPMT_PUBLIC that is exactly the input."""
        r = _Reader(data, "TPMT_PUBLIC")
        obj = cls._read(r)
        r.done()
        return obj

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        kind = _known(r.u16("type"), cls._TYPES, "type", r)
        name_alg = r.u16("nameAlg")
        attributes = r.u32("objectAttributes")
        policy = r.tpm2b("authPolicy", _MAX_DIGEST)
        parameters: Parameters
        unique: bytes | TPMSECCPoint
        if kind == TPM_ALG_RSA:
            symmetric = TPMTSymDefObject._read(r)
            scheme = TPMTScheme._read(r, _RSA_SCHEMES, "RSA scheme")
            parameters = TPMSRSAParms(symmetric, scheme, r.u16("keyBits"), r.u32("exponent"))
            unique = r.tpm2b("unique.rsa", _MAX_RSA)
        elif kind == TPM_ALG_ECC:
            symmetric = TPMTSymDefObject._read(r)
            scheme = TPMTScheme._read(r, _ECC_SCHEMES, "ECC scheme")
            curve = r.u16("curveID")
            kdf = TPMTScheme._read(r, _KDF_SCHEMES, "KDF scheme")
            parameters = TPMSECCParms(symmetric, scheme, curve, kdf)
            unique = TPMSECCPoint._read(r, "unique.ecc")
        elif kind == TPM_ALG_KEYEDHASH:
            parameters = TPMSKeyedHashParms(
                TPMTScheme._read(r, _KEYEDHASH_SCHEMES, "keyed-hash scheme")
            )
            unique = r.tpm2b("unique.keyedHash", _MAX_DIGEST)
        else:
            parameters = TPMSSymCipherParms(TPMTSymDefObject._read(r))
            unique = r.tpm2b("unique.sym", _MAX_DIGEST)
        return cls(kind, name_alg, attributes, policy, parameters, unique)

    def to_bytes(self) -> bytes:
        """The marshaled TPMT_PUBLIC."""
        out = [struct.pack(">HHI", self.type, self.name_alg, self.object_attributes)]
        out.append(tpm2b(self.auth_policy))
        p = self.parameters
        if self.type == TPM_ALG_RSA and isinstance(p, TPMSRSAParms):
            p.symmetric._write(out)
            p.scheme._write(out, _RSA_SCHEMES, "RSA scheme")
            out.append(struct.pack(">HI", p.key_bits, p.exponent))
        elif self.type == TPM_ALG_ECC and isinstance(p, TPMSECCParms):
            p.symmetric._write(out)
            p.scheme._write(out, _ECC_SCHEMES, "ECC scheme")
            out.append(_U16.pack(p.curve_id))
            p.kdf._write(out, _KDF_SCHEMES, "KDF scheme")
        elif self.type == TPM_ALG_KEYEDHASH and isinstance(p, TPMSKeyedHashParms):
            p.scheme._write(out, _KEYEDHASH_SCHEMES, "keyed-hash scheme")
        elif self.type == TPM_ALG_SYMCIPHER and isinstance(p, TPMSSymCipherParms):
            p.sym._write(out)
        else:
            raise InvalidData(
                f"TPMT_PUBLIC: type 0x{self.type:04x} with {type(p).__name__} parameters"
            )
        unique = self.unique
        if isinstance(unique, TPMSECCPoint) != (self.type == TPM_ALG_ECC):
            raise InvalidData("TPMT_PUBLIC: unique is an ECC point exactly for ECC objects")
        out.append(unique.to_bytes() if isinstance(unique, TPMSECCPoint) else tpm2b(unique))
        return b"".join(out)

    @property
    def attributes(self) -> TPMA_OBJECT:
        """objectAttributes as TPMA_OBJECT flags."""
        return TPMA_OBJECT(self.object_attributes)

    def name(self) -> bytes:
        """The object's name: nameAlg (2 bytes) then the nameAlg digest of this TPMT_PUBLIC."""
        info = HASH_ALGORITHMS.get(self.name_alg)
        if info is None:
            raise InvalidData(f"TPMT_PUBLIC: nameAlg 0x{self.name_alg:04x} is not a known hash")
        return _U16.pack(self.name_alg) + info.digest(self.to_bytes())

    def public_key(self) -> PublicKey:
        """The RSA or elliptic-curve key as a ``cryptography`` public key (InvalidData if not)."""
        p = self.parameters
        if isinstance(p, TPMSRSAParms) and isinstance(self.unique, bytes):
            modulus = self.unique
            if len(modulus) * 8 != p.key_bits or not modulus or modulus[0] == 0:
                raise InvalidData(
                    f"TPMT_PUBLIC: keyBits is {p.key_bits} but the modulus is {len(modulus)} bytes"
                )
            exponent = p.exponent or 65537
            try:
                return rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
            except ValueError as exc:
                raise InvalidData(f"TPMT_PUBLIC: not a usable RSA key ({exc})") from exc
        if isinstance(p, TPMSECCParms) and isinstance(self.unique, TPMSECCPoint):
            curve = _CURVES.get(p.curve_id)
            if curve is None:
                raise InvalidData(f"TPMT_PUBLIC: curve 0x{p.curve_id:04x} is not a NIST curve")
            size = (curve.key_size + 7) // 8
            point = self.unique
            if len(point.x) > size or len(point.y) > size:
                raise InvalidData(f"TPMT_PUBLIC: a coordinate is longer than {curve.name}'s")
            x, y = int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big")
            try:
                return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
            except ValueError as exc:
                raise InvalidData(f"TPMT_PUBLIC: the point is not on {curve.name}") from exc
        raise InvalidData(f"TPMT_PUBLIC: type 0x{self.type:04x} has no asymmetric public key")

    @classmethod
    def from_public_key(
        cls,
        key: PublicKey,
        attributes: int,
        *,
        name_alg: int = TPM_ALG_SHA256,
        scheme: TPMTScheme = _SCHEME_NULL,
        symmetric: TPMTSymDefObject = _SYM_NULL,
        auth_policy: bytes = b"",
    ) -> Self:
        """The TPMT_PUBLIC a TPM gives this key: exponent 65537 as 0, ECC coordinates padded."""
        if isinstance(key, rsa.RSAPublicKey):
            numbers = key.public_numbers()
            exponent = 0 if numbers.e == 65537 else numbers.e
            modulus = numbers.n.to_bytes((key.key_size + 7) // 8, "big")
            params = TPMSRSAParms(symmetric, scheme, key.key_size, exponent)
            return cls(TPM_ALG_RSA, name_alg, int(attributes), auth_policy, params, modulus)
        if isinstance(key, ec.EllipticCurvePublicKey):
            curve_id = _CURVE_IDS.get(key.curve.name)
            if curve_id is None:
                raise UnsupportedAlgorithm(f"curve {key.curve.name} has no TPM curve id here")
            size = (key.curve.key_size + 7) // 8
            n = key.public_numbers()
            point = TPMSECCPoint(n.x.to_bytes(size, "big"), n.y.to_bytes(size, "big"))
            ecc = TPMSECCParms(symmetric, scheme, curve_id, _SCHEME_NULL)
            return cls(TPM_ALG_ECC, name_alg, int(attributes), auth_policy, ecc, point)
        raise UnsupportedAlgorithm(f"key type {type(key).__name__} has no TPMT_PUBLIC here")


# --- TPML_PCR_SELECTION --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSPCRSelection:
    """TPMS_PCR_SELECTION: a hash bank and the PCRs selected in it (sizeofSelect bytes)."""

    hash: int
    pcrs: frozenset[int]
    size_of_select: int = 3

    def _write(self, out: list[bytes]) -> None:
        bits = 0
        for pcr in self.pcrs:
            if not 0 <= pcr < 8 * self.size_of_select:
                raise InvalidData(f"PCR {pcr} does not fit a {self.size_of_select}-byte select")
            bits |= 1 << pcr
        out.append(struct.pack(">HB", self.hash, self.size_of_select))
        out.append(bits.to_bytes(self.size_of_select, "little"))


@dataclass(frozen=True, slots=True)
class TPMLPCRSelection:
    """TPML_PCR_SELECTION: the PCR banks and indices a quote covers, in the TPM's order."""

    selections: tuple[TPMSPCRSelection, ...]

    @classmethod
    def parse(cls, data: bytes) -> TPMLPCRSelection:
        """A TPML_PCR_SELECTION that is exactly the input."""
        what = "TPML_PCR_SELECTION"
        if type(data) is not bytes:
            data = _as_bytes(data, what)
        selection, pos = _pcr_selection_at(data, 0, len(data), what)
        if pos != len(data):
            raise _trailing(what, len(data) - pos)
        return selection

    def to_bytes(self) -> bytes:
        """The marshaled TPML_PCR_SELECTION."""
        out = [_U32.pack(len(self.selections))]
        for selection in self.selections:
            selection._write(out)
        return b"".join(out)

    @classmethod
    def of(cls, banks: Mapping[str, Iterable[int]] | Mapping[int, Iterable[int]]) -> Self:
        """A selection from {bank: PCR indices}, banks named ("sha256") or TPM_ALG ids."""
        selections = []
        items: Iterable[tuple[str | int, Iterable[int]]] = banks.items()
        for bank, pcrs in items:
            alg = bank if isinstance(bank, int) else hash_info_by_name(bank).alg
            selections.append(TPMSPCRSelection(alg, frozenset(pcrs)))
        return cls(tuple(selections))

    def as_dict(self) -> dict[int, frozenset[int]]:
        """{hash alg: PCR indices}, banks with nothing selected left out; InvalidData when a
        bank appears twice."""
        out: dict[int, frozenset[int]] = {}
        for selection in self.selections:
            if not selection.pcrs:
                continue
            if selection.hash in out:
                raise InvalidData(f"PCR bank 0x{selection.hash:04x} is selected twice")
            out[selection.hash] = selection.pcrs
        return out


# --- TPMS_ATTEST -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSClockInfo:
    """TPMS_CLOCK_INFO: the TPM's clock (ms), reset and restart counts, and whether it is safe."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class TPMSQuoteInfo:
    """TPMS_QUOTE_INFO: the quoted PCR selection and the digest of their values."""

    pcr_select: TPMLPCRSelection
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class TPMSCertifyInfo:
    """TPMS_CERTIFY_INFO: the certified object's name and qualified name."""

    name: bytes
    qualified_name: bytes


_ATTEST = "TPMS_ATTEST"
_ATTEST_HEAD = struct.Struct(">IHH")  # magic, type, qualifiedSigner size


@dataclass(frozen=True, slots=True)
class TPMSAttest:
    """TPMS_ATTEST (Part 2, 10.12.12): what a TPM signs in TPM2_Quote and TPM2_Certify.

    Only the quote and certify types parse; any other type is an InvalidData.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: TPMSClockInfo
    firmware_version: int
    attested: TPMSQuoteInfo | TPMSCertifyInfo

    @classmethod
    def parse(cls, data: bytes) -> TPMSAttest:
        """A TPMS_ATTEST (quote or certify) that is exactly the input.

        The verifier's hot path: one pass with ``struct`` and slices, each field bounds-checked
        where it is read, so that a failure says exactly which field is short or too large.
        """
        if type(data) is not bytes:
            data = _as_bytes(data, _ATTEST)
        end = len(data)
        if end < 8:
            if end < 6:
                raise _truncated(_ATTEST, "magic and type", 6, 0, end)
            raise _truncated(_ATTEST, "qualifiedSigner size", 2, 6, end)
        magic, kind, size = _ATTEST_HEAD.unpack_from(data, 0)
        # Each TPM2B inline (the hot path): size, limit, then the bytes, as _tpm2b_at says.
        if size > _MAX_NAME:
            raise _too_large(_ATTEST, "qualifiedSigner", size, _MAX_NAME)
        pos = 8 + size
        if pos > end:
            raise _truncated(_ATTEST, "qualifiedSigner", size, 8, end)
        signer = data[8:pos]
        extra, pos = _tpm2b_at(data, pos, end, _ATTEST, "extraData", _MAX_DATA)
        if pos + _CLOCK.size > end:
            raise _truncated(_ATTEST, "clockInfo and firmwareVersion", _CLOCK.size, pos, end)
        clock, resets, restarts, safe, firmware = _CLOCK.unpack_from(data, pos)
        pos += _CLOCK.size
        if safe > 1:
            raise InvalidData(f"TPMS_ATTEST: clockInfo.safe is {safe}, not YES (1) or NO (0)")
        attested: TPMSQuoteInfo | TPMSCertifyInfo
        if kind == TPM_ST_ATTEST_QUOTE:
            selection, pos = _pcr_selection_at(data, pos, end, _ATTEST)
            digest, pos = _tpm2b_at(data, pos, end, _ATTEST, "quote.pcrDigest", _MAX_DIGEST)
            attested = _quote_info(selection, digest)
        elif kind == TPM_ST_ATTEST_CERTIFY:
            name, pos = _tpm2b_at(data, pos, end, _ATTEST, "certify.name", _MAX_NAME)
            qualified, pos = _tpm2b_at(data, pos, end, _ATTEST, "certify.qualifiedName", _MAX_NAME)
            attested = _certify_info(name, qualified)
        else:
            raise InvalidData(
                f"TPMS_ATTEST: type 0x{kind:04x} is neither a quote (0x8018) "
                "nor a certification (0x8017)"
            )
        if pos != end:
            raise _trailing(_ATTEST, end - pos)
        info = _clock_info(clock, resets, restarts, safe == 1)
        return _attest(magic, kind, signer, extra, info, firmware, attested)

    def to_bytes(self) -> bytes:
        """The marshaled TPMS_ATTEST."""
        c = self.clock_info
        out = [
            _HEADER.pack(self.magic, self.type),
            tpm2b(self.qualified_signer),
            tpm2b(self.extra_data),
            _CLOCK.pack(
                c.clock, c.reset_count, c.restart_count, int(c.safe), self.firmware_version
            ),
        ]
        a = self.attested
        if isinstance(a, TPMSQuoteInfo):
            out += [a.pcr_select.to_bytes(), tpm2b(a.pcr_digest)]
        else:
            out += [tpm2b(a.name), tpm2b(a.qualified_name)]
        return b"".join(out)


_SELECT_HEAD = struct.Struct(">HB")  # TPMS_PCR_SELECTION hash, sizeofSelect
_BYTE_BITS = tuple(tuple(b for b in range(8) if v >> b & 1) for v in range(256))
# Parsed selections by their bytes: a device quotes the same PCRs again and again, and the
# objects are immutable. Bounded: once full, further selections are built each time.
_SELECTIONS: dict[bytes, TPMLPCRSelection] = {}
_SELECTIONS_MAX = 256


def _pcr_set(select: bytes) -> frozenset[int]:
    """The PCR indices a pcrSelect bitmap (PCR 0 in bit 0 of byte 0) selects."""
    return frozenset(8 * i + b for i, byte in enumerate(select) for b in _BYTE_BITS[byte])


def _pcr_selection_at(data: bytes, pos: int, end: int, what: str) -> tuple[TPMLPCRSelection, int]:
    """The TPML_PCR_SELECTION at ``pos`` and the offset after it."""
    if pos + 4 > end:
        raise _truncated(what, "count", 4, pos, end)
    (count,) = _U32.unpack_from(data, pos)
    if count > _NUM_PCR_BANKS:
        raise InvalidData(f"{what}: {count} PCR banks, more than {_NUM_PCR_BANKS}")
    start = pos
    pos += 4
    for _ in range(count):
        if pos + 3 > end:
            if pos + 2 > end:
                raise _truncated(what, "pcrSelections.hash", 2, pos, end)
            raise _truncated(what, "pcrSelections.sizeofSelect", 1, pos + 2, end)
        size = data[pos + 2]
        if size > _PCR_SELECT_MAX:
            raise InvalidData(f"{what}: sizeofSelect {size} is more than {_PCR_SELECT_MAX}")
        pos += 3
        if pos + size > end:
            raise _truncated(what, "pcrSelections.pcrSelect", size, pos, end)
        pos += size
    raw = data[start:pos]
    selection = _SELECTIONS.get(raw)
    if selection is None:
        banks = []
        at = 4
        for _ in range(count):
            alg, size = _SELECT_HEAD.unpack_from(raw, at)
            at += 3 + size
            banks.append(TPMSPCRSelection(alg, _pcr_set(raw[at - size : at]), size))
        selection = TPMLPCRSelection(tuple(banks))
        if len(_SELECTIONS) < _SELECTIONS_MAX:
            _SELECTIONS[raw] = selection
    return selection, pos


# The hot parsers build their results slot by slot. A frozen dataclass's __init__ sets each
# field through object.__setattr__, to get past its own __setattr__, which costs about twice
# what setting the slot does; TPMSAttest.parse and TPMTSignature.parse (one of each per
# verified attestation) have checked every value and set the slots directly. The objects are
# the same as the constructors make: frozen, equal, hashable.

_new = object.__new__


def _slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    """The ``__set__`` of each field's slot of a slotted dataclass, in field order."""
    return tuple(getattr(cls, field.name).__set__ for field in fields(cls))


_set_clock, _set_resets, _set_restarts, _set_safe = _slot_setters(TPMSClockInfo)
_set_select, _set_digest = _slot_setters(TPMSQuoteInfo)
_set_name, _set_qualified = _slot_setters(TPMSCertifyInfo)
_set_magic, _set_type, _set_signer, _set_extra, _set_info, _set_firmware, _set_attested = (
    _slot_setters(TPMSAttest)
)


def _clock_info(clock: int, resets: int, restarts: int, safe: bool) -> TPMSClockInfo:
    obj = _new(TPMSClockInfo)
    _set_clock(obj, clock)
    _set_resets(obj, resets)
    _set_restarts(obj, restarts)
    _set_safe(obj, safe)
    return obj


def _quote_info(selection: TPMLPCRSelection, digest: bytes) -> TPMSQuoteInfo:
    obj = _new(TPMSQuoteInfo)
    _set_select(obj, selection)
    _set_digest(obj, digest)
    return obj


def _certify_info(name: bytes, qualified: bytes) -> TPMSCertifyInfo:
    obj = _new(TPMSCertifyInfo)
    _set_name(obj, name)
    _set_qualified(obj, qualified)
    return obj


def _attest(
    magic: int,
    kind: int,
    signer: bytes,
    extra: bytes,
    info: TPMSClockInfo,
    firmware: int,
    attested: TPMSQuoteInfo | TPMSCertifyInfo,
) -> TPMSAttest:
    obj = _new(TPMSAttest)
    _set_magic(obj, magic)
    _set_type(obj, kind)
    _set_signer(obj, signer)
    _set_extra(obj, extra)
    _set_info(obj, info)
    _set_firmware(obj, firmware)
    _set_attested(obj, attested)
    return obj


# --- TPMT_SIGNATURE ----------------------------------------------------------------------------

_SIGNATURE = "TPMT_SIGNATURE"
_SIG_HEAD = struct.Struct(">HHH")  # sigAlg, hash, the first TPM2B's size
_RSA_SIG = frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS})
_ECC_SIG = frozenset({TPM_ALG_ECDSA})


def _unknown_signature(alg: int) -> InvalidData:
    return InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{alg:04x} is not RSASSA, RSAPSS or ECDSA")


@dataclass(frozen=True, slots=True)
class TPMTSignature:
    """TPMT_SIGNATURE: RSASSA or RSAPSS (``signature``) or ECDSA (``signature_r``/``_s``)."""

    sig_alg: int
    hash: int
    signature: bytes = b""
    signature_r: bytes = b""
    signature_s: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> TPMTSignature:
        """A TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA) that is exactly the input."""
        if type(data) is not bytes:
            data = _as_bytes(data, _SIGNATURE)
        end = len(data)
        if end < 6:  # too short for any signature: which field is missing
            if end < 2:
                raise _truncated(_SIGNATURE, "sigAlg", 2, 0, end)
            alg = data[0] << 8 | data[1]
            if alg in _RSA_SIG or alg in _ECC_SIG:
                if end < 4:
                    raise _truncated(_SIGNATURE, "hash", 2, 2, end)
                first = "signature.sig" if alg in _RSA_SIG else "signature.signatureR"
                raise _truncated(_SIGNATURE, f"{first} size", 2, 4, end)
            raise _unknown_signature(alg)
        alg, hash_alg, size = _SIG_HEAD.unpack_from(data, 0)
        stop = 6 + size
        if alg in _RSA_SIG:
            if size > _MAX_RSA:
                raise _too_large(_SIGNATURE, "signature.sig", size, _MAX_RSA)
            if stop != end:
                if stop > end:
                    raise _truncated(_SIGNATURE, "signature.sig", size, 6, end)
                raise _trailing(_SIGNATURE, end - stop)
            return _signature(alg, hash_alg, data[6:], b"", b"")
        if alg not in _ECC_SIG:
            raise _unknown_signature(alg)
        if size > _MAX_ECC:
            raise _too_large(_SIGNATURE, "signature.signatureR", size, _MAX_ECC)
        if stop > end:
            raise _truncated(_SIGNATURE, "signature.signatureR", size, 6, end)
        sig_s, pos = _tpm2b_at(data, stop, end, _SIGNATURE, "signature.signatureS", _MAX_ECC)
        if pos != end:
            raise _trailing(_SIGNATURE, end - pos)
        return _signature(alg, hash_alg, b"", data[6:stop], sig_s)

    def to_bytes(self) -> bytes:
        """The marshaled TPMT_SIGNATURE."""
        head = struct.pack(">HH", self.sig_alg, self.hash)
        if self.sig_alg in _RSA_SIG:
            return head + tpm2b(self.signature)
        if self.sig_alg in _ECC_SIG:
            return head + tpm2b(self.signature_r) + tpm2b(self.signature_s)
        raise InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{self.sig_alg:04x} is not offered")

    @property
    def is_rsa(self) -> bool:
        """True for RSASSA and RSAPSS."""
        return self.sig_alg in _RSA_SIG

    def to_der(self) -> bytes:
        """An ECDSA signature as DER (ECDSA-Sig-Value), what ``cryptography`` verifies."""
        if self.sig_alg not in _ECC_SIG:
            raise InvalidData("TPMT_SIGNATURE: only an ECDSA signature has a DER form")
        r = int.from_bytes(self.signature_r, "big")
        s = int.from_bytes(self.signature_s, "big")
        return utils.encode_dss_signature(r, s)

    def signature_bytes(self) -> bytes:
        """The signature as ``cryptography``'s verify takes it: RSA bytes, or DER for ECDSA."""
        return self.signature if self.sig_alg in _RSA_SIG else self.to_der()

    @classmethod
    def from_signature(
        cls, sig_alg: int, hash_alg: int, signature: bytes, key: PublicKey | None = None
    ) -> Self:
        """From ``cryptography``'s output (RSA bytes, or DER ECDSA with r and s padded to the
        key's curve size as a TPM does)."""
        if sig_alg in _RSA_SIG:
            return cls(sig_alg, hash_alg, signature)
        if sig_alg not in _ECC_SIG:
            raise UnsupportedAlgorithm(f"signature algorithm 0x{sig_alg:04x}")
        try:
            r, s = utils.decode_dss_signature(signature)
        except ValueError as exc:
            raise InvalidData("not a DER ECDSA signature") from exc
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
        else:
            size = max((r.bit_length() + 7) // 8, (s.bit_length() + 7) // 8)
        return cls(sig_alg, hash_alg, b"", r.to_bytes(size, "big"), s.to_bytes(size, "big"))


_set_sig_alg, _set_hash, _set_sig, _set_r, _set_s = _slot_setters(TPMTSignature)


def _signature(alg: int, hash_alg: int, sig: bytes, sig_r: bytes, sig_s: bytes) -> TPMTSignature:
    obj = _new(TPMTSignature)
    _set_sig_alg(obj, alg)
    _set_hash(obj, hash_alg)
    _set_sig(obj, sig)
    _set_r(obj, sig_r)
    _set_s(obj, sig_s)
    return obj
