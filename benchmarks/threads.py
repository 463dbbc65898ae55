"""1, 2 and 4 threads signing with one shared TPM provider and key, and 8 threads without
``key.loaded()``: total throughput, errors.

The 1-4 thread contenders hold ``key.loaded()`` in each thread (one object slot: the pins are
counted); the 8-thread one signs unpinned, through the provider's key cache. After every round
the key cache is flushed and a fresh ``tpm2_getcap handles-transient`` counts the objects beyond
those present before the round (the provider's storage key); after the provider closes, one
more count must find none of the case's objects left.
"""

from __future__ import annotations

import contextlib
import threading
import time

from entra_keys import EntraPrivateKey, KeyType, KeyUsage, Provider
from entra_keys.testing.tpm import connection_handles

from .context import Context
from .measure import Case, Contender, Result, Round, Target, interleave
from .signing import NAMES, signer

__all__ = ["CASES", "THREAD_COUNTS"]

THREAD_COUNTS = (1, 2, 4)
#: Threads signing without key.loaded() (through the key cache).
UNPINNED = 8
_KEY = KeyType.ECC256
_IDS = {n: f"threads.{_KEY.value}.{n}" for n in THREAD_COUNTS}
_IDS[UNPINNED] = f"threads.{_KEY.value}.{UNPINNED}_unpinned"


def _handles(ctx: Context, provider: Provider) -> list[int]:
    """Transient objects now: from tpm2_getcap, or the provider's own view without tpm2-tools."""
    found = ctx.transient_handles()
    if found is None:
        found = connection_handles(provider)
    return found


def _contender(
    ctx: Context, provider: Provider, key: EntraPrivateKey, count: int, *, pinned: bool = True
) -> Contender:
    sign = signer(key)
    pin = key.loaded if pinned else contextlib.nullcontext
    before = set(_handles(ctx, provider))

    def run(n: int) -> Round:
        share = max(1, n // count)
        barrier = threading.Barrier(count + 1, timeout=60)
        done = [0] * count
        errors = [0] * count

        def work(index: int) -> None:
            try:
                with pin():
                    barrier.wait()
                    for _ in range(share):
                        try:
                            sign()
                        except Exception:
                            errors[index] += 1
                        else:
                            done[index] += 1
            except Exception:
                errors[index] += 1
                barrier.abort()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(count)]
        for worker in workers:
            worker.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()  # a worker that failed to start broke it: time what ran
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - start
        provider.connection.flush_cache()  # type: ignore[attr-defined]
        leaked = len(set(_handles(ctx, provider)) - before)
        return Round(seconds, sum(done), sum(errors), {"leaked_handles": leaked})

    how = "key.loaded() per thread" if pinned else "unpinned (key cache)"
    label = f"{count} thread{'s' if count > 1 else ''}, one provider, {how}"
    baseline = _IDS[1] if count > 1 else None
    return Contender(_IDS[count], label, run, baseline=baseline, counts_errors=True)


def _run(ctx: Context) -> list[Result]:
    start = set(ctx.transient_handles() or ())
    provider = ctx.tpm_provider()
    try:
        key = ctx.tpm_key(provider, _KEY, KeyUsage.SIGN)
        contenders = [_contender(ctx, provider, key, count) for count in THREAD_COUNTS]
        contenders.append(_contender(ctx, provider, key, UNPINNED, pinned=False))
        results = interleave(ctx, f"Threads, {NAMES[_KEY]} signing, TPM provider", contenders)
    finally:
        provider.close()
    after = ctx.transient_handles()
    left: int | None = None if after is None else len(set(after) - start)
    for result in results:
        result.extra["handles_left_after_close"] = left
    return results


CASES = (
    Case(
        id="threads",
        title="threads sharing one TPM provider",
        figures=tuple(_IDS.values()),
        run=_run,
        targets=(
            Target("threads: 2 threads / 1 thread", _IDS[2], over=_IDS[1]),
            Target("threads: 4 threads / 1 thread", _IDS[4], over=_IDS[1], at_least=0.95),
            Target(
                "threads: 8 unpinned threads / 1 thread",
                _IDS[UNPINNED],
                over=_IDS[1],
                at_least=0.95,
            ),
            Target(
                "threads: errors (1, 2, 4, 8 unpinned threads)",
                tuple(_IDS.values()),
                field="errors",
                at_most=0,
            ),
            Target(
                "threads: transient handles leaked",
                tuple(_IDS.values()),
                field="leaked_handles",
                at_most=0,
            ),
            Target(
                "threads: handles left after the provider closed",
                _IDS[1],
                field="handles_left_after_close",
                at_most=0,
            ),
        ),
    ),
)
