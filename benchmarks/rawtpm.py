"""The raw baseline: tpm2-pytss ESAPI used directly, with nothing of entra_keys in the loop.

Keys are made with the same template the TPM provider uses (fixedTPM, fixedParent,
sensitiveDataOrigin, userWithAuth, noDA, sign or decrypt, scheme null), under an ECC P-256 storage
primary. ``load`` flushes the primary once the key is in, so that a loaded raw key takes one of
the swtpm's three object slots and the TPM provider (storage key and one key) the other two.
"""

from __future__ import annotations

import os
from typing import Any

from entra_keys import KeyType, KeyUsage

__all__ = ["RawTPM", "pytss"]

_PRIMARY = "ecc256:aes128cfb"
_PRIMARY_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
_KEY_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"


def pytss() -> Any:
    """The tpm2_pytss module, with libtss2's own error logging off (as the provider does)."""
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    import tpm2_pytss

    return tpm2_pytss


class RawTPM:
    """One bare ESAPI connection; everything it loads is flushed on ``close``."""

    def __init__(self, tcti: str) -> None:
        self.t = pytss()
        self.esys = self.t.ESAPI(tcti)
        self._loaded: list[Any] = []

    def __enter__(self) -> RawTPM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def primary(self) -> Any:
        """A fresh ECC P-256 storage primary in the owner hierarchy (flushed on close)."""
        t = self.t
        template = t.TPM2B_PUBLIC.parse(_PRIMARY, objectAttributes=_PRIMARY_ATTRS)
        handle, _, _, _, _ = self.esys.create_primary(
            t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER
        )
        self._loaded.append(handle)
        return handle

    def template(self, key_type: KeyType, usage: KeyUsage) -> Any:
        """The TPM provider's template for a signing or decryption key."""
        t = self.t
        role = "decrypt" if usage is KeyUsage.DECRYPT else "sign"
        template = t.TPM2B_PUBLIC.parse(
            f"{key_type.value}:null",
            nameAlg=t.TPM2_ALG.SHA256,
            objectAttributes=f"{_KEY_ATTRS}|{role}",
        )
        template.publicArea.parameters.asymDetail.symmetric.algorithm = t.TPM2_ALG.NULL
        return template

    def create(self, parent: Any, key_type: KeyType, usage: KeyUsage) -> tuple[Any, Any]:
        """TPM2_Create under ``parent``: the key's (private, public) blobs."""
        private, public, _, _, _ = self.esys.create(
            parent, self.t.TPM2B_SENSITIVE_CREATE(), self.template(key_type, usage)
        )
        return private, public

    def load(self, private: Any, public: Any) -> Any:
        """Load a key under a fresh primary, then flush the primary: one object slot used."""
        parent = self.primary()
        try:
            handle = self.esys.load(parent, private, public)
        finally:
            self.flush(parent)
        self._loaded.append(handle)
        return handle

    def salted_session(self, *, command: bool, response: bool) -> Any:
        """A continued HMAC session salted to a primary (flushed after), AES-128-CFB parameter
        encryption of the first command and/or response parameter; flushed on close."""
        t = self.t
        salt_key = self.primary()
        try:
            session = self.esys.start_auth_session(
                tpm_key=salt_key,
                bind=t.ESYS_TR.NONE,
                session_type=t.TPM2_SE.HMAC,
                symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"),
                auth_hash=t.TPM2_ALG.SHA256,
            )
        finally:
            self.flush(salt_key)
        attributes = t.TPMA_SESSION.CONTINUESESSION
        if command:
            attributes |= t.TPMA_SESSION.DECRYPT
        if response:
            attributes |= t.TPMA_SESSION.ENCRYPT
        self.esys.trsess_set_attributes(session, attributes)
        self._loaded.append(session)
        return session

    def sign_args(self, key_type: KeyType, digest: bytes) -> tuple[Any, Any, Any]:
        """(TPM2B_DIGEST, TPMT_SIG_SCHEME, null ticket) for ECDSA or RSASSA with SHA-256."""
        t = self.t
        scheme = t.TPMT_SIG_SCHEME(
            scheme=t.TPM2_ALG.RSASSA if key_type.is_rsa else t.TPM2_ALG.ECDSA
        )
        scheme.details.any.hashAlg = t.TPM2_ALG.SHA256
        ticket = t.TPMT_TK_HASHCHECK(tag=t.TPM2_ST.HASHCHECK, hierarchy=t.TPM2_RH.NULL)
        return t.TPM2B_DIGEST(digest), scheme, ticket

    def flush(self, handle: Any) -> None:
        """Flush one object or session now."""
        self.esys.flush_context(handle)
        if handle in self._loaded:
            self._loaded.remove(handle)

    def close(self) -> None:
        """Flush what is still loaded and close the connection."""
        try:
            while self._loaded:
                self.flush(self._loaded[-1])
        finally:
            self.esys.close()
