"""entra_keys benchmarks: what the library costs over the bare TPM and over bare cryptography.

Run ``python -m benchmarks [--short] [--tcti TCTI] [--out DIR]`` from the source tree (with
``src`` on the path or the package installed). One run measures every case against one TPM and
reports medians with their spread, ratios to the raw baselines of the same run, and the issue's
targets with PASS / MISS, as a table, ``DIR/benchmarks.json`` and ``DIR/benchmarks.png``.

Modules: ``measure`` (settings, interleaved rounds, results, targets, ``Case``), ``context``
(the run's TPM and keys made once), ``rawtpm`` (the raw ESAPI baseline), one module per group of
cases (``signing``, ``decryption``, ``tools``, ``threads``, ``keygen``, ``coldstart``,
``memory``, ``opening``, ``attestation``, ``roundtrips``: TPM commands per user flow, counted
where the TPM receives them), ``registry`` (the list of cases, in run order), ``report``, ``cli``.

Adding a case (quote, quote verification, session-key derivation when they land): write a
module with ``CASES = (Case(id=..., title=..., figures=(result ids...), run=..., needs=...,
targets=(Target(...), ...)),)``, where ``run(ctx)`` builds ``Contender`` objects, one per way
of doing the operation (raw baseline first, ``baseline=`` on the others), and returns
``measure.interleave(ctx, group, contenders)``; then add ``*module.CASES`` to
``registry.CASES``. A case must release every TPM object it loads (the run checks after each
one). A figure the library cannot produce yet is a ``Result`` with ``status=NOT_APPLICABLE``
and a note saying why, never an invented number.
"""
