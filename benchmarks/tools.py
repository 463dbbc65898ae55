"""``tpm2_sign`` from tpm2-tools, one process per signature: the peer a shell script would use.

The key context is made by tpm2_createprimary, tpm2_create and tpm2_load. Without a resource
manager (swtpm) every tool leaves the objects it loaded in the TPM, which holds only three: the
case flushes them with ``tpm2_flushcontext -t`` after each set-up step and after each signature.
Two figures: the signing process alone (the flush after it untimed), and the pair a script on a
TPM without resource manager must run (``tpm2_sign`` then ``tpm2_flushcontext -t``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from entra_keys import KeyType

from .context import MESSAGE, Context
from .measure import Case, Contender, Result, Round, Target, interleave
from .signing import NAMES

__all__ = ["CASES"]

_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|sign"
_PUB_PRIV = ("-u", "key.pub", "-r", "key.priv")


def _tool(ctx: Context, *args: str, cwd: Path) -> None:
    done = subprocess.run(
        list(args), cwd=cwd, env=ctx.tool_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def _flush_all(ctx: Context, cwd: Path) -> None:
    _tool(ctx, "tpm2_flushcontext", "-t", cwd=cwd)


def _tools_case(key_type: KeyType) -> Case:
    name = NAMES[key_type]
    kt = key_type.value
    alone, paired = f"sign.{kt}.tpm2_sign", f"sign.{kt}.tpm2_sign_flush"

    def run(ctx: Context) -> list[Result]:
        work = ctx.workdir / f"tpm2-tools-{kt}"
        work.mkdir()
        (work / "message").write_bytes(MESSAGE)
        for step in (
            ("tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc256", "-c", "primary.ctx"),
            ("tpm2_create", "-Q", "-C", "primary.ctx", "-G", kt, "-a", _ATTRS, *_PUB_PRIV),
            ("tpm2_load", "-Q", "-C", "primary.ctx", *_PUB_PRIV, "-c", "key.ctx"),
        ):
            _tool(ctx, *step, cwd=work)
            _flush_all(ctx, work)
        sign = ("tpm2_sign", "-c", "key.ctx", "-g", "sha256", "-o", "signature", "message")

        def sign_only(n: int) -> Round:
            spent = 0.0
            for _ in range(n):
                start = time.perf_counter()
                _tool(ctx, *sign, cwd=work)
                spent += time.perf_counter() - start
                _flush_all(ctx, work)
            return Round(spent, n)

        def sign_and_flush(n: int) -> Round:
            start = time.perf_counter()
            for _ in range(n):
                _tool(ctx, *sign, cwd=work)
                _flush_all(ctx, work)
            return Round(time.perf_counter() - start, n)

        baseline = f"sign.{kt}.esapi"
        return interleave(
            ctx,
            f"Signing, {name}, tpm2-tools",
            [
                Contender(alone, "tpm2_sign, one process per signature", sign_only, baseline),
                Contender(
                    paired,
                    "tpm2_sign + tpm2_flushcontext -t per signature",
                    sign_and_flush,
                    baseline,
                ),
            ],
        )

    return Case(
        id=f"tpm2-tools-{kt}",
        title=f"tpm2_sign, {name}",
        figures=(alone, paired),
        run=run,
        needs=frozenset({"tpm", "tpm2-tools"}),
        targets=(
            Target(f"TPM signing {name}: tpm2_sign / raw ESAPI", alone, over=f"sign.{kt}.esapi"),
            Target(f"TPM signing {name}: entra_keys / tpm2_sign", f"sign.{kt}.tpm", over=alone),
        ),
    )


CASES = (_tools_case(KeyType.ECC256), _tools_case(KeyType.RSA2048))
