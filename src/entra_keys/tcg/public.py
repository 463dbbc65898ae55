"""TPMT_PUBLIC and its parameter structures (TPMS_*_PARMS, TPMT_SYM_DEF_OBJECT, the schemes,
TPMS_ECC_POINT); ``structures`` re-exports them."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import InvalidData, UnsupportedAlgorithm
from .wire import (
    HASH_ALGORITHMS,
    MAX_DIGEST,
    MAX_ECC,
    MAX_RSA,
    TPM_ALG_AES,
    TPM_ALG_CAMELLIA,
    TPM_ALG_ECC,
    TPM_ALG_ECDAA,
    TPM_ALG_ECDH,
    TPM_ALG_ECDSA,
    TPM_ALG_ECMQV,
    TPM_ALG_ECSCHNORR,
    TPM_ALG_HMAC,
    TPM_ALG_KDF1_SP800_56A,
    TPM_ALG_KDF1_SP800_108,
    TPM_ALG_KDF2,
    TPM_ALG_KEYEDHASH,
    TPM_ALG_MGF1,
    TPM_ALG_NULL,
    TPM_ALG_OAEP,
    TPM_ALG_RSA,
    TPM_ALG_RSAES,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_ALG_SM2,
    TPM_ALG_SM4,
    TPM_ALG_SYMCIPHER,
    TPM_ALG_XOR,
    TPM_ECC_NIST_P192,
    TPM_ECC_NIST_P224,
    TPM_ECC_NIST_P256,
    TPM_ECC_NIST_P384,
    TPM_ECC_NIST_P521,
    TPMA_OBJECT,
    U16,
    Reader,
    check_known,
    tpm2b,
)

__all__ = [
    "PublicKey",
    "TPMSECCParms",
    "TPMSECCPoint",
    "TPMSKeyedHashParms",
    "TPMSRSAParms",
    "TPMSSymCipherParms",
    "TPMTPublic",
    "TPMTScheme",
    "TPMTSymDefObject",
    "tpmt_bytes",
]


# --- TPMT_SYM_DEF_OBJECT, schemes --------------------------------------------------------------

_SYM_OBJECT_ALGS = frozenset({TPM_ALG_AES, TPM_ALG_SM4, TPM_ALG_CAMELLIA, TPM_ALG_NULL})


@dataclass(frozen=True, slots=True)
class TPMTSymDefObject:
    """TPMT_SYM_DEF_OBJECT: a storage key's symmetric algorithm (AES-128-CFB), or NULL."""

    algorithm: int = TPM_ALG_NULL
    key_bits: int = 0
    mode: int = 0

    @classmethod
    def _read(cls, r: Reader) -> TPMTSymDefObject:
        alg = check_known(r.u16("symmetric.algorithm"), _SYM_OBJECT_ALGS, "symmetric algorithm", r)
        if alg == TPM_ALG_NULL:
            return _SYM_NULL
        return cls(alg, r.u16("symmetric.keyBits"), r.u16("symmetric.mode"))

    def _write(self, out: list[bytes]) -> None:
        if self.algorithm == TPM_ALG_NULL:
            out.append(U16.pack(TPM_ALG_NULL))
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
    def _read(cls, r: Reader, table: Mapping[int, int], what: str) -> TPMTScheme:
        scheme = check_known(r.u16(f"{what}.scheme"), table, what, r)
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
        out.append(U16.pack(self.scheme))
        if layout != _NO_DETAILS:
            out.append(U16.pack(self.hash_alg))
        if layout == _HASH_COUNT:
            out.append(U16.pack(self.count))
        elif layout == _HASH_KDF:
            out.append(U16.pack(self.kdf))


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
    def _read(cls, r: Reader, what: str) -> TPMSECCPoint:
        return cls(r.tpm2b(f"{what}.x", MAX_ECC), r.tpm2b(f"{what}.y", MAX_ECC))

    def to_bytes(self) -> bytes:
        """x and y, each a TPM2B_ECC_PARAMETER."""
        return tpm2b(self.x) + tpm2b(self.y)

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """A TPMS_ECC_POINT that is exactly the input."""
        r = Reader(data, "TPMS_ECC_POINT")
        point = cls(r.tpm2b("x", MAX_ECC), r.tpm2b("y", MAX_ECC))
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
#: A public key as ``cryptography`` gives it, of the two kinds a TPM key can be (RSA or ECC).
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
        r = Reader(data, "TPMT_PUBLIC")
        obj = cls._read(r)
        r.done()
        return obj

    @classmethod
    def _read(cls, r: Reader) -> Self:
        kind = check_known(r.u16("type"), cls._TYPES, "type", r)
        name_alg = r.u16("nameAlg")
        attributes = r.u32("objectAttributes")
        policy = r.tpm2b("authPolicy", MAX_DIGEST)
        parameters: Parameters
        unique: bytes | TPMSECCPoint
        if kind == TPM_ALG_RSA:
            symmetric = TPMTSymDefObject._read(r)
            scheme = TPMTScheme._read(r, _RSA_SCHEMES, "RSA scheme")
            parameters = TPMSRSAParms(symmetric, scheme, r.u16("keyBits"), r.u32("exponent"))
            unique = r.tpm2b("unique.rsa", MAX_RSA)
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
            unique = r.tpm2b("unique.keyedHash", MAX_DIGEST)
        else:
            parameters = TPMSSymCipherParms(TPMTSymDefObject._read(r))
            unique = r.tpm2b("unique.sym", MAX_DIGEST)
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
            out.append(U16.pack(p.curve_id))
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
        return U16.pack(self.name_alg) + info.digest(self.to_bytes())

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


def tpmt_bytes(data: bytes) -> bytes:
    """A TPMT_PUBLIC from itself or from a TPM2B_PUBLIC (the ``-u`` file of tpm2-tools, and
    ``entra-keys keys export --format tpm``): a leading size equal to the rest is dropped."""
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        return data[2:]
    return data
