"""How long the benchmarks measure: the short and full run settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """How long to measure: warm-up and round length in seconds, rounds, long-run sizes."""

    mode: str
    warmup: float
    rounds: int
    round_time: float
    coldstart_runs: int
    #: Signatures in the long runs of the memory case (TPM key pinned, unpinned, software).
    leak_ops_pinned: int
    leak_ops_unpinned: int
    leak_ops_software: int


SHORT = Settings(
    mode="short",
    warmup=0.1,
    rounds=3,
    round_time=0.15,
    coldstart_runs=3,
    leak_ops_pinned=300,
    leak_ops_unpinned=100,
    leak_ops_software=3_000,
)
FULL = Settings(
    mode="full",
    warmup=0.5,
    rounds=15,
    round_time=0.4,
    coldstart_runs=10,
    leak_ops_pinned=10_000,
    leak_ops_unpinned=3_000,
    leak_ops_software=100_000,
)
