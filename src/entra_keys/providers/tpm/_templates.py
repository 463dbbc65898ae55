"""tcg.model's facts as tpm2-pytss templates: the storage primary, created keys, the session key.

Built with the public API only (``TPM2B_PUBLIC.parse`` and field assignment). The storage
primary is the TCG TSS2 key-file parent (ECC P-256 or RSA-2048, AES-128-CFB, empty unique), so
the same TPM recreates the same storage key and key files made under it keep loading.
"""

from __future__ import annotations

from typing import Any

from ...tcg import model
from ...tcg.model import KeyType, KeyUsage
from ...tcg.wire import TPMA_OBJECT

__all__ = [
    "key_template",
    "session_key_template",
    "srk_mismatch",
    "storage_template",
    "without_unique",
]


def storage_template(tss: Any, *, ecc: bool) -> Any:
    """The TPM2B_PUBLIC of the storage primary: ECC P-256 where the TPM has ECC, else RSA-2048."""
    return tss.TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb" if ecc else "rsa2048:aes128cfb",
        nameAlg=model.NAME_ALG,
        objectAttributes=int(model.SRK_ATTRIBUTES),
    )


def without_unique(area: Any) -> bytes:
    """A TPMT_PUBLIC marshaled without its unique field (the key itself)."""
    raw = bytes(area.marshal())
    copy = type(area).unmarshal(raw)[0]
    copy.unique = type(copy.unique)()
    return bytes(copy.marshal())


def srk_mismatch(tss: Any, public: Any) -> str | None:
    """None where a TPM2B_PUBLIC is a standard storage key (RSA-2048 or ECC P-256 restricted
    decryption, AES-128-CFB, SHA-256, the SRK attributes noDA included), else what is wrong.

    fixedTPM, fixedParent and sensitiveDataOrigin say the TPM made the private half and it never
    left (TPM2_Import and TPM2_Duplicate need them clear), so nobody knows it: a session salted
    to the key is safe. noDA makes a parent authorization that fails (an object made with an
    authValue, which ReadPublic cannot show) cost no dictionary-attack try. The unique field is
    the key itself and is not compared.
    """
    area = public.publicArea
    shape = _storage_shape(area)
    if any(shape == _storage_shape(storage_template(tss, ecc=e).publicArea) for e in (True, False)):
        return None
    attrs = int(area.objectAttributes)
    no_da = _storage_shape(area, no_da=True)
    if any(no_da == _storage_shape(storage_template(tss, ecc=e).publicArea) for e in (True, False)):
        return (
            f"attributes 0x{attrs:08x}: noDA clear, so each use with an authorization value "
            "other than the standard SRK's empty one would spend a dictionary-attack try"
        )
    if ~attrs & int(
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    ):
        return (
            f"attributes 0x{attrs:08x}: not a key the TPM made and keeps (fixedTPM, fixedParent, "
            "sensitiveDataOrigin), so its private half may be known outside it"
        )
    return (
        f"type 0x{int(area.type):04x}, attributes 0x{attrs:08x}: not the standard SRK template "
        "(RSA-2048 or ECC P-256 restricted decryption, AES-128-CFB, SHA-256)"
    )


def _storage_shape(area: Any, *, no_da: bool = False) -> bytes:
    """A TPMT_PUBLIC without its unique field (with ``no_da``, noDA set): what a storage key is
    compared by."""
    copy = type(area).unmarshal(without_unique(area))[0]
    if no_da:
        copy.objectAttributes = int(copy.objectAttributes) | int(TPMA_OBJECT.NODA)
    return bytes(copy.marshal())


def key_template(tss: Any, key_type: KeyType, usage: KeyUsage, *, pin: bool) -> Any:
    """The TPM2B_PUBLIC of a device, transport or attestation key (``model.key_attributes``).

    A signing or decryption key is no storage parent (no symmetric algorithm) and picks its
    scheme per operation (NULL); an AK is restricted to the TPM's own scheme.
    """
    attrs = model.key_attributes(usage, pin=pin)
    template = tss.TPM2B_PUBLIC.parse(
        f"{key_type.value}:null", nameAlg=model.NAME_ALG, objectAttributes=int(attrs)
    )
    details = template.publicArea.parameters.asymDetail
    details.symmetric.algorithm = tss.TPM2_ALG.NULL
    if usage is KeyUsage.ATTEST:
        sig_alg, hash_alg = model.ak_signature_scheme(key_type)
        details.scheme.scheme = sig_alg
        details.scheme.details.anySig.hashAlg = hash_alg
    return template


def session_key_template(tss: Any) -> Any:
    """The TPM2B_PUBLIC of the PRT session key: keyed-hash HMAC-SHA256 with caller-given bytes."""
    public = tss.TPMT_PUBLIC(type=tss.TPM2_ALG.KEYEDHASH, nameAlg=model.NAME_ALG)
    public.objectAttributes = int(model.SESSION_KEY_ATTRIBUTES)
    scheme = public.parameters.keyedHashDetail.scheme
    scheme.scheme = model.SESSION_KEY_SCHEME
    scheme.details.hmac.hashAlg = model.SESSION_KEY_HASH
    return tss.TPM2B_PUBLIC(publicArea=public)
