"""Signing throughput, ECC P-256 and RSA-2048: entra_keys against the raw baselines of one run.

In the TPM: raw tpm2-pytss ``esys.sign`` on a loaded key with prebuilt arguments (the limit),
the TPM provider with ``key.loaded()`` held (the documented way to sign many times) and without
it (the connection's key cache keeps the key loaded), and raw ESAPI in a salted session that
encrypts the digest. In software: pyca ``cryptography`` against the software provider, on the
same key. All contenders of a key type run their rounds in turn (see ``measure.interleave``).
The TPM contenders also report this process's CPU time per signature (``client_cpu_us``): the
Python work on the path, which other processes' load blurs far less than the rates."""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable
from contextlib import ExitStack

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import KeyType, KeyUsage, open_provider

from .context import MESSAGE, Context
from .measure import NOT_APPLICABLE, Case, Contender, Result, Target, interleave, timed_loop

__all__ = ["CASES", "CLIENT_CPU", "NAMES", "signer"]

#: The extra figure of the TPM contenders: this process's CPU µs per signature (median of the
#: rounds). Python work on the path shows here even when other load makes the rates noisy.
CLIENT_CPU = "client_cpu_us"

#: How the tables name the key types.
NAMES = {KeyType.ECC256: "ECC P-256", KeyType.RSA2048: "RSA-2048"}

_NO_SIGN_ENCRYPTION = (
    "entra_keys signs in a password session: nothing secret crosses the TPM interface in a "
    "signature. It encrypts parameters for RSA decryption (see the decryption case), for "
    "creating a key with a PIN and for the session-key import; when signing gains it, "
    "measure it here"
)


def signer(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Callable[[], bytes]:
    """One signature of ``MESSAGE``: RSASSA-PKCS1-v1_5 or ECDSA with SHA-256, arguments prebuilt."""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key, pad, algorithm = key, padding.PKCS1v15(), hashes.SHA256()
        return lambda: rsa_key.sign(MESSAGE, pad, algorithm)
    ecdsa = ec.ECDSA(hashes.SHA256())
    return lambda: key.sign(MESSAGE, ecdsa)


def _verify(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, signature: bytes) -> None:
    """Raise InvalidSignature unless the signature is good: contenders must do real work."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


def _ids(key_type: KeyType) -> dict[str, str]:
    kt = key_type.value
    names = ("esapi", "tpm", "tpm_unpinned", "crypto", "software", "esapi_encrypted")
    return {name: f"sign.{kt}.{name}" for name in (*names, "tpm_encrypted")}


def _signing_case(key_type: KeyType) -> Case:
    name = NAMES[key_type]
    ids = _ids(key_type)
    group = f"Signing, {name}"
    encrypted_group = f"Signing, {name}, parameter encryption"

    def run(ctx: Context) -> list[Result]:
        crypto_key = ctx.software_key(key_type)
        software_key = open_provider("software").key_from_pem(
            ctx.software_pem(key_type), KeyUsage.SIGN
        )
        with ExitStack() as stack:
            provider = ctx.tpm_provider()
            stack.callback(provider.close)
            tpm_key = ctx.tpm_key(provider, key_type, KeyUsage.SIGN)
            raw = stack.enter_context(ctx.raw_tpm())
            handle = raw.load(*ctx.raw_blobs(raw, key_type, KeyUsage.SIGN))
            session = raw.salted_session(command=True, response=False)
            digest, scheme, ticket = raw.sign_args(key_type, hashlib.sha256(MESSAGE).digest())
            esys = raw.esys

            def raw_sign() -> object:
                return esys.sign(handle, digest, scheme, ticket)

            def raw_sign_encrypted() -> object:
                return esys.sign(handle, digest, scheme, ticket, session1=session)

            for key in (tpm_key, software_key):
                _verify(key, signer(key)())
            cpu: dict[str, list[float]] = {ids[n]: [] for n in ("esapi", "tpm", "tpm_unpinned")}
            contenders = [
                Contender(
                    ids["esapi"],
                    "raw tpm2-pytss ESAPI sign, key loaded (limit)",
                    timed_loop(raw_sign, cpu=cpu[ids["esapi"]]),
                ),
                Contender(
                    ids["tpm"],
                    "entra_keys TPM provider, key.loaded() held",
                    timed_loop(signer(tpm_key), tpm_key.loaded, cpu=cpu[ids["tpm"]]),
                    baseline=ids["esapi"],
                ),
                Contender(
                    ids["tpm_unpinned"],
                    "entra_keys TPM provider, unpinned (key cache)",
                    timed_loop(signer(tpm_key), cpu=cpu[ids["tpm_unpinned"]]),
                    baseline=ids["esapi"],
                ),
                Contender(
                    ids["crypto"], "raw cryptography (baseline)", timed_loop(signer(crypto_key))
                ),
                Contender(
                    ids["software"],
                    "entra_keys software provider",
                    timed_loop(signer(software_key)),
                    baseline=ids["crypto"],
                ),
                Contender(
                    ids["esapi_encrypted"],
                    "raw ESAPI sign, salted session encrypting the digest",
                    timed_loop(raw_sign_encrypted),
                    baseline=ids["esapi"],
                    note="TPM2_Sign's response (a TPMT_SIGNATURE) is not a TPM2B: only the "
                    "command's digest can be encrypted",
                ),
            ]
            results = interleave(ctx, group, contenders)
        rounds = ctx.settings.rounds
        for result in results:
            if result.id == ids["esapi_encrypted"]:
                result.group = encrypted_group
            if result.id in cpu:  # the measured rounds come last, after the warm-up runs
                result.extra[CLIENT_CPU] = statistics.median(cpu[result.id][-rounds:]) * 1e6
        results.append(
            Result(
                id=ids["tpm_encrypted"],
                group=encrypted_group,
                label="entra_keys TPM provider, parameter encryption",
                unit="/s",
                status=NOT_APPLICABLE,
                baseline=ids["esapi_encrypted"],
                note=_NO_SIGN_ENCRYPTION,
            )
        )
        return results

    return Case(
        id=f"sign-{key_type.value}",
        title=f"signing, {name}",
        figures=tuple(ids.values()),
        run=run,
        targets=(
            Target(
                f"TPM signing {name}: entra_keys / raw ESAPI",
                ids["tpm"],
                over=ids["esapi"],
                at_least=0.95,
            ),
            Target(
                f"software signing {name}: entra_keys / raw cryptography",
                ids["software"],
                over=ids["crypto"],
                at_least=0.90,
            ),
            Target(
                f"TPM signing {name}: unpinned entra_keys / raw ESAPI",
                ids["tpm_unpinned"],
                over=ids["esapi"],
                at_least=0.95,
            ),
            *(
                Target(
                    f"TPM signing {name}: client CPU per signature, {what} (µs)",
                    ids[contender],
                    field=CLIENT_CPU,
                )
                for contender, what in (
                    ("esapi", "raw ESAPI"),
                    ("tpm", "pinned"),
                    ("tpm_unpinned", "unpinned"),
                )
            ),
            Target(
                f"TPM signing {name}: raw ESAPI encrypted / plain",
                ids["esapi_encrypted"],
                over=ids["esapi"],
            ),
            Target(
                f"TPM signing {name}, parameter encryption: entra_keys / raw ESAPI",
                ids["tpm_encrypted"],
                over=ids["esapi_encrypted"],
                at_least=0.95,
            ),
        ),
    )


CASES = (_signing_case(KeyType.ECC256), _signing_case(KeyType.RSA2048))
