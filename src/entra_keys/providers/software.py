"""The software provider: keys held by pyca ``cryptography`` in this process's memory.

It behaves like the TPM provider (same key types, same accepted and refused calls, same errors)
so that code written against one runs on the other, but its keys are never ``hardware_backed``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from cryptography.exceptions import InternalError, InvalidTag
from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.utils import Buffer

from ..errors import (
    AttestationError,
    DecryptionError,
    KeyFileCorrupt,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from ..provider import (
    Certification,
    EndorsementKey,
    EntraECKey,
    EntraPrivateKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
    Quote,
    SessionKey,
    SignatureScheme,
    check_creatable,
    check_nonce,
    oaep_padding,
)
from ..tcg.model import (
    PEM_LABEL_ENCRYPTED_SESSION_KEY,
    PEM_LABEL_ENCRYPTED_SOFTWARE_KEY,
    PEM_LABEL_SESSION_KEY,
    PEM_LABELS,
)
from . import _sealed_blob
from ._checks import check_passphrase, check_pin, pcr_list

__all__ = [
    "PASSPHRASE_SCRYPT",
    "PIN_SCRYPT",
    "SoftwareECKey",
    "SoftwareProvider",
    "SoftwareRSAKey",
    "SoftwareSessionKey",
    "pin_protected",
]

#: What a software key says of its backing (``EntraKey.hardware_reason``).
_SOFTWARE_REASON = "a software key: no TPM"


class SoftwareRSAKey(EntraRSAKey):
    """An RSA key in process memory, checked like a TPM key before pyca does the work."""

    @property
    def hardware_backed(self) -> bool:
        """Always False: the private half is in this process's memory."""
        return False

    @property
    def hardware_reason(self) -> str:
        """Why not hardware: the key lives in this process, there is no TPM."""
        return _SOFTWARE_REASON

    _pin: bytes | None = None

    @property
    def has_pin(self) -> bool:
        """True when the key's file is written under its PIN (asked again at every load)."""
        return self._pin is not None

    def __init__(self, key: rsa.RSAPrivateKey, usage: KeyUsage) -> None:
        self._key = key
        self.key_type = KeyType.of(key.public_key())
        self.usage = usage

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        """Signs the data (PKCS#1 v1.5 or PSS with a digest-length salt)."""
        scheme, hash_alg, _ = self.rsa_sign_args(data, padding, algorithm, digest=False)
        pad = _pss(hash_alg) if scheme is SignatureScheme.RSAPSS else padding
        return self._key.sign(data, pad, algorithm)  # checked above; pyca hashes

    @property
    def tpm_public(self) -> bytes:
        """The TPMT_PUBLIC a TPM would give this key (for names and certification)."""
        from .software_attest import software_tpmt_public

        return software_tpmt_public(self._key.public_key(), self.usage)

    def _attest_sign(self, data: bytes) -> bytes:
        """Sign TPM-format attestation bytes as a TPM's RSASSA-SHA256 AK would (AKs only)."""
        self._require(KeyUsage.ATTEST)
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Decrypts an RSA-OAEP ciphertext (SHA-1 or SHA-256, empty label)."""
        self.rsa_decrypt_args(padding)
        try:
            return self._key.decrypt(ciphertext, padding)
        except ValueError as exc:
            raise DecryptionError("the ciphertext does not decrypt with this key") from exc

    @property
    def key_size(self) -> int:
        """The modulus size in bits."""
        return self._key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half."""
        return self._key.public_key()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """The private numbers (software keys only)."""
        return self._key.private_numbers()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """The serialized private key (software keys only)."""
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> SoftwareRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SoftwareRSAKey:
        return self


class SoftwareECKey(EntraECKey):
    """An elliptic-curve key in process memory, checked like a TPM key."""

    @property
    def hardware_backed(self) -> bool:
        """Always False: the private half is in this process's memory."""
        return False

    @property
    def hardware_reason(self) -> str:
        """Why not hardware: the key lives in this process, there is no TPM."""
        return _SOFTWARE_REASON

    _pin: bytes | None = None

    @property
    def has_pin(self) -> bool:
        """True when the key's file is written under its PIN (asked again at every load)."""
        return self._pin is not None

    def __init__(self, key: ec.EllipticCurvePrivateKey, usage: KeyUsage) -> None:
        self._key = key
        self.key_type = KeyType.of(key.public_key())
        self.usage = usage

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Signs the data with ECDSA; the signature is DER, as from ``cryptography``."""
        self.ecdsa_sign_args(data, signature_algorithm, digest=False)
        return self._key.sign(data, signature_algorithm)  # checked above; pyca hashes

    @property
    def tpm_public(self) -> bytes:
        """The TPMT_PUBLIC a TPM would give this key (for names and certification)."""
        from .software_attest import software_tpmt_public

        return software_tpmt_public(self._key.public_key(), self.usage)

    def _attest_sign(self, data: bytes) -> bytes:
        """Sign TPM-format attestation bytes as a TPM's ECDSA-SHA256 AK would (AKs only); DER."""
        self._require(KeyUsage.ATTEST)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def curve(self) -> ec.EllipticCurve:
        """The curve."""
        return self._key.curve

    @property
    def key_size(self) -> int:
        """The curve size in bits."""
        return self._key.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half."""
        return self._key.public_key()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """The private numbers (software keys only)."""
        return self._key.private_numbers()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """The serialized private key (software keys only)."""
        return self._key.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> SoftwareECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SoftwareECKey:
        return self


class SoftwareSessionKey(SessionKey):
    """The PRT session key in process memory (the software provider's stand-in for a TPM)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != SESSION_KEY_BYTES:
            raise DecryptionError(f"the session key is {len(key)} bytes, not {SESSION_KEY_BYTES}")
        self.__key = bytes(key)

    @property
    def hardware_backed(self) -> bool:
        """Always False: the key is in this process's memory."""
        return False

    def hmac_sha256(self, data: bytes) -> bytes:
        """HMAC-SHA256 of the data under the session key; at most ``MAX_INPUT`` bytes, as a
        TPM takes."""
        if len(data) > self.MAX_INPUT:
            raise UnsupportedAlgorithm(
                f"a session key HMAC takes at most {self.MAX_INPUT} bytes, not {len(data)}"
            )
        return hmac.new(self.__key, data, hashlib.sha256).digest()

    def _key_bytes(self) -> bytes:
        return self.__key


SESSION_KEY_BYTES = 32
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
#: scrypt's cost for a software key file under a PIN: (N, r, p) = (2**15, 8, 1), 32 MiB of
#: memory a guess, the parameters of sealed secrets. One wrong-PIN guess (a load) took 91 ms
#: (fastest of 20; median 94 ms) on the 2-core development machine, where a guess at a PKCS#8
#: file under PBKDF2 took 0.36 ms in the same run: all 10**6 six-digit PINs cost about 26
#: CPU-hours instead of 6 minutes. The floor wanted was 50 ms a guess.
PIN_SCRYPT = (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
#: scrypt's cost for a software key file under the store passphrase alone: (2**14, 8, 2), the
#: CPU of ``PIN_SCRYPT`` (p runs N=2**14 twice) in 16 MiB, within the openssl command line's
#: default 32 MiB limit, so ``openssl pkey`` still opens the file with the passphrase.
PASSPHRASE_SCRYPT = (2**14, 8, 2)


def _der_octets(*parts: bytes) -> bytes:
    """SEQUENCE { INTEGER version, OCTET STRING... } for short parts (each under 128 bytes)."""
    version = 1 if len(parts) > 1 else 0
    body = bytes([0x02, 0x01, version]) + b"".join(bytes([0x04, len(p)]) + p for p in parts)
    return bytes([0x30, len(body)]) + body


def _der_octets_parse(der: bytes) -> tuple[int, list[bytes]]:
    """The inverse of ``_der_octets``; KeyFileCorrupt on anything else."""
    if len(der) < 5 or der[0] != 0x30 or der[1] != len(der) - 2 or der[2:4] != b"\x02\x01":
        raise KeyFileCorrupt("not a session key structure")
    version, rest, parts = der[4], der[5:], []
    while rest:
        if len(rest) < 2 or rest[0] != 0x04 or len(rest) < 2 + rest[1]:
            raise KeyFileCorrupt("not a session key structure")
        parts.append(rest[2 : 2 + rest[1]])
        rest = rest[2 + rest[1] :]
    return version, parts


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode("ascii")


def _unpem(data: bytes) -> tuple[str, bytes]:
    try:
        text = data.decode("ascii")
        _, _, rest = text.partition("-----BEGIN ")
        label, _, rest = rest.partition("-----")
        body, sep, _ = rest.partition(f"-----END {label}-----")
        if not sep:
            raise ValueError("no end line")
        return label, base64.b64decode("".join(body.split()), validate=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileCorrupt(f"not a readable PEM ({exc})") from exc


def _session_kek(passphrase: bytes, salt: bytes) -> AESGCM:
    kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return AESGCM(kdf.derive(passphrase))


def _pss(hash_alg: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.DIGEST_LENGTH)


# -- key files under a PIN or a passphrase: PKCS#8, PBES2 with scrypt (RFC 8018, RFC 7914) ------

_PBES2 = "1.2.840.113549.1.5.13"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBKDF2 = "1.2.840.113549.1.5.12"
_HMAC_SHA256 = "1.2.840.113549.2.9"
_AES256_CBC = "2.16.840.1.101.3.4.1.42"
#: The most memory (128 * r * N * p bytes) a key file's scrypt parameters may ask for: a file
#: with larger ones is refused before scrypt runs.
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
#: The PBKDF2-HMAC-SHA256 rounds read in a key file of an earlier release (PKCS#8's best
#: available encryption wrote 2048): fewer are weaker than any file entra_keys wrote, more than
#: 10**6 (0.25 s here) would let a 300-byte file hold a load for minutes (2**31 - 1 rounds) or
#: make pyca panic (2**31 and up).
PBKDF2_ROUNDS = range(2048, 10**6 + 1)


class _Encryption(NamedTuple):
    """How a PKCS#8 key file is encrypted: its KDF (``"scrypt"`` or ``"pbkdf2"``), the cost,
    and whether it is a PIN file (scrypt parameters naming the key length, ``_scrypt_pem``)."""

    kdf: str
    cost: tuple[int, ...]
    pin: bool


def _pin_password(pin: bytes, passphrase: bytes | None) -> bytes:
    """What a PIN key file's key is derived from: the PIN and the store passphrase together,
    each length-prefixed (no two pairs give the same bytes), so neither alone opens it."""
    parts = (bytes(pin), bytes(passphrase or b""))
    return b"entra-keys PIN key\x00" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


@functools.cache
def _pkcs8_classes() -> Any:
    """asn1crypto's classes of EncryptedPrivateKeyInfo with PBES2 and scrypt (made on first use:
    asn1crypto is imported only where a PIN file is read or written)."""
    from asn1crypto import core

    class Algorithm(core.Sequence):  # type: ignore[misc]
        _fields = [  # noqa: RUF012 - asn1crypto's schema
            ("algorithm", core.ObjectIdentifier),
            ("parameters", core.Any, {"optional": True}),
        ]

    class ScryptParams(core.Sequence):  # type: ignore[misc]
        _fields = [  # noqa: RUF012
            ("salt", core.OctetString),
            ("cost", core.Integer),
            ("block_size", core.Integer),
            ("parallelization", core.Integer),
            ("key_length", core.Integer, {"optional": True}),
        ]

    class PBKDF2Params(core.Sequence):  # type: ignore[misc]
        _fields = [  # noqa: RUF012 - the prf's DEFAULT (hmacWithSHA1) is absent: refused
            ("salt", core.OctetString),
            ("iteration_count", core.Integer),
            ("key_length", core.Integer, {"optional": True}),
            ("prf", Algorithm, {"optional": True}),
        ]

    class PBES2Params(core.Sequence):  # type: ignore[misc]
        _fields = [("kdf", Algorithm), ("scheme", Algorithm)]  # noqa: RUF012

    class EncryptedPrivateKeyInfo(core.Sequence):  # type: ignore[misc]
        _fields = [("algorithm", Algorithm), ("data", core.OctetString)]  # noqa: RUF012

    return core, Algorithm, ScryptParams, PBES2Params, EncryptedPrivateKeyInfo, PBKDF2Params


def _scrypt_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes, *, pin: bool
) -> bytes:
    """The key as PKCS#8 EncryptedPrivateKeyInfo, PBES2 with scrypt (``PIN_SCRYPT``, or
    ``PASSPHRASE_SCRYPT`` for a file under the passphrase alone) and
    AES-256-CBC; pyca (and openssl, within its scrypt memory limit) read it back. A PIN file
    names its key length (32) in the scrypt parameters, one under the passphrase alone does
    not: what tells them apart without the store's header lines."""
    core, algorithm, scrypt_params, pbes2_params, encrypted_info, _ = _pkcs8_classes()
    salt, iv = os.urandom(16), os.urandom(16)
    n, r, p = PIN_SCRYPT if pin else PASSPHRASE_SCRYPT
    kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    padder = symmetric_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    data = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    params = scrypt_params(
        {
            "salt": salt,
            "cost": n,
            "block_size": r,
            "parallelization": p,
            **({"key_length": 32} if pin else {}),
        }
    )
    scheme = pbes2_params(
        {
            "kdf": algorithm({"algorithm": _SCRYPT, "parameters": params}),
            "scheme": algorithm({"algorithm": _AES256_CBC, "parameters": core.OctetString(iv)}),
        }
    )
    der = encrypted_info(
        {"algorithm": algorithm({"algorithm": _PBES2, "parameters": scheme}), "data": data}
    ).dump()
    return _pem(PEM_LABEL_ENCRYPTED_SOFTWARE_KEY, der)


def _encryption(data: bytes) -> _Encryption | None:
    """How a software key file is encrypted, read before pyca sees it: None for one that is not
    (one unencrypted PEM block); KeyFileCorrupt, naming why, for anything but the schemes
    entra_keys writes (PBES2, scrypt within ``_MAX_SCRYPT_MEMORY`` and not below ``PIN_SCRYPT``
    for a PIN file or ``PASSPHRASE_SCRYPT`` otherwise, AES-256-CBC) and reads from earlier
    releases (PBES2, PBKDF2-HMAC-SHA256 in ``PBKDF2_ROUNDS``, AES-256-CBC)."""
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:  # pyca would open whichever it likes: the one checked here, or another
        raise KeyFileCorrupt(f"a key file holds one PEM block, not {blocks}")
    if b"Proc-Type:" in data:
        raise KeyFileCorrupt(
            "OpenSSL's traditional PEM encryption is not a key file entra_keys writes"
        )
    if f"-----BEGIN {PEM_LABEL_ENCRYPTED_SOFTWARE_KEY}-----".encode() not in data:
        return None
    try:
        _, der = _unpem(data)
        _, _, scrypt_params, pbes2_params, encrypted_info, pbkdf2_params = _pkcs8_classes()
        info = encrypted_info.load(der, strict=True)
        scheme_oid = info["algorithm"]["algorithm"].dotted
        if scheme_oid != _PBES2:
            raise KeyFileCorrupt(f"the key file is encrypted with {scheme_oid}, not PBES2")
        scheme = pbes2_params.load(info["algorithm"]["parameters"].dump(), strict=True)
        cipher, iv = scheme["scheme"]["algorithm"].dotted, scheme["scheme"]["parameters"]
        if cipher != _AES256_CBC or len(_octets(iv)) != 16:
            raise KeyFileCorrupt(f"the key file's cipher ({cipher}) is not AES-256-CBC")
        kdf, params = scheme["kdf"]["algorithm"].dotted, scheme["kdf"]["parameters"].dump()
        if kdf == _SCRYPT:
            found = scrypt_params.load(params, strict=True)
            cost = tuple(int(found[f].native) for f in ("cost", "block_size", "parallelization"))
            length = found["key_length"].native
            encryption = _Encryption("scrypt", cost, pin=length is not None)
        elif kdf == _PBKDF2:
            found = pbkdf2_params.load(params, strict=True)
            prf = found["prf"]["algorithm"].dotted if found["prf"].native is not None else None
            if prf != _HMAC_SHA256:
                raise KeyFileCorrupt(f"the key file's PBKDF2 uses {prf or 'HMAC-SHA1'}")
            length = found["key_length"].native
            encryption = _Encryption("pbkdf2", (int(found["iteration_count"].native),), pin=False)
        else:
            raise KeyFileCorrupt(f"the key file's key derivation ({kdf}) is not scrypt")
        salt = len(bytes(found["salt"].native))
    except (
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        ArithmeticError,
        RecursionError,
    ) as exc:
        # asn1crypto's errors on malformed DER (IndexError among them)
        raise KeyFileCorrupt(f"not a PKCS#8 encrypted key entra_keys reads ({exc})") from exc
    if length not in (None, 32) or not 8 <= salt <= 64:
        raise KeyFileCorrupt(f"the key file's {encryption.kdf} salt or key length is refused")
    _check_cost(encryption)
    return encryption


def _octets(value: Any) -> bytes:
    """The bytes of an asn1crypto Any holding an OCTET STRING; ValueError for anything else."""
    from asn1crypto import core

    return bytes(core.OctetString.load(value.dump(), strict=True).native)


def _check_cost(found: _Encryption) -> None:
    """KeyFileCorrupt for a KDF cost out of what entra_keys writes and reads: too much work
    (refused before it runs) or less than a file of its kind is written with."""
    if found.kdf == "pbkdf2":
        if found.cost[0] not in PBKDF2_ROUNDS:
            raise KeyFileCorrupt(
                f"the key file's PBKDF2 rounds ({found.cost[0]}) are refused: entra_keys reads "
                f"{PBKDF2_ROUNDS.start} to {PBKDF2_ROUNDS.stop - 1}"
            )
        return
    n, r, p = found.cost
    floor_n, floor_r, floor_p = PIN_SCRYPT if found.pin else PASSPHRASE_SCRYPT
    if not (n > 1 and n & (n - 1) == 0 and r > 0 and p > 0) or 128 * n * r * p > _MAX_SCRYPT_MEMORY:
        raise KeyFileCorrupt(f"the key file's scrypt parameters (N={n}, r={r}, p={p}) are refused")
    if n * r < floor_n * floor_r or n * r * p < floor_n * floor_r * floor_p:
        raise KeyFileCorrupt(
            f"the key file's scrypt parameters (N={n}, r={r}, p={p}) are refused: weaker than "
            f"the (N={floor_n}, r={floor_r}, p={floor_p}) entra_keys writes"
        )


def _is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is pyo3's PanicException: a Rust panic in pyca, raised as a
    BaseException that no ``except Exception`` stops."""
    return any(
        c.__name__ == "PanicException" and c.__module__ == "pyo3_runtime" for c in type(exc).__mro__
    )


def pin_protected(data: bytes) -> bool:
    """Whether a software key file is written under its PIN (PKCS#8, PBES2 with scrypt): it
    opens only with the PIN (and the store passphrase it was written with), whatever its
    header lines say. A file whose encryption is refused is none: its load is KeyFileCorrupt,
    not a request for a PIN."""
    try:
        found = _encryption(data)
    except KeyFileCorrupt:
        return False
    return found is not None and found.pin


class SoftwareProvider(Provider):
    """Keys made and used by pyca ``cryptography``; stored as PKCS#8 (encrypted on request)."""

    kind: ClassVar[str] = "software"
    hardware_backed: ClassVar[bool] = False
    pem_labels: ClassVar[frozenset[str]] = PEM_LABELS["software"]

    def __init__(self) -> None:
        self._ek: rsa.RSAPrivateKey | None = None

    def create_key(
        self, key_type: KeyType, usage: KeyUsage, *, pin: bytes | None = None
    ) -> EntraPrivateKey:
        """Creates a key in memory. Software has no dictionary-attack counter: a ``pin`` is part
        of what its key file is encrypted under (with the store passphrase, if any: both are
        needed), stretched by scrypt, and asked for again at every load."""
        check_creatable(key_type, usage)
        pin = check_pin(pin)
        key: SoftwareRSAKey | SoftwareECKey
        if key_type.is_rsa:
            key = SoftwareRSAKey(rsa.generate_private_key(65537, key_type.bits), usage)
        else:
            key = SoftwareECKey(ec.generate_private_key(key_type.curve), usage)
        key._pin = pin or None
        return key

    def key_to_pem(self, key: EntraPrivateKey, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM: for a key with a PIN, encrypted under the PIN and the passphrase together;
        otherwise, where a passphrase is given, under it. Both PBES2 with scrypt
        (``PIN_SCRYPT``, ``PASSPHRASE_SCRYPT``): a guess at the passphrase costs the CPU it costs
        on the session key and sealed secrets."""
        passphrase = check_passphrase(passphrase)
        if not isinstance(key, SoftwareRSAKey | SoftwareECKey):
            raise UnsupportedAlgorithm(f"{type(key).__name__} is not a software key")
        if key._pin is not None:
            return _scrypt_pem(key._key, _pin_password(key._pin, passphrase), pin=True)
        if passphrase:  # scrypt, as the session key and sealed secrets under the same passphrase
            return _scrypt_pem(key._key, bytes(passphrase), pin=False)
        return key._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def key_from_pem(
        self,
        data: bytes,
        usage: KeyUsage,
        passphrase: bytes | None = None,
        *,
        pin: bytes | None = None,
        allow_imported: bool = False,
    ) -> EntraPrivateKey:
        """Loads a PKCS#8 PEM key; a missing or wrong passphrase or PIN is WrongPassphrase.

        A key written under its PIN opens only with the PIN and the passphrase it was written
        with, whatever else is given; a PIN is checked here, when the file opens (the TPM
        checks its keys' PINs at each use instead). A file not under a PIN opens with the
        passphrase, else with the PIN (a PIN key file of entra_keys before 0.1, written under
        the PIN alone: it then keeps the PIN, and is written under it anew when saved).
        ``allow_imported`` is accepted and ignored: a software key never claims hardware.
        """
        del allow_imported
        if not isinstance(data, bytes | bytearray | memoryview):
            raise KeyFileCorrupt(f"a key file is bytes, not {type(data).__name__}")
        data, pin, passphrase = bytes(data), check_pin(pin), check_passphrase(passphrase)
        found = _encryption(data)  # refused schemes and costs are raised before a KDF runs
        if found is not None and found.pin:
            if not pin:
                raise WrongPassphrase("the key has a PIN; give it to use the key")
            return self._opened(
                data, usage, _pin_password(pin, passphrase), pin=pin,
                wrong="the PIN is wrong (or the store passphrase, or the key is damaged)",
            )  # fmt: skip
        encrypted = found is not None
        secret = passphrase or pin
        if encrypted and not secret:
            raise WrongPassphrase("the key is encrypted and no passphrase was given")
        # A passphrase given for an unencrypted key is ignored, as for a TPM key's file.
        return self._opened(
            data, usage, secret if encrypted else None,
            pin=pin if encrypted and not passphrase else None,
            wrong="the passphrase is wrong or the key is damaged",
        )  # fmt: skip

    @staticmethod
    def _opened(
        data: bytes, usage: KeyUsage, password: bytes | None, *, pin: bytes | None, wrong: str
    ) -> SoftwareRSAKey | SoftwareECKey:
        """The key of a PKCS#8 PEM opened with ``password`` (WrongPassphrase saying ``wrong``
        when it does not open), keeping ``pin`` for when it is written again."""
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError, _PycaUnsupported, InternalError) as exc:
            if password is not None:
                raise WrongPassphrase(wrong) from exc
            raise KeyFileCorrupt(f"not a readable PKCS#8 key ({exc})") from exc
        except BaseException as exc:  # pyo3's PanicException is no Exception
            if not _is_panic(exc):
                raise
            raise KeyFileCorrupt(f"not a readable PKCS#8 key (pyca panicked: {exc})") from None
        made: SoftwareRSAKey | SoftwareECKey | None = None
        try:
            if isinstance(key, rsa.RSAPrivateKey):
                made = SoftwareRSAKey(key, usage)
            elif isinstance(key, ec.EllipticCurvePrivateKey) and usage is not KeyUsage.DECRYPT:
                made = SoftwareECKey(key, usage)
        except UnsupportedAlgorithm as exc:
            raise KeyFileCorrupt(f"a key entra_keys does not make: {exc}") from exc
        if made is not None:
            made._pin = pin or None
            return made
        raise KeyFileCorrupt(
            f"a {type(key).__name__} for {usage.value} is not a key entra_keys makes"
        )

    def info(self) -> ProviderInfo:
        """The software provider has no chip to describe."""
        return ProviderInfo(kind=self.kind, hardware_backed=False)

    # -- attestation, in the TPM's wire formats, marked as software --------------------------

    def endorsement_keys(self, key_type: KeyType | None = None) -> list[EndorsementKey]:
        """A software EK (RSA-2048, made once per provider, in memory); it has no certificate.
        Asked for another type, none."""
        from .software_attest import software_endorsement_key

        if key_type not in (None, KeyType.RSA2048):
            return []
        if self._ek is None:
            self._ek = rsa.generate_private_key(65537, 2048)
        return [software_endorsement_key(self._ek)]

    def activate_credential(
        self,
        ak: EntraPrivateKey,
        ek: EndorsementKey,
        credential_blob: bytes,
        encrypted_secret: bytes,
    ) -> bytes:
        """The TPM's ActivateCredential, done in software with this provider's software EK."""
        from ..tcg.credential import activate_credential_with_key
        from ..tcg.structures import TPMTPublic

        ak_key = self._own_ak(ak)
        mine = self.endorsement_keys()[0]
        if self._ek is None or ek.public != mine.public:
            raise AttestationError("the endorsement key given is not this provider's")
        ak_name = TPMTPublic.parse(ak_key.tpm_public).name()
        return activate_credential_with_key(
            self._ek, TPMTPublic.parse(ek.public), ak_name, credential_blob, encrypted_secret
        )

    def quote(
        self,
        ak: EntraPrivateKey,
        pcrs: Sequence[int],
        nonce: bytes,
        bank: str = "sha256",
        *,
        event_log: bool | str | os.PathLike[str] = False,
    ) -> Quote:
        """A quote in TPMS_ATTEST form over software PCRs (all zero), signed by a software AK;
        no boot was measured, so ``event_log=True`` is HardwareUnavailable (a path's log is
        carried as the TPM provider carries it)."""
        from .software_attest import software_quote

        check_nonce(nonce)
        ak_key = self._own_ak(ak)
        return software_quote(ak_key, pcr_list(pcrs), nonce, bank, event_log=event_log)

    def certify(self, key: EntraPrivateKey, ak: EntraPrivateKey, nonce: bytes) -> Certification:
        """A TPM2_Certify-shaped statement about a software key, signed by a software AK."""
        from .software_attest import software_certify

        check_nonce(nonce)
        ak_key = self._own_ak(ak)
        if not isinstance(key, SoftwareRSAKey | SoftwareECKey):
            raise UnsupportedAlgorithm("only software keys can be certified by a software AK")
        return software_certify(key.tpm_public, ak_key, nonce)

    def _own_ak(self, ak: EntraPrivateKey) -> SoftwareRSAKey | SoftwareECKey:
        if not isinstance(ak, SoftwareRSAKey | SoftwareECKey):
            raise UnsupportedAlgorithm("the attestation key must be a software key")
        ak._require(KeyUsage.ATTEST)
        return ak

    # -- the PRT session key ------------------------------------------------------------------

    def import_session_key(
        self, transport_key: EntraPrivateKey, encrypted_key: bytes, *, oaep_hash: str = "sha1"
    ) -> SessionKey:
        """Decrypts the session key with the software transport key (RSA-OAEP, SHA-1 as Entra
        wraps it, or SHA-256 for RSA-OAEP-256)."""
        oaep = oaep_padding(oaep_hash)
        if not isinstance(transport_key, SoftwareRSAKey):
            raise UnsupportedAlgorithm("the transport key must be an RSA key of this provider")
        secret = transport_key.decrypt(encrypted_key, oaep)
        return SoftwareSessionKey(secret)

    def session_key_to_pem(self, key: SessionKey, passphrase: bytes | None = None) -> bytes:
        """The raw key in a PEM structure, or scrypt + AES-256-GCM with a passphrase."""
        passphrase = check_passphrase(passphrase)
        if not isinstance(key, SoftwareSessionKey):
            raise UnsupportedAlgorithm("only software session keys can be stored by this provider")
        if not passphrase:
            return _pem(PEM_LABEL_SESSION_KEY, _der_octets(key._key_bytes()))
        salt, nonce = os.urandom(16), os.urandom(12)
        sealed = _session_kek(passphrase, salt).encrypt(
            nonce, key._key_bytes(), PEM_LABEL_ENCRYPTED_SESSION_KEY.encode()
        )
        return _pem(PEM_LABEL_ENCRYPTED_SESSION_KEY, _der_octets(salt, nonce, sealed))

    def session_key_from_pem(self, data: bytes, passphrase: bytes | None = None) -> SessionKey:
        """Loads a stored session key; a missing or wrong passphrase is WrongPassphrase."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise KeyFileCorrupt(f"a session key file is bytes, not {type(data).__name__}")
        passphrase = check_passphrase(passphrase)
        label, der = _unpem(bytes(data))
        version, parts = _der_octets_parse(der)
        if label == PEM_LABEL_SESSION_KEY and version == 0 and len(parts) == 1:
            return SoftwareSessionKey(parts[0])
        if label != PEM_LABEL_ENCRYPTED_SESSION_KEY or version != 1 or len(parts) != 3:
            raise KeyFileCorrupt(f"not a software session key ({label})")
        if not passphrase:
            raise WrongPassphrase("the session key is encrypted and no passphrase was given")
        salt, nonce, sealed = parts
        if len(salt) != 16 or len(nonce) != 12:  # as written; checked before scrypt runs
            raise KeyFileCorrupt("the session key file's salt or nonce is damaged")
        try:
            secret = _session_kek(passphrase, salt).decrypt(
                nonce, sealed, PEM_LABEL_ENCRYPTED_SESSION_KEY.encode()
            )
        except InvalidTag as exc:
            raise WrongPassphrase("the passphrase is wrong or the session key is damaged") from exc
        return SoftwareSessionKey(secret)

    # -- sealed secrets -----------------------------------------------------------------------

    def seal(
        self,
        data: bytes,
        *,
        pin: bytes | None = None,
        pcrs: Sequence[int] | None = None,
        name: str = "",
    ) -> bytes:
        """Encrypts the secret under the PIN as a passphrase (scrypt, AES-256-GCM), bound to
        ``name`` (in the GCM tag's associated data). Software has no PCRs and keeps nothing
        secret in the clear: PCRs or no passphrase are refused."""
        _sealed_blob.check_secret(data)
        named = _sealed_blob.name_field(name)
        pin = check_pin(pin, limit=None, what="a passphrase (pin)")
        if pcrs is not None:
            raise UnsupportedAlgorithm(
                "the software provider has no PCRs to bind a secret to: seal it with the TPM "
                "provider, or without pcrs"
            )
        if not pin:
            raise WrongPassphrase(
                "the software provider seals a secret only under a passphrase (pin): without "
                "one it would be stored in the clear"
            )
        salt, nonce = os.urandom(16), os.urandom(12)
        fields = [_sealed_blob.NAMED, salt, nonce, named]
        sealed = _session_kek(pin, salt).encrypt(
            nonce, bytes(data), _sealed_blob.frame(self.kind, fields)
        )
        return _sealed_blob.frame(self.kind, [*fields, sealed])

    def unseal(
        self,
        blob: bytes,
        *,
        pin: bytes | None = None,
        name: str = "",
        allow_unbound: bool = False,
    ) -> bytes:
        """Decrypts a secret sealed by ``seal`` as ``name``; a blob sealed as another name is
        KeyFileCorrupt; a missing or wrong passphrase, or an altered blob, is WrongPassphrase
        (AES-GCM cannot tell the two apart)."""
        pin = check_pin(pin, limit=None, what="a passphrase (pin)")
        fields = _sealed_blob.unframe(blob, self.kind)
        version = fields[0] if fields else b""
        if version == _sealed_blob.UNBOUND and len(fields) == 4:
            _sealed_blob.refuse_unbound(allow_unbound)
            salt, nonce, sealed = fields[1:]
            aad_fields = fields[:3]
        elif version == _sealed_blob.NAMED and len(fields) == 5:
            _sealed_blob.check_name(fields[3], name)
            salt, nonce, sealed = fields[1], fields[2], fields[4]
            aad_fields = fields[:4]
        else:
            raise KeyFileCorrupt("not a software sealed secret of a version entra_keys reads")
        if len(salt) != 16 or len(nonce) != 12:
            raise KeyFileCorrupt("the sealed blob's salt or nonce is damaged")
        if not pin:
            raise WrongPassphrase("the secret is sealed under a passphrase; give it (pin)")
        aad = _sealed_blob.frame(self.kind, aad_fields)
        try:
            return _session_kek(pin, salt).decrypt(nonce, sealed, aad)
        except InvalidTag as exc:
            raise WrongPassphrase(
                "the passphrase is wrong or the sealed secret is damaged"
            ) from exc
