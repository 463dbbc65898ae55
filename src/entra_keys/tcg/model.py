"""What a TPM key looks like: the one pure-Python home of the facts both providers share.

The TPM provider builds its templates from these facts; the software provider and its
attestation (``providers.software_attest``) build the same TPMT_PUBLIC areas from them, so that a
software key looks exactly like a TPM key except for ``hardware_backed``; the key store reads key
files by the PEM labels here; the verifier checks EKs against them. Nothing here needs
tpm2-pytss: the wire constants (TPMA_OBJECT, TPM_ALG_*) come from ``tcg.wire``.

Sources: TPM 2.0 Library Part 2 (TPMA_OBJECT 8.3, handles 7.4, TPM_RC_SIZE for qualifying data),
TCG EK Credential Profile 2.0 (EK templates B.3 and the NV indices of EK certificates), TCG TPM
v2.0 Provisioning Guidance (storage root key), TCG TSS 2.0 key files ("TSS2 PRIVATE KEY").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import InvalidData, UnsupportedAlgorithm
from .wire import (  # the constants only: no parsers on the import path
    TPM_ALG_ECDSA,
    TPM_ALG_HMAC,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPMA_OBJECT,
)

__all__ = [
    "AK_HASH",
    "EK_ATTRIBUTES_HIGH",
    "EK_ATTRIBUTES_LOW",
    "EK_CERT_NV_ECC",
    "EK_CERT_NV_INDICES",
    "EK_CERT_NV_RSA",
    "EK_PERSISTENT_FIRST",
    "EK_PERSISTENT_LAST",
    "EK_POLICY_HIGH_SHA384",
    "EK_POLICY_LOW",
    "ENCRYPTED_PEM_LABELS",
    "KEY_BASE_ATTRIBUTES",
    "KIND_BY_PEM_LABEL",
    "MAX_NONCE",
    "MIN_NONCE",
    "NAME_ALG",
    "PCR_BANKS",
    "PCR_COUNT",
    "PEM_LABELS",
    "PEM_LABEL_ENCRYPTED_SESSION_KEY",
    "PEM_LABEL_ENCRYPTED_SOFTWARE_KEY",
    "PEM_LABEL_SESSION_KEY",
    "PEM_LABEL_SOFTWARE_KEY",
    "PEM_LABEL_TPM_KEY",
    "SESSION_KEY_ATTRIBUTES",
    "SESSION_KEY_HASH",
    "SESSION_KEY_SCHEME",
    "SRK_ATTRIBUTES",
    "SRK_HANDLE_ECC",
    "SRK_HANDLE_RSA",
    "TPM_RH_OWNER",
    "KeyType",
    "KeyUsage",
    "ak_signature_scheme",
    "check_pcr_bank",
    "check_pcr_indices",
    "key_attributes",
    "origin_attributes",
]


# --- what keys are ---------------------------------------------------------------------------


class KeyType(enum.Enum):
    """The key types entra_keys creates: RSA 2048/3072 and NIST P-256/P-384."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    ECC256 = "ecc256"
    ECC384 = "ecc384"
    #: The PRT session key (imported, never created): HMAC-SHA256 with a 32-byte key.
    HMAC_SHA256 = "hmac-sha256"

    @classmethod
    def asymmetric(cls) -> tuple[KeyType, ...]:
        """The key types ``create_key`` makes (all but the session key's)."""
        return tuple(t for t in cls if t is not cls.HMAC_SHA256)

    @property
    def is_rsa(self) -> bool:
        """True for the RSA types."""
        return self in (KeyType.RSA2048, KeyType.RSA3072)

    @property
    def bits(self) -> int:
        """The RSA modulus size or the curve size in bits."""
        return _BITS[self]

    @property
    def curve(self) -> ec.EllipticCurve:
        """The curve of an ECC type; UnsupportedAlgorithm for RSA."""
        if self is KeyType.ECC256:
            return ec.SECP256R1()
        if self is KeyType.ECC384:
            return ec.SECP384R1()
        raise UnsupportedAlgorithm(f"{self.value} is not an elliptic-curve key type")

    @classmethod
    def of(cls, key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> KeyType:
        """The type of a public key; UnsupportedAlgorithm for sizes and curves not offered."""
        if isinstance(key, rsa.RSAPublicKey):
            found = {2048: cls.RSA2048, 3072: cls.RSA3072}.get(key.key_size)
            if found is not None and key.public_numbers().e == 65537:
                return found
            raise UnsupportedAlgorithm(f"RSA-{key.key_size} with e={key.public_numbers().e}")
        if isinstance(key, ec.EllipticCurvePublicKey):
            found = {"secp256r1": cls.ECC256, "secp384r1": cls.ECC384}.get(key.curve.name)
            if found is not None:
                return found
            raise UnsupportedAlgorithm(f"curve {key.curve.name}")
        raise UnsupportedAlgorithm(f"key type {type(key).__name__}")


_BITS = {
    KeyType.RSA2048: 2048,
    KeyType.RSA3072: 3072,
    KeyType.ECC256: 256,
    KeyType.ECC384: 384,
    KeyType.HMAC_SHA256: 256,
}


class KeyUsage(enum.Enum):
    """What a key is for: a device key signs, a transport key decrypts, an AK attests."""

    SIGN = "sign"
    DECRYPT = "decrypt"
    #: The PRT session key: an HMAC-SHA256 key that only derives per-request keys.
    DERIVE = "derive"
    #: A restricted signing key (attestation key): it signs only what the TPM itself produced
    #: (quotes, key certifications), never caller-given data.
    ATTEST = "attest"


# --- nonces ----------------------------------------------------------------------------------

#: The largest qualifying data (nonce) a TPM takes: its largest digest (SHA-256 here); a longer
#: one fails with TPM_RC_SIZE.
MAX_NONCE = 32
#: The shortest nonce both providers take (the verifier's own minimum, too).
MIN_NONCE = 8


# --- handles ---------------------------------------------------------------------------------

#: TPM_RH_OWNER, the storage (owner) hierarchy: the parent of the storage root key, and the
#: hierarchy whose handle starts a key's qualified name (Part 2, 7.4).
TPM_RH_OWNER = 0x40000001
#: Where a provisioned RSA storage root key lives (TCG Provisioning Guidance).
SRK_HANDLE_RSA = 0x81000001
#: Where a provisioned ECC storage root key lives (TCG Provisioning Guidance).
SRK_HANDLE_ECC = 0x81000002


# --- keys under the storage key --------------------------------------------------------------

#: The nameAlg of every key entra_keys creates or imports (and of the software keys' areas).
NAME_ALG = TPM_ALG_SHA256

#: Every created key (device, transport, AK): made in the TPM and bound to it and to its parent
#: (fixedTPM, fixedParent, sensitiveDataOrigin), used with its auth value (userWithAuth).
KEY_BASE_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)

#: The storage root key: a restricted decryption key made in the TPM, noDA (Provisioning
#: Guidance; AES-128-CFB, RSA-2048 or P-256 with zero unique).
SRK_ATTRIBUTES = (
    KEY_BASE_ATTRIBUTES | TPMA_OBJECT.NODA | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
)

#: The hash of an AK's signing scheme (RSASSA-SHA256 or ECDSA-SHA256).
AK_HASH = TPM_ALG_SHA256


def key_attributes(usage: KeyUsage, *, pin: bool = False) -> TPMA_OBJECT:
    """objectAttributes of a created key of this use: the base attributes, then sign (device
    key), decrypt (transport key, unrestricted) or sign|restricted (AK), and noDA unless a PIN
    guards the key (a wrong PIN then counts toward dictionary-attack lockout).
    UnsupportedAlgorithm for the session key, which is imported with its own attributes
    (``SESSION_KEY_ATTRIBUTES``)."""
    attrs = KEY_BASE_ATTRIBUTES if pin else KEY_BASE_ATTRIBUTES | TPMA_OBJECT.NODA
    if usage is KeyUsage.DECRYPT:
        return attrs | TPMA_OBJECT.DECRYPT
    if usage is KeyUsage.SIGN:
        return attrs | TPMA_OBJECT.SIGN_ENCRYPT
    if usage is KeyUsage.ATTEST:
        return attrs | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED
    raise UnsupportedAlgorithm(f"a {usage.value} key has no asymmetric TPMT_PUBLIC")


def ak_signature_scheme(key_type: KeyType) -> tuple[int, int]:
    """(TPM_ALG_ID of the signature, of its hash) of an AK of this type: RSASSA-SHA256 for RSA,
    ECDSA-SHA256 for ECC. Other keys have the NULL scheme (chosen per signature)."""
    return (TPM_ALG_RSASSA if key_type.is_rsa else TPM_ALG_ECDSA), AK_HASH


def origin_attributes(usage: KeyUsage) -> TPMA_OBJECT:
    """The attributes that make a key "made in this TPM": fixedTPM and fixedParent (TPM2_Import
    refuses them, and a TPM refuses them under a parent without them), and sensitiveDataOrigin
    (the TPM made the secret) for every key but the session key, imported by design."""
    made = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    if usage is not KeyUsage.DERIVE:
        made |= TPMA_OBJECT.SENSITIVEDATAORIGIN
    return made


# --- the PRT session key (a keyed-hash object) -----------------------------------------------

#: The session key: a keyed-hash object with caller-given key bytes (sensitiveDataOrigin clear),
#: bound to the TPM and the storage key, signing (HMAC) with its auth value, noDA.
SESSION_KEY_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.SIGN_ENCRYPT
)
#: The session key's keyed-hash scheme: HMAC.
SESSION_KEY_SCHEME = TPM_ALG_HMAC
#: The session key's HMAC hash (and nameAlg): SHA-256.
SESSION_KEY_HASH = TPM_ALG_SHA256


# --- endorsement keys (TCG EK Credential Profile 2.0) ----------------------------------------

#: The low-range EK templates' attributes (L-1 RSA-2048, L-2 P-256): fixedTPM|fixedParent|
#: sensitiveDataOrigin|adminWithPolicy|restricted|decrypt, 0x000300B2.
EK_ATTRIBUTES_LOW = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.ADMINWITHPOLICY
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)
#: The high-range EK templates' attributes (H-1..): the low range's, with userWithAuth.
EK_ATTRIBUTES_HIGH = EK_ATTRIBUTES_LOW | TPMA_OBJECT.USERWITHAUTH
#: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the low-range EK templates' authPolicy.
EK_POLICY_LOW = bytes.fromhex("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA")
#: The SHA-384 policy of the high-range EK templates (EK Credential Profile 2.0, H-3..).
EK_POLICY_HIGH_SHA384 = bytes.fromhex(
    "B26E7D28D11A50BC53D882BCF5FD3A1A074148BB35D3B4E4CB1C0AD9BDE419CA"
    "CB47BA09699646150F9FC000F3F80E12"
)
#: The first persistent handle of the endorsement range (the RSA EK's, 0x81010001, is inside).
EK_PERSISTENT_FIRST = 0x81010000
#: The last persistent handle of the endorsement range.
EK_PERSISTENT_LAST = 0x8101FFFF
#: The NV index of the RSA-2048 EK certificate (low range).
EK_CERT_NV_RSA = 0x01C00002
#: The NV index of the P-256 EK certificate (low range).
EK_CERT_NV_ECC = 0x01C0000A
#: Every NV index an EK certificate may sit at: the low range's RSA and ECC, then the high range
#: (RSA 2048/3072/4096, ECC P-256/P-384/P-521, ...: 0x01C00012 to 0x01C0001E, even).
EK_CERT_NV_INDICES = frozenset({EK_CERT_NV_RSA, EK_CERT_NV_ECC, *range(0x01C00012, 0x01C00020, 2)})


# --- PCRs ------------------------------------------------------------------------------------

#: The PCRs a quote may select: 0..23 (the PC Client platform's 24).
PCR_COUNT = 24
#: The PCR banks a quote may read, by hash name.
PCR_BANKS = ("sha1", "sha256", "sha384", "sha512")


def check_pcr_indices(pcrs: Sequence[int]) -> None:
    """Refuse, in both providers, an empty PCR list, a repeated PCR or one outside 0..23."""
    if not pcrs or any(not 0 <= p < PCR_COUNT for p in pcrs) or len(set(pcrs)) != len(pcrs):
        raise InvalidData(f"PCR indices must be distinct and 0..23, not {list(pcrs)}")


def check_pcr_bank(bank: str) -> None:
    """Refuse, in both providers, a PCR bank that is not one of ``PCR_BANKS``."""
    if bank not in PCR_BANKS:
        raise UnsupportedAlgorithm(f"PCR bank {bank!r}")


# --- key files -------------------------------------------------------------------------------

#: A TPM key file (TCG TSS 2.0 key file, also the TPM session key's): only that TPM loads it.
PEM_LABEL_TPM_KEY = "TSS2 PRIVATE KEY"
#: A software key in PKCS#8, unencrypted.
PEM_LABEL_SOFTWARE_KEY = "PRIVATE KEY"
#: A software key in PKCS#8, encrypted with a passphrase.
PEM_LABEL_ENCRYPTED_SOFTWARE_KEY = "ENCRYPTED PRIVATE KEY"
#: The software session key, unencrypted.
PEM_LABEL_SESSION_KEY = "ENTRA SESSION KEY"
#: The software session key, sealed with a passphrase.
PEM_LABEL_ENCRYPTED_SESSION_KEY = "ENTRA ENCRYPTED SESSION KEY"

#: The PEM labels of the key files each provider kind writes and reads.
PEM_LABELS: Mapping[str, frozenset[str]] = {
    "tpm": frozenset({PEM_LABEL_TPM_KEY}),
    "software": frozenset(
        {
            PEM_LABEL_SOFTWARE_KEY,
            PEM_LABEL_ENCRYPTED_SOFTWARE_KEY,
            PEM_LABEL_SESSION_KEY,
            PEM_LABEL_ENCRYPTED_SESSION_KEY,
        }
    ),
}
#: The provider kind of each key file label (the key store reads a file's kind from its label).
KIND_BY_PEM_LABEL: Mapping[str, str] = {
    label: kind for kind, labels in PEM_LABELS.items() for label in labels
}
#: The labels of passphrase-encrypted key files.
ENCRYPTED_PEM_LABELS = frozenset(
    {PEM_LABEL_ENCRYPTED_SOFTWARE_KEY, PEM_LABEL_ENCRYPTED_SESSION_KEY}
)
