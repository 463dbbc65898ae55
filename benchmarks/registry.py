"""The cases, in the order they run. A new benchmark is a module with ``CASES`` added here.

Each ``Case`` names the figures it produces (result ids), what it needs ("tpm", "tpm2-tools"),
and the targets or ratios to report from them; see ``benchmarks/__init__.py`` for how to add one.
"""

from __future__ import annotations

from . import (
    attestation,
    coldstart,
    decryption,
    keygen,
    measured,
    memory,
    opening,
    roundtrips,
    signing,
    threads,
    tools,
)
from .measure import Case

__all__ = ["CASES"]

CASES: tuple[Case, ...] = (
    *signing.CASES,
    *decryption.CASES,
    *tools.CASES,
    *threads.CASES,
    *keygen.CASES,
    *attestation.CASES,
    *measured.CASES,
    *opening.CASES,
    *roundtrips.CASES,
    *coldstart.CASES,
    *memory.CASES,
)
