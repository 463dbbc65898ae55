"""Fixtures: one swtpm for the session, providers of both kinds, keys made once and reloaded.

The swtpm is provisioned by ``swtpm_setup`` with EK certificates from a local CA, in a temp
directory, served on a unix socket; ``own_swtpm`` starts one for a single test that changes its
TPM for good. When ``CI=true`` a missing swtpm or tpm2-pytss fails the run instead of skipping;
so does a missing tpm2-abrmd for the ``tabrmd`` tests. After every test
that opened a TPM provider, ``tpm2_getcap`` (an independent tool, on its own connection) must
find no transient object left in the TPM. ``srk_swtpm`` is a second session swtpm whose SRK is
persistent (``tpm init``). The providers the suite runs over, and the fixtures that give each
(``provider``, ``store``, keys, command options), are in tests/contract/providers.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from entra_keys import Provider, open_provider
from entra_keys.testing.swtpm import Swtpm, SwtpmError, Tabrmd, swtpm_available, tabrmd_available

from .helpers import transient_handles, unavailable

#: The providers and the fixtures that give each (provider, store, keys, options): one module.
pytest_plugins = ["tests.contract.providers"]

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "extended",
    deadline=None,
    max_examples=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$XDG_RUNTIME_DIR in a temp dir: the saved primary contexts of the tests' swtpms stay in
    it (subprocesses inherit it), not in the user's ~/.cache or runtime directory."""
    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_RUNTIME_DIR", str(runtime))
        yield runtime


@pytest.fixture(scope="session")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A swtpm with EK certificates, started once per session on a unix socket."""
    if not swtpm_available():
        unavailable("swtpm is not installed")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        unavailable(f"tpm2-pytss is not importable ({exc})")
    tpm = Swtpm(tmp_path_factory.mktemp("swtpm"))
    tpm.start()
    yield tpm
    tpm.stop()


@pytest.fixture(scope="session")
def srk_swtpm(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A second session swtpm, its standard SRK persistent (``entra-keys tpm init``): keys are
    made under it, and each command that names it takes an object slot for it. The contract
    suite and the demo run over it too (tests/contract/providers.py, VARIANTS)."""
    from entra_keys.providers.tpm import persist_storage_key

    del swtpm  # its checks (swtpm and tpm2-pytss there) first
    tpm = Swtpm(tmp_path_factory.mktemp("srk-swtpm"))
    try:
        tpm.start()
    except SwtpmError as exc:
        unavailable(f"swtpm does not start: {exc}")
    persist_storage_key(tpm.tcti)
    yield tpm
    tpm.stop()


@pytest.fixture
def srk_tpm_provider(srk_swtpm: Swtpm) -> Iterator[Provider]:
    """A TPM provider on the swtpm with a persistent SRK; no transient object may remain."""
    provider = open_provider("tpm", tcti=srk_swtpm.tcti)
    try:
        yield provider
    finally:
        provider.close()
    left = transient_handles(srk_swtpm.tcti)
    assert left == [], f"transient objects leaked into the TPM: {left}"


@pytest.fixture
def own_swtpm(swtpm: Swtpm, tmp_path: Path) -> Iterator[Swtpm]:
    """A swtpm of the test's own (its own seeds), for a test that changes the TPM for good:
    clears it, rewrites NV, persists a key. Started after the session swtpm, whose checks
    (CI) apply; stopped after the test."""
    del swtpm
    tpm = Swtpm(tmp_path / "tpm")
    try:
        tpm.start()
    except SwtpmError as exc:
        unavailable(f"swtpm does not start: {exc}")
    yield tpm
    tpm.stop()


@pytest.fixture(scope="session")
def tabrmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tabrmd]:
    """tpm2-abrmd in front of a swtpm of its own (the session swtpm serves one connection at a
    time), on a private session bus; DBUS_SESSION_BUS_ADDRESS points at it for the session."""
    if not swtpm_available() or not tabrmd_available():
        unavailable("swtpm or tpm2-abrmd (with libtss2-tcti-tabrmd0, dbus-daemon) is missing")
    broker = Tabrmd(Swtpm(tmp_path_factory.mktemp("tabrmd")))
    try:
        broker.start()
    except SwtpmError as exc:
        broker.tpm.stop()
        unavailable(str(exc))
    before = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = broker.bus_address
    yield broker
    broker.stop()
    broker.tpm.stop()
    if before is None:
        os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    else:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = before


@pytest.fixture
def clean_cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ENTRA_KEYS_* from the caller's shell; TSS2_LOG, which main() sets, restored after."""
    for name in ("ENTRA_KEYS_PASSPHRASE", "ENTRA_KEYS_PROVIDER", "ENTRA_KEYS_STORE"):
        monkeypatch.delenv(name, raising=False)
    # Setting it first makes monkeypatch's teardown restore whatever it was.
    monkeypatch.setenv("TSS2_LOG", "")
    monkeypatch.delenv("TSS2_LOG")


@pytest.fixture
def tpm_provider(swtpm: Swtpm) -> Iterator[Provider]:
    """A TPM provider on the session swtpm; after the test, no transient object may remain."""
    provider = open_provider("tpm", tcti=swtpm.tcti)
    try:
        yield provider
    finally:
        provider.close()
    left = transient_handles(swtpm.tcti)
    assert left == [], f"transient objects leaked into the TPM: {left}"
