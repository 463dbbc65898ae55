"""RSA-OAEP decryption with the transport key: where entra_keys uses parameter encryption.

The TPM provider decrypts in a salted HMAC session that encrypts the ciphertext going in and the
plaintext coming out. The raw baselines: ESAPI ``rsa_decrypt`` in a password session, and in one
continued salted session with the same encryption. OAEP with SHA-1, as Entra encrypts the PRT
session key; the software side compares the software provider with pyca ``cryptography``.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from entra_keys import KeyType, KeyUsage, open_provider

from .context import Context
from .measure import Case, Contender, Result, Target, interleave, timed_loop

__all__ = ["CASES"]

_SHA1 = hashes.SHA1()  # what Entra encrypts the session key with
_OAEP = padding.OAEP(padding.MGF1(_SHA1), _SHA1, None)
_PREFIX = "decrypt.rsa2048"
_IDS = {n: f"{_PREFIX}.{n}" for n in ("esapi", "esapi_encrypted", "tpm", "crypto", "software")}


def _encrypt(public: rsa.RSAPublicKey, secret: bytes) -> bytes:
    return public.encrypt(secret, _OAEP)


def _run(ctx: Context) -> list[Result]:
    secret = os.urandom(32)
    crypto_key = ctx.software_key(KeyType.RSA2048)
    assert isinstance(crypto_key, rsa.RSAPrivateKey)
    software_key = open_provider("software").key_from_pem(
        ctx.software_pem(KeyType.RSA2048), KeyUsage.DECRYPT
    )
    assert isinstance(software_key, rsa.RSAPrivateKey)
    soft_ct = _encrypt(crypto_key.public_key(), secret)
    with ExitStack() as stack:
        provider = ctx.tpm_provider()
        stack.callback(provider.close)
        tpm_key = ctx.tpm_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(tpm_key, rsa.RSAPrivateKey)
        tpm_ct = _encrypt(tpm_key.public_key(), secret)
        raw = stack.enter_context(ctx.raw_tpm())
        private, public = ctx.raw_blobs(raw, KeyType.RSA2048, KeyUsage.DECRYPT)
        handle = raw.load(private, public)
        session = raw.salted_session(command=True, response=True)
        t, esys = raw.t, raw.esys
        raw_public = rsa.RSAPublicNumbers(
            65537, int.from_bytes(bytes(public.publicArea.unique.rsa), "big")
        ).public_key()
        raw_ct = t.TPM2B_PUBLIC_KEY_RSA(_encrypt(raw_public, secret))
        scheme = t.TPMT_RSA_DECRYPT(scheme=t.TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = t.TPM2_ALG.SHA1
        label = t.TPM2B_DATA()

        def raw_decrypt() -> bytes:
            return bytes(esys.rsa_decrypt(handle, raw_ct, scheme, label))

        def raw_decrypt_encrypted() -> bytes:
            return bytes(esys.rsa_decrypt(handle, raw_ct, scheme, label, session1=session))

        def library() -> bytes:
            return tpm_key.decrypt(tpm_ct, _OAEP)

        def software() -> bytes:
            return software_key.decrypt(soft_ct, _OAEP)

        def plain_crypto() -> bytes:
            return crypto_key.decrypt(soft_ct, _OAEP)

        for op in (raw_decrypt, raw_decrypt_encrypted, library, software, plain_crypto):
            if op() != secret:
                raise RuntimeError(f"{op.__name__} did not recover the secret")
        contenders = [
            Contender(
                _IDS["esapi"], "raw ESAPI rsa_decrypt, password session", timed_loop(raw_decrypt)
            ),
            Contender(
                _IDS["esapi_encrypted"],
                "raw ESAPI, one salted session, both ways encrypted",
                timed_loop(raw_decrypt_encrypted),
                baseline=_IDS["esapi"],
            ),
            Contender(
                _IDS["tpm"],
                "entra_keys TPM provider, key.loaded() held",
                timed_loop(library, tpm_key.loaded),
                baseline=_IDS["esapi_encrypted"],
                note="one continued salted session, kept by the provider across calls",
            ),
            Contender(_IDS["crypto"], "raw cryptography (baseline)", timed_loop(plain_crypto)),
            Contender(
                _IDS["software"],
                "entra_keys software provider",
                timed_loop(software),
                baseline=_IDS["crypto"],
            ),
        ]
        return interleave(
            ctx, "Decryption, RSA-2048 OAEP (transport key), parameter encryption", contenders
        )


CASES = (
    Case(
        id="decrypt-rsa2048",
        title="decryption, RSA-2048 OAEP",
        figures=tuple(_IDS.values()),
        run=_run,
        targets=(
            Target(
                "TPM decryption: entra_keys (encrypted) / raw ESAPI encrypted",
                _IDS["tpm"],
                over=_IDS["esapi_encrypted"],
                at_least=0.95,
            ),
            Target(
                "TPM decryption: raw ESAPI encrypted / plain",
                _IDS["esapi_encrypted"],
                over=_IDS["esapi"],
            ),
            Target(
                "software decryption: entra_keys / raw cryptography",
                _IDS["software"],
                over=_IDS["crypto"],
            ),
        ),
    ),
)
