"""Quotes, key certifications, their verification, and session-key derivation.

Quote and certification throughput are reported for the TPM and software providers (the AK
pinned with ``loaded()``). Verification runs in this one process, so its rate is per core, for
RSA-2048 and P-256 AKs, against its bare baseline in the same rounds: ``cryptography`` verifying
the same signature over the same TPMS_ATTEST bytes with the AK's public key, which is the least
any verifier does. ``VerifierPool`` is measured with 1 and 2 worker processes (the quotes sent
in batches). The derivation case has a raw baseline: TPM2_HMAC in a loop on a bare ESAPI
connection with a keyed-hash object loaded, against ``derive_key`` on a pinned session key.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import KeyType, KeyUsage, open_provider
from entra_keys.attestation.pool import VerifierPool
from entra_keys.attestation.verifier import TrustPolicy, verify_certify, verify_quote
from entra_keys.session import derive_key, import_session_key, kdf_context, kdf_input
from entra_keys.tcg.structures import TPMTSignature
from entra_keys.testing.token_service import TokenService

from .context import Context
from .measure import Case, Contender, Result, Round, Target, interleave, timed_loop

__all__ = ["CASES"]

_NONCE = bytes(range(32))
_PCRS = [0, 1, 7]
_ATTEST = {
    n: f"attest.{n}"
    for n in (
        "quote_tpm",
        "quote_software",
        "certify_tpm",
        "certify_software",
    )
}
_AK_TYPES = {"rsa2048": KeyType.RSA2048, "ecc256": KeyType.ECC256}
_VERIFY = {
    f"{what}.{kt}": f"attest.{what}.{kt}"
    for kt in _AK_TYPES
    for what in ("pyca_quote", "verify_quote", "pyca_certify", "verify_certify")
}
_POOL = {n: f"attest.pool.{n}" for n in ("in_process", "1", "2", "independent_1", "independent_2")}
_POOL_BATCH = 64
_DERIVE = {n: f"derive.{n}" for n in ("esapi", "esapi_encrypted", "tpm", "software")}
_SOFTWARE = TrustPolicy(allow_software=True)


def _run_attestation(ctx: Context) -> list[Result]:
    software = open_provider("software")
    soft_ak = software.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    soft_key = software.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    with ExitStack() as stack:
        provider = ctx.tpm_provider()
        stack.callback(provider.close)
        ak, device, *_ = _signed(ctx, provider, KeyType.RSA2048)  # a TPM quote that verifies
        soft_quote = software.quote(soft_ak, _PCRS, _NONCE)
        assert not verify_quote(
            soft_quote.attest,
            soft_quote.signature,
            soft_ak.tpm_public,
            _NONCE,
            {soft_quote.pcr_bank: soft_quote.pcr_values},
            policy=_SOFTWARE,
        ).hardware_backed
        contenders = [
            Contender(
                _ATTEST["quote_tpm"],
                "TPM quote (PCRs read before and after), AK pinned",
                timed_loop(lambda: provider.quote(ak, _PCRS, _NONCE), ak.loaded),
            ),
            Contender(
                _ATTEST["quote_software"],
                "software quote",
                timed_loop(lambda: software.quote(soft_ak, _PCRS, _NONCE)),
            ),
            Contender(
                _ATTEST["certify_tpm"],
                "TPM key certification, AK pinned",
                timed_loop(lambda: provider.certify(device, ak, _NONCE), ak.loaded),
            ),
            Contender(
                _ATTEST["certify_software"],
                "software key certification",
                timed_loop(lambda: software.certify(soft_key, soft_ak, _NONCE)),
            ),
        ]
        return interleave(ctx, "Attestation: quote, certify (RSA-2048 AK)", contenders)


def _bare_verify(ak: Any, attest: bytes, signature: bytes) -> Callable[[], object]:
    """``cryptography`` verifying the TPMT_SIGNATURE's signature over the TPMS_ATTEST bytes with
    the AK's public key (RSASSA-PKCS1v15 or ECDSA, SHA-256): the bare baseline."""
    sig = TPMTSignature.parse(signature)
    public = ak.public_key()
    sha256 = hashes.SHA256()
    if isinstance(public, rsa.RSAPublicKey):
        raw, pkcs1 = sig.signature, padding.PKCS1v15()
        return lambda: public.verify(raw, attest, pkcs1, sha256)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der, ecdsa = sig.to_der(), ec.ECDSA(sha256)
    return lambda: public.verify(der, attest, ecdsa)


def _signed(ctx: Context, provider: Any, key_type: KeyType) -> tuple[Any, ...]:
    """A TPM quote and key certification by an AK of that type, checked once; with the AK's
    TPMT_PUBLIC, an enrolled policy, the expected PCRs and the certified key."""
    ak = ctx.tpm_key(provider, key_type, KeyUsage.ATTEST)
    device = ctx.tpm_key(provider, KeyType.ECC256, KeyUsage.SIGN)
    with ak.loaded():
        quote = provider.quote(ak, _PCRS, _NONCE)
        certification = provider.certify(device, ak, _NONCE)
    ak_public = ak.tpm_public  # the AK's TPMT_PUBLIC, as a verifier that enrolled it has
    policy = TrustPolicy(enrolled_aks=[ak_public])
    expected = {quote.pcr_bank: quote.pcr_values}
    args = (quote.attest, quote.signature, ak_public, _NONCE, expected)
    assert verify_quote(*args, policy=policy).hardware_backed
    return ak, device, quote, certification, ak_public, policy, args


def _run_verify(ctx: Context) -> list[Result]:
    results: list[Result] = []
    with ExitStack() as stack:
        provider = ctx.tpm_provider()
        stack.callback(provider.close)
        for kt, key_type in _AK_TYPES.items():
            ak, device, quote, cert, ak_public, policy, args = _signed(ctx, provider, key_type)
            expected_key = device.public_key()

            def check_quote(args: tuple[Any, ...] = args, policy: TrustPolicy = policy) -> object:
                return verify_quote(*args, policy=policy)

            def check_certify(
                cert: Any = cert,
                ak_public: Any = ak_public,
                policy: TrustPolicy = policy,
                expected_key: Any = expected_key,
            ) -> object:
                return verify_certify(
                    cert.attest, cert.signature, ak_public, cert.key_public, _NONCE,
                    policy=policy, expected_key=expected_key,
                )  # fmt: skip

            check_certify()
            name = key_type.value
            contenders = [
                Contender(
                    _VERIFY[f"pyca_quote.{kt}"],
                    f"cryptography verify of the quote's signature, {name} AK",
                    timed_loop(_bare_verify(ak, quote.attest, quote.signature)),
                ),
                Contender(
                    _VERIFY[f"verify_quote.{kt}"],
                    f"verify_quote, one core, {name} AK",
                    timed_loop(check_quote),
                    baseline=_VERIFY[f"pyca_quote.{kt}"],
                ),
                Contender(
                    _VERIFY[f"pyca_certify.{kt}"],
                    f"cryptography verify of the certification's signature, {name} AK",
                    timed_loop(_bare_verify(ak, cert.attest, cert.signature)),
                ),
                Contender(
                    _VERIFY[f"verify_certify.{kt}"],
                    f"verify_certify (expected key), one core, {name} AK",
                    timed_loop(check_certify),
                    baseline=_VERIFY[f"pyca_certify.{kt}"],
                ),
            ]
            group = f"Verification per core against bare cryptography ({name} AK)"
            results += interleave(ctx, group, contenders)
    return results


def _run_pool(ctx: Context) -> list[Result]:
    with ExitStack() as stack:
        provider = ctx.tpm_provider()
        stack.callback(provider.close)
        _, _, _, _, _, policy, args = _signed(ctx, provider, KeyType.RSA2048)
        one = stack.enter_context(VerifierPool(1, policy=policy))
        two = stack.enter_context(VerifierPool(2, policy=policy))
        one.warm_up()
        two.warm_up()

        def through(pool: VerifierPool) -> Callable[[int], Round]:
            def run(n: int) -> Round:
                count = _POOL_BATCH * max(1, round(n / _POOL_BATCH))
                items = [_distinct(args) for _ in range(count)]  # as from many devices
                start = time.perf_counter()
                for result in pool.map(items, batch=_POOL_BATCH):
                    assert result.hardware_backed
                return Round(time.perf_counter() - start, len(items))

            return run

        spawn = multiprocessing.get_context("spawn")
        shards = [
            stack.enter_context(
                ProcessPoolExecutor(
                    k, mp_context=spawn, initializer=_shard_start, initargs=(args, policy)
                )
            )
            for k in (1, 2)
        ]
        for executor, k in zip(shards, (1, 2), strict=True):
            assert sum(f.result() for f in [executor.submit(_shard, 1) for _ in range(k)]) == k

        def independent(executor: ProcessPoolExecutor, k: int) -> Callable[[int], Round]:
            def run(n: int) -> Round:
                share = max(1, n // k)
                start = time.perf_counter()
                done = sum(f.result() for f in [executor.submit(_shard, share) for _ in range(k)])
                return Round(time.perf_counter() - start, done)

            return run

        contenders = [
            Contender(
                _POOL["in_process"],
                "verify_quote in this process (RSA-2048 AK)",
                timed_loop(lambda: verify_quote(*args, policy=policy)),
            ),
            Contender(_POOL["1"], "VerifierPool, 1 process", through(one)),
            Contender(_POOL["2"], "VerifierPool, 2 processes", through(two), baseline=_POOL["1"]),
            Contender(
                _POOL["independent_1"],
                "1 verifying process, its own share of the quotes",
                independent(shards[0], 1),
            ),
            Contender(
                _POOL["independent_2"],
                "2 verifying processes, each its own share (no dispatcher)",
                independent(shards[1], 2),
                baseline=_POOL["independent_1"],
            ),
        ]
        return interleave(ctx, f"VerifierPool: quotes in batches of {_POOL_BATCH}", contenders)


_shard_args: tuple[Any, ...] = ()  # a verifying process's quote and policy, set by _shard_start


def _shard_start(args: tuple[Any, ...], policy: TrustPolicy) -> None:
    global _shard_args
    _shard_args = (args, policy)


def _shard(count: int) -> int:
    """A verifying process's share: ``count`` quote verifications, as a service's worker that
    receives its own attestations does (nothing dispatched per quote)."""
    args, policy = _shard_args
    for _ in range(count):
        if not verify_quote(*args, policy=policy).hardware_backed:
            raise RuntimeError("the quote did not verify as hardware")
    return count


def _distinct(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The quote's arguments as new objects (bytes and dicts), as each device's would be: the
    pool pickles each item's bytes, not one object many times."""

    def copy(data: bytes) -> bytes:
        return bytes(bytearray(data))  # (bytes(data) is data itself)

    attest, signature, ak_public, nonce, pcrs = args
    values = {bank: {i: copy(v) for i, v in vals.items()} for bank, vals in pcrs.items()}
    return copy(attest), copy(signature), copy(ak_public), copy(nonce), values


def _raw_hmac_key(raw: Any, key: bytes) -> Any:
    """A keyed-hash HMAC-SHA256 object with the given key, loaded on the bare connection."""
    t = raw.t
    public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
    public.objectAttributes = (
        t.TPMA_OBJECT.FIXEDTPM
        | t.TPMA_OBJECT.FIXEDPARENT
        | t.TPMA_OBJECT.USERWITHAUTH
        | t.TPMA_OBJECT.NODA
        | t.TPMA_OBJECT.SIGN_ENCRYPT
    )
    public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.HMAC
    public.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = t.TPM2_ALG.SHA256
    sensitive = t.TPM2B_SENSITIVE_CREATE(
        sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(key))
    )
    parent = raw.primary()
    try:
        private, public_out, _, _, _ = raw.esys.create(
            parent, sensitive, t.TPM2B_PUBLIC(publicArea=public)
        )
    finally:
        raw.flush(parent)
    return raw.load(private, public_out)


def _run_derive(ctx: Context) -> list[Result]:
    service = TokenService()
    ctx_bytes = os.urandom(24)
    block = kdf_input(kdf_context(ctx_bytes, kdf_version=1))
    software = open_provider("software")
    soft_transport = software.create_key(KeyType.RSA2048, KeyUsage.DECRYPT)
    assert isinstance(soft_transport, rsa.RSAPrivateKey)
    soft_session = import_session_key(
        software, soft_transport, service.session_key_jwe(soft_transport.public_key())
    )
    expected = service.derived_key(ctx_bytes, kdf_version=1)
    with ExitStack() as stack:
        raw = stack.enter_context(ctx.raw_tpm())
        t = raw.t
        handle = _raw_hmac_key(raw, service.session_key)
        provider = ctx.tpm_provider()
        stack.callback(provider.close)
        transport = ctx.tpm_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(transport, rsa.RSAPrivateKey)
        session = import_session_key(
            provider, transport, service.session_key_jwe(transport.public_key())
        )

        # The same protection as entra_keys: the response (the derived key) encrypted in one
        # continued HMAC session. Unsalted, so it takes no object slot; the per-command work is
        # that of a salted one. On tpm2-tss 3.2 any HMAC session costs ~3.5 ms of client CPU per
        # command (ESAPI's OpenSSL fetches and DRBG set-up), which is why the plain loop is faster.
        sym = t.TPMT_SYM_DEF(
            algorithm=t.TPM2_ALG.AES,
            keyBits=t.TPMU_SYM_KEY_BITS(aes=128),
            mode=t.TPMU_SYM_MODE(aes=t.TPM2_ALG.CFB),
        )
        raw_session = raw.esys.start_auth_session(
            t.ESYS_TR.NONE, t.ESYS_TR.NONE, t.TPM2_SE.HMAC, sym, t.TPM2_ALG.SHA256
        )
        stack.callback(raw.flush, raw_session)
        raw.esys.trsess_set_attributes(
            raw_session, t.TPMA_SESSION.CONTINUESESSION | t.TPMA_SESSION.ENCRYPT
        )

        def raw_hmac() -> bytes:
            return bytes(raw.esys.hmac(handle, t.TPM2B_MAX_BUFFER(block), t.TPM2_ALG.SHA256))

        def raw_hmac_encrypted() -> bytes:
            return bytes(
                raw.esys.hmac(
                    handle, t.TPM2B_MAX_BUFFER(block), t.TPM2_ALG.SHA256, session1=raw_session
                )
            )

        def library() -> bytes:
            return derive_key(session, ctx_bytes, kdf_version=1)

        def in_software() -> bytes:
            return derive_key(soft_session, ctx_bytes, kdf_version=1)

        with session.loaded():
            for op in (raw_hmac, raw_hmac_encrypted, library, in_software):
                if op() != expected:
                    raise RuntimeError(f"{op.__name__} derived another key")
        contenders = [
            Contender(_DERIVE["esapi"], "raw ESAPI TPM2_HMAC, key loaded", timed_loop(raw_hmac)),
            Contender(
                _DERIVE["esapi_encrypted"],
                "raw ESAPI TPM2_HMAC, response encrypted in one continued session",
                timed_loop(raw_hmac_encrypted),
            ),
            Contender(
                _DERIVE["tpm"],
                "entra_keys derive_key (KDF v1, response encrypted), session key pinned",
                timed_loop(library, session.loaded),
                baseline=_DERIVE["esapi_encrypted"],
            ),
            Contender(
                _DERIVE["software"], "entra_keys software derive_key", timed_loop(in_software)
            ),
        ]
        return interleave(ctx, "Session-key derivation (one TPM2_HMAC each)", contenders)


CASES = (
    Case(
        id="attestation",
        title="quote and key certification, TPM and software",
        figures=tuple(_ATTEST.values()),
        run=_run_attestation,
        targets=(
            Target(
                "TPM quote / software quote", _ATTEST["quote_tpm"], over=_ATTEST["quote_software"]
            ),
        ),
    ),
    Case(
        id="attestation-verify",
        title="quote and key-certification verification per core, RSA-2048 and P-256 AKs",
        figures=tuple(_VERIFY.values()),
        run=_run_verify,
        targets=(
            Target(
                "quote verification per core, RSA-2048 AK (/s)",
                _VERIFY["verify_quote.rsa2048"],
                at_least=5000.0,
            ),
            *(
                Target(
                    f"{what} / bare cryptography verify, {name} AK",
                    _VERIFY[f"verify_{what}.{kt}"],
                    over=_VERIFY[f"pyca_{what}.{kt}"],
                    at_least=0.6,
                )
                for kt, name in (("rsa2048", "RSA-2048"), ("ecc256", "P-256"))
                for what in ("quote", "certify")
            ),
        ),
    ),
    Case(
        id="attestation-pool",
        title="VerifierPool throughput, 1 and 2 processes",
        figures=tuple(_POOL.values()),
        run=_run_pool,
        targets=(
            Target(
                "VerifierPool: 2 processes / 1 process (~2x on 2 cores)",
                _POOL["2"],
                over=_POOL["1"],
            ),
            Target(
                "VerifierPool, 1 process / in-process verify_quote",
                _POOL["1"],
                over=_POOL["in_process"],
            ),
            Target(
                "2 verifying processes / 1, each its own share (~2x on 2 cores)",
                _POOL["independent_2"],
                over=_POOL["independent_1"],
            ),
        ),
    ),
    Case(
        id="derive",
        title="session-key derivation",
        figures=tuple(_DERIVE.values()),
        run=_run_derive,
        targets=(
            Target(
                "TPM derive: entra_keys / raw TPM2_HMAC, response encrypted",
                _DERIVE["tpm"],
                over=_DERIVE["esapi_encrypted"],
                at_least=0.90,
            ),
            Target(
                "TPM derive: entra_keys / raw TPM2_HMAC in the clear (the cost of encrypting)",
                _DERIVE["tpm"],
                over=_DERIVE["esapi"],
            ),
            Target("software derive / TPM derive", _DERIVE["software"], over=_DERIVE["tpm"]),
        ),
    ),
)
