"""Credential protection (TPM 2.0 Part 1, section 24): MakeCredential and its software inverse.

A verifier binds a secret to an EK and an AK's name with ``make_credential``; only a TPM that
holds both the EK's private key and an object of that name gets the secret back from
TPM2_ActivateCredential. The seed is RSA-OAEP encrypted to an RSA EK (label "IDENTITY") or
agreed by ECDH with an ECC EK (KDFe); KDFa derives an AES key ("STORAGE") and an HMAC key
("INTEGRITY") from it. ``activate_credential_with_key`` is the TPM's side with a software EK.
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography 47 moved CFB to "decrepit"; a TPM's credential protection still uses it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from ..errors import AttestationError, InvalidData, UnsupportedAlgorithm
from .structures import (
    HASH_ALGORITHMS,
    TPM_ALG_AES,
    TPM_ALG_CFB,
    TPMA_OBJECT,
    HashInfo,
    TPMSECCParms,
    TPMSECCPoint,
    TPMSRSAParms,
    TPMTPublic,
    hash_info,
    parse_tpm2b,
    tpm2b,
)

__all__ = [
    "CREDENTIAL_FILE_MAGIC",
    "activate_credential_with_key",
    "credential_file",
    "kdfa",
    "kdfe",
    "make_credential",
    "parse_credential_file",
]

_IDENTITY = b"IDENTITY\0"
_STORAGE = b"STORAGE"
_INTEGRITY = b"INTEGRITY"
#: The header of tpm2-tools' credential files (``tpm2_makecredential -o``): magic, version 1.
CREDENTIAL_FILE_MAGIC = bytes.fromhex("badcc0de00000001")


def kdfa(
    info: HashInfo, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (Part 1, 11.4.10.2): SP 800-108 counter mode with HMAC; the label ends in a NUL."""
    label = label if label.endswith(b"\0") else label + b"\0"
    tail = label + context_u + context_v + struct.pack(">I", bits)
    out = b"".join(
        hmac.digest(key, struct.pack(">I", i) + tail, info.name)
        for i in range(1, -(-bits // (8 * info.digest_size)) + 1)
    )
    return _truncate(out, bits)


def kdfe(
    info: HashInfo, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """KDFe (Part 1, 11.4.10.3): SP 800-56A concatenation KDF over the ECDH x-coordinate Z."""
    label = label if label.endswith(b"\0") else label + b"\0"
    tail = z + label + party_u + party_v
    out = b"".join(
        info.digest(struct.pack(">I", i) + tail)
        for i in range(1, -(-bits // (8 * info.digest_size)) + 1)
    )
    return _truncate(out, bits)


def _truncate(data: bytes, bits: int) -> bytes:
    out = data[: -(-bits // 8)]
    if bits % 8:
        out = bytes([out[0] & (0xFF >> (8 - bits % 8))]) + out[1:]
    return out


def _ek_parameters(ek: TPMTPublic) -> tuple[HashInfo, int]:
    """The EK's name hash and AES key size; refuses what is not a restricted decryption key."""
    attrs = ek.object_attributes
    wanted = TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
    if attrs & wanted != wanted:
        raise UnsupportedAlgorithm("the EK is not a restricted decryption key")
    params = ek.parameters
    if not isinstance(params, TPMSRSAParms | TPMSECCParms):
        raise UnsupportedAlgorithm("the EK is neither an RSA nor an ECC key")
    sym = params.symmetric
    if sym.algorithm != TPM_ALG_AES or sym.mode != TPM_ALG_CFB or sym.key_bits not in (128, 256):
        raise UnsupportedAlgorithm("the EK's symmetric algorithm is not AES-128/256-CFB")
    return hash_info(ek.name_alg, "the EK's nameAlg"), sym.key_bits


def _check_name(name: bytes) -> None:
    """An object name is a nameAlg then a digest of that size (a handle name has no key)."""
    info = HASH_ALGORITHMS.get(int.from_bytes(name[:2], "big")) if len(name) >= 2 else None
    if info is None:
        raise InvalidData("the AK name does not begin with a known hash algorithm id")
    if len(name) != 2 + info.digest_size:
        raise InvalidData(
            f"the AK name is {len(name)} bytes; a {info.name} name is {2 + info.digest_size}"
        )


def _aes_cfb(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), CFB(bytes(16)))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def _protect(info: HashInfo, sym_bits: int, seed: bytes, ak_name: bytes, secret: bytes) -> bytes:
    """TPM2B_ID_OBJECT: outer HMAC over the AES-CFB encrypted TPM2B credential and the name."""
    sym_key = kdfa(info, seed, _STORAGE, ak_name, b"", sym_bits)
    enc_identity = _aes_cfb(sym_key, tpm2b(secret), encrypt=True)
    hmac_key = kdfa(info, seed, _INTEGRITY, b"", b"", 8 * info.digest_size)
    integrity = hmac.digest(hmac_key, enc_identity + ak_name, info.name)
    return tpm2b(tpm2b(integrity) + enc_identity)


def make_credential(
    ek_public: TPMTPublic | bytes, ak_name: bytes, secret: bytes
) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) that only a
    TPM holding this EK and an object named ``ak_name`` can open; the secret is at most the
    size of the EK's name digest."""
    ek = TPMTPublic.parse(ek_public) if isinstance(ek_public, bytes) else ek_public
    info, sym_bits = _ek_parameters(ek)
    _check_name(ak_name)
    if not 0 < len(secret) <= info.digest_size:
        raise InvalidData(
            f"the secret is {len(secret)} bytes; this EK ({info.name}) takes 1 to "
            f"{info.digest_size}"
        )
    key = ek.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(info.digest_size)
        oaep = padding.OAEP(padding.MGF1(info.new()), info.new(), _IDENTITY)
        encrypted = key.encrypt(seed, oaep)
    else:
        ephemeral = ec.generate_private_key(key.curve)
        size = (key.curve.key_size + 7) // 8
        z = ephemeral.exchange(ec.ECDH(), key)
        point = ephemeral.public_key().public_numbers()
        ours = TPMSECCPoint(point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big"))
        assert isinstance(ek.unique, TPMSECCPoint)  # public_key() gave an EC key
        seed = kdfe(info, z, _IDENTITY, ours.x, ek.unique.x, 8 * info.digest_size)
        encrypted = ours.to_bytes()
    return _protect(info, sym_bits, seed, ak_name, secret), tpm2b(encrypted)


def activate_credential_with_key(
    ek_private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    ek_public: TPMTPublic | bytes,
    ak_name: bytes,
    credential_blob: bytes,
    encrypted_secret: bytes,
) -> bytes:
    """TPM2_ActivateCredential with a software EK: the secret, or AttestationError
    when the blob was not made for this EK and this AK name (or was changed)."""
    ek = TPMTPublic.parse(ek_public) if isinstance(ek_public, bytes) else ek_public
    info, sym_bits = _ek_parameters(ek)
    _check_name(ak_name)
    if ek_private.public_key() != ek.public_key():
        raise AttestationError("the private key is not the EK's")
    secret_data = parse_tpm2b(encrypted_secret, "TPM2B_ENCRYPTED_SECRET")
    if isinstance(ek_private, rsa.RSAPrivateKey):
        oaep = padding.OAEP(padding.MGF1(info.new()), info.new(), _IDENTITY)
        try:
            seed = ek_private.decrypt(secret_data, oaep)
        except ValueError as exc:
            raise AttestationError("the encrypted seed does not decrypt with this EK") from exc
    else:
        point = TPMSECCPoint.parse(secret_data)
        curve = ek_private.curve
        try:
            theirs = ec.EllipticCurvePublicNumbers(
                int.from_bytes(point.x, "big"), int.from_bytes(point.y, "big"), curve
            ).public_key()
        except ValueError as exc:
            raise AttestationError(f"the ephemeral point is not on {curve.name}") from exc
        z = ek_private.exchange(ec.ECDH(), theirs)
        assert isinstance(ek.unique, TPMSECCPoint)  # it matched the private EC key
        seed = kdfe(info, z, _IDENTITY, point.x, ek.unique.x, 8 * info.digest_size)
    return _unprotect(info, sym_bits, seed, ak_name, credential_blob)


def _unprotect(info: HashInfo, sym_bits: int, seed: bytes, ak_name: bytes, blob: bytes) -> bytes:
    id_object = parse_tpm2b(blob, "TPM2B_ID_OBJECT")
    if len(id_object) < 2:
        raise InvalidData("TPM2B_ID_OBJECT: truncated: no integrityHMAC size")
    hmac_size = int.from_bytes(id_object[:2], "big")
    integrity, enc_identity = id_object[2 : 2 + hmac_size], id_object[2 + hmac_size :]
    if len(integrity) != hmac_size:
        raise InvalidData("TPM2B_ID_OBJECT: truncated: the integrityHMAC is cut short")
    hmac_key = kdfa(info, seed, _INTEGRITY, b"", b"", 8 * info.digest_size)
    expected = hmac.digest(hmac_key, enc_identity + ak_name, info.name)
    if not hmac.compare_digest(expected, integrity):
        raise AttestationError(
            "the credential's integrity check failed: it was not made for this EK and this AK "
            "name, or it was changed"
        )
    sym_key = kdfa(info, seed, _STORAGE, ak_name, b"", sym_bits)
    plain = _aes_cfb(sym_key, enc_identity, encrypt=False)
    try:
        return parse_tpm2b(plain, "the decrypted credential", info.digest_size)
    except InvalidData as exc:
        raise AttestationError(f"the decrypted credential is malformed ({exc})") from exc


def credential_file(credential_blob: bytes, encrypted_secret: bytes) -> bytes:
    """The file ``tpm2_activatecredential -i`` reads (what ``tpm2_makecredential -o`` writes)."""
    return CREDENTIAL_FILE_MAGIC + credential_blob + encrypted_secret


def parse_credential_file(data: bytes) -> tuple[bytes, bytes]:
    """(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) from a tpm2-tools credential file."""
    if data[:8] != CREDENTIAL_FILE_MAGIC:
        raise InvalidData("not a tpm2-tools credential file: no badcc0de 00000001 header")
    if len(data) < 10:
        raise InvalidData("tpm2-tools credential file: truncated after the header")
    size = int.from_bytes(data[8:10], "big")
    blob, secret = data[8 : 10 + size], data[10 + size :]
    parse_tpm2b(blob, "TPM2B_ID_OBJECT")
    parse_tpm2b(secret, "TPM2B_ENCRYPTED_SECRET")
    return blob, secret
