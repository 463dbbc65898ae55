"""The TPM wire layer's shared pieces: constants, TPMA_OBJECT, the hash algorithms and the
big-endian reader and TPM2B helpers the structures are parsed with."""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes

from ..errors import InvalidData, UnsupportedAlgorithm

__all__ = [
    "CLOCK",
    "HASH_ALGORITHMS",
    "HEADER",
    "MAX_DATA",
    "MAX_DIGEST",
    "MAX_ECC",
    "MAX_NAME",
    "MAX_RSA",
    "NUM_PCR_BANKS",
    "PCR_SELECT_MAX",
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
    "U16",
    "U32",
    "U64",
    "FrozenMapping",
    "HashInfo",
    "Reader",
    "as_bytes",
    "check_known",
    "hash_info",
    "hash_info_by_name",
    "parse_tpm2b",
    "readable_bytes",
    "too_large_error",
    "tpm2b",
    "trailing_error",
    "truncated_error",
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


_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenMapping(Mapping[_K, _V]):
    """A read-only mapping a result owns (a quote's PCR values, an event's digests, boot
    facts' measurements); unlike ``MappingProxyType`` it pickles, so that a result crosses to
    and from a ``VerifierPool`` worker."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[_K, _V]) -> None:
        self._data = dict(data)  # its own copy: nothing outside changes it

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[object, ...]:
        return FrozenMapping, (self._data,)


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
MAX_DIGEST = 64
MAX_NAME = 2 + 64
MAX_DATA = 2 + 64
MAX_RSA = 512
MAX_ECC = 128
PCR_SELECT_MAX = 4
NUM_PCR_BANKS = 16

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
HEADER = struct.Struct(">IH")  # TPMS_ATTEST magic, type
CLOCK = struct.Struct(">QIIBQ")  # TPMS_CLOCK_INFO and firmwareVersion


def as_bytes(data: object, what: str) -> bytes:
    """The input as bytes (a copy of a bytearray or memoryview); InvalidData for other types."""
    if type(data) is bytes:
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"{what}: bytes expected, not {type(data).__name__}")
    return readable_bytes(data, what)


def readable_bytes(data: bytes | bytearray | memoryview, what: str) -> bytes:
    """A copy of a bytes-like input; InvalidData for a released memoryview, which has nothing
    to read (``bytes()`` and ``len()`` raise ValueError on one)."""
    try:
        return bytes(data)
    except ValueError:
        raise InvalidData(f"{what}: a released memoryview, nothing to read") from None


def truncated_error(what: str, name: str, n: int, pos: int, end: int) -> InvalidData:
    return InvalidData(
        f"{what}: truncated: {name} needs {n} bytes at offset {pos}, {end - pos} left"
    )


def too_large_error(what: str, name: str, size: int, limit: int) -> InvalidData:
    return InvalidData(f"{what}: {name} is {size} bytes, more than the {limit} it can hold")


def trailing_error(what: str, left: int) -> InvalidData:
    return InvalidData(f"{what}: {left} trailing bytes after the structure")


class Reader:
    """Reads big-endian TPM fields from bytes; every shortfall is an exact InvalidData."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: object, what: str) -> None:
        self.data = data if type(data) is bytes else as_bytes(data, what)
        self.pos = 0
        self.what = what

    def _need(self, n: int, name: str) -> int:
        """The offset of the next ``n`` bytes, which the reader moves past."""
        pos = self.pos
        end = pos + n
        if end > len(self.data):
            raise truncated_error(self.what, name, n, pos, len(self.data))
        self.pos = end
        return pos

    def u8(self, name: str) -> int:
        return self.data[self._need(1, name)]

    def u16(self, name: str) -> int:
        value: int = U16.unpack_from(self.data, self._need(2, name))[0]
        return value

    def u32(self, name: str) -> int:
        value: int = U32.unpack_from(self.data, self._need(4, name))[0]
        return value

    def u64(self, name: str) -> int:
        value: int = U64.unpack_from(self.data, self._need(8, name))[0]
        return value

    def fields(self, layout: struct.Struct, name: str) -> tuple[Any, ...]:
        """The fixed-size fields ``layout`` reads (e.g. HEADER: magic and type), in one read."""
        pos = self.pos
        end = pos + layout.size
        if end > len(self.data):
            raise truncated_error(self.what, name, layout.size, pos, len(self.data))
        self.pos = end
        return layout.unpack_from(self.data, pos)

    def take(self, n: int, name: str) -> bytes:
        pos = self.pos
        end = pos + n
        if end > len(self.data):
            raise truncated_error(self.what, name, n, pos, len(self.data))
        self.pos = end
        return self.data[pos:end]

    def tpm2b(self, name: str, limit: int) -> bytes:
        """A TPM2B of at most ``limit`` bytes: its size, then the bytes."""
        data, pos = self.data, self.pos
        start = pos + 2
        if start > len(data):
            raise truncated_error(self.what, f"{name} size", 2, pos, len(data))
        size = data[pos] << 8 | data[pos + 1]
        if size > limit:
            raise too_large_error(self.what, name, size, limit)
        stop = start + size
        if stop > len(data):
            raise truncated_error(self.what, name, size, start, len(data))
        self.pos = stop
        return data[start:stop]

    def done(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise trailing_error(self.what, left)


def tpm2b(data: bytes) -> bytes:
    """A TPM2B: the two-byte big-endian size, then the bytes."""
    if len(data) > 0xFFFF:
        raise InvalidData(f"a TPM2B holds at most 65535 bytes, not {len(data)}")
    return U16.pack(len(data)) + data


def parse_tpm2b(data: bytes, what: str = "TPM2B", limit: int = 0xFFFF) -> bytes:
    """The contents of a TPM2B that is exactly the input (no trailing bytes)."""
    reader = Reader(data, what)
    out = reader.tpm2b("buffer", limit)
    reader.done()
    return out


def check_known(
    alg: int, allowed: Mapping[int, object] | frozenset[int], what: str, r: Reader
) -> int:
    if alg not in allowed:
        raise InvalidData(f"{r.what}: {what} 0x{alg:04x} is not one this structure allows")
    return alg
