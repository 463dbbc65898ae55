"""tcg.model's facts as tpm2-pytss templates: the storage primary, created keys, the session key.

Built with the public API only (``TPM2B_PUBLIC.parse`` and field assignment). The storage
primary is the TCG TSS2 key-file parent (ECC P-256 or RSA-2048, AES-128-CFB, empty unique), so
the same TPM recreates the same storage key and key files made under it keep loading.
"""

from __future__ import annotations

from typing import Any

from ...tcg import model
from ...tcg.model import KeyType, KeyUsage

__all__ = ["key_template", "session_key_template", "storage_template"]


def storage_template(tss: Any, *, ecc: bool) -> Any:
    """The TPM2B_PUBLIC of the storage primary: ECC P-256 where the TPM has ECC, else RSA-2048."""
    return tss.TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb" if ecc else "rsa2048:aes128cfb",
        nameAlg=model.NAME_ALG,
        objectAttributes=int(model.SRK_ATTRIBUTES),
    )


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
