"""Key creation, ECC P-256 and RSA-2048: TPM provider against raw ESAPI ``create``, software
provider against pyca ``cryptography``. RSA in a TPM searches for primes: expect a wide spread."""

from __future__ import annotations

from contextlib import ExitStack

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from entra_keys import KeyType, KeyUsage, open_provider

from .context import Context
from .measure import Case, Contender, Result, Target, interleave, timed_loop
from .signing import NAMES

__all__ = ["CASES"]


def _keygen_case(key_type: KeyType) -> Case:
    name = NAMES[key_type]
    ids = {n: f"keygen.{key_type.value}.{n}" for n in ("esapi", "tpm", "crypto", "software")}

    def run(ctx: Context) -> list[Result]:
        software = open_provider("software")
        with ExitStack() as stack:
            provider = ctx.tpm_provider()
            stack.callback(provider.close)
            raw = stack.enter_context(ctx.raw_tpm())
            parent = raw.primary()

            def raw_create() -> object:
                return raw.create(parent, key_type, KeyUsage.SIGN)

            def library() -> object:
                return provider.create_key(key_type, KeyUsage.SIGN)

            def crypto() -> object:
                if key_type.is_rsa:
                    return rsa.generate_private_key(65537, key_type.bits)
                return ec.generate_private_key(key_type.curve)

            def software_create() -> object:
                return software.create_key(key_type, KeyUsage.SIGN)

            contenders = [
                Contender(ids["esapi"], "raw ESAPI create", timed_loop(raw_create)),
                Contender(ids["tpm"], "entra_keys TPM provider", timed_loop(library), ids["esapi"]),
                Contender(ids["crypto"], "raw cryptography", timed_loop(crypto)),
                Contender(
                    ids["software"],
                    "entra_keys software provider",
                    timed_loop(software_create),
                    ids["crypto"],
                ),
            ]
            return interleave(ctx, f"Key creation, {name}", contenders)

    return Case(
        id=f"keygen-{key_type.value}",
        title=f"key creation, {name}",
        figures=tuple(ids.values()),
        run=run,
        targets=(
            Target(f"key creation {name}: entra_keys / raw ESAPI", ids["tpm"], over=ids["esapi"]),
            Target(
                f"key creation {name}: entra_keys software / raw cryptography",
                ids["software"],
                over=ids["crypto"],
            ),
        ),
    )


CASES = (_keygen_case(KeyType.ECC256), _keygen_case(KeyType.RSA2048))
