"""The providers the suite runs over, and the fixtures that hand each one to a test.

A test that takes ``provider`` (or ``store``, ``signing_key``, ``transport_key``, ...) runs once
per entry of ``PROVIDERS``; a command-line test takes ``provider_options`` (the command's global
options for each). tests/conftest.py loads this module as a plugin, so the whole suite sees the
fixtures. A third provider joins every such test in three lines here::

    PROVIDERS["mine"] = ProviderUnderTest(
        open=lambda request: MyProvider(), options=lambda request: ["--provider", "mine"]
    )

A provider with a dictionary-attack counter also gives ``forgive_pins``, one with EK
certificates ``ek_cas``, one whose connection is exclusive ``open_apart``. What a test expects
of a provider comes from the provider itself (``kind``, ``hardware_backed``), never from the
entry's name.

``VARIANTS`` are providers of a kind already listed, set up another way: the TPM provider on a
second session swtpm whose SRK is persistent (``entra-keys tpm init``), where keys are made
under it and every command that names it needs an object slot for it. The contract suite
(tests/contract/) and the demo (tests/test_demo.py) run over them too (``pytest_generate_tests``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from entra_keys import KeyStore, KeyType, KeyUsage, Provider, open_provider
from entra_keys.attestation import TrustPolicy
from entra_keys.provider import EntraPrivateKey
from entra_keys.testing.swtpm import Swtpm

from ..helpers import cached_key, transient_handles

__all__ = [
    "PROVIDERS",
    "VARIANTS",
    "ProviderUnderTest",
    "open_apart",
    "option_kind",
    "other_kind",
    "pytest_generate_tests",
]


@dataclasses.dataclass(frozen=True)
class ProviderUnderTest:
    """How the suite opens one provider: in the test's process, and as the command's options."""

    open: Callable[[pytest.FixtureRequest], Provider]
    options: Callable[[pytest.FixtureRequest], list[str]]
    #: A provider of the caller's own, closed by the caller before the command runs (a swtpm
    #: serves one connection at a time); ``open`` where connections are not exclusive.
    open_apart: Callable[[pytest.FixtureRequest], Provider] | None = None
    #: After a test that spent wrong PINs: forgive them (a TPM counts them toward lockout).
    forgive_pins: Callable[[Provider], None] = lambda provider: None
    #: The CA certificates that issued this provider's EK certificates (none: software EKs).
    ek_cas: Callable[[pytest.FixtureRequest], list[x509.Certificate]] = lambda request: []


def _tpm_options(request: pytest.FixtureRequest) -> list[str]:
    swtpm: Swtpm = request.getfixturevalue("clean_swtpm")
    return ["--provider", "tpm", "--tcti", swtpm.tcti]


def _tpm_open_apart(request: pytest.FixtureRequest) -> Provider:
    swtpm: Swtpm = request.getfixturevalue("clean_swtpm")
    return open_provider("tpm", tcti=swtpm.tcti)


def _tpm_forgive_pins(provider: Provider) -> None:
    """Reset the session swtpm's dictionary-attack counter (its lockout auth is empty)."""
    conn = provider.connection  # type: ignore[attr-defined]
    with conn.command("reset the dictionary-attack counter") as esys:
        esys.dictionary_attack_lock_reset(conn.tss.ESYS_TR.LOCKOUT)


def _tpm_ek_cas(request: pytest.FixtureRequest) -> list[x509.Certificate]:
    swtpm: Swtpm = request.getfixturevalue("swtpm")
    return [x509.load_pem_x509_certificate(p.read_bytes()) for p in swtpm.ca_certificates]


def _srk_options(request: pytest.FixtureRequest) -> list[str]:
    swtpm: Swtpm = request.getfixturevalue("clean_srk_swtpm")
    return ["--provider", "tpm", "--tcti", swtpm.tcti]


def _srk_ek_cas(request: pytest.FixtureRequest) -> list[x509.Certificate]:
    swtpm: Swtpm = request.getfixturevalue("srk_swtpm")
    return [x509.load_pem_x509_certificate(p.read_bytes()) for p in swtpm.ca_certificates]


#: Every provider the suite runs over, by kind.
PROVIDERS: dict[str, ProviderUnderTest] = {
    "software": ProviderUnderTest(
        open=lambda request: open_provider("software"),
        options=lambda request: ["--provider", "software"],
    ),
    "tpm": ProviderUnderTest(
        open=lambda request: request.getfixturevalue("tpm_provider"),
        options=_tpm_options,
        open_apart=_tpm_open_apart,
        forgive_pins=_tpm_forgive_pins,
        ek_cas=_tpm_ek_cas,
    ),
}


#: Providers of a kind above set up another way, for the contract suite and the demo.
VARIANTS: dict[str, ProviderUnderTest] = {
    "tpm-srk": ProviderUnderTest(
        open=lambda request: request.getfixturevalue("srk_tpm_provider"),
        options=_srk_options,
        forgive_pins=_tpm_forgive_pins,
        ek_cas=_srk_ek_cas,
    ),
}
#: The test modules that run over VARIANTS too (paths from the repository's root).
_WITH_VARIANTS = ("tests/contract/", "tests/test_demo.py")


def _under_test(name: str) -> ProviderUnderTest:
    return PROVIDERS[name] if name in PROVIDERS else VARIANTS[name]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give ``provider`` and ``provider_options`` each provider of PROVIDERS, and in the
    contract suite and the demo VARIANTS too."""
    path = Path(str(metafunc.definition.fspath)).resolve()
    root = Path(__file__).resolve().parents[2]
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else ""
    names = list(PROVIDERS)
    if relative.startswith(_WITH_VARIANTS):
        names += list(VARIANTS)
    for fixture in ("provider", "provider_options"):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, names, indirect=True)


def option_kind(options: list[str]) -> str:
    """The provider kind of the command's global options."""
    return options[options.index("--provider") + 1]


def open_apart(kind: str, request: pytest.FixtureRequest) -> Provider:
    """A provider of ``kind`` for the caller to close before a command opens its own."""
    under_test = PROVIDERS[kind]
    return (under_test.open_apart or under_test.open)(request)


def other_kind(kind: str) -> str:
    """The next provider after ``kind`` in PROVIDERS (the other one, while there are two)."""
    kinds = list(PROVIDERS)
    return kinds[(kinds.index(kind) + 1) % len(kinds)]


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Provider:
    """Each provider in turn: every behaviour test runs over all of them (parametrized by
    ``pytest_generate_tests``)."""
    return _under_test(request.param).open(request)


@pytest.fixture
def other_provider(provider: Provider, request: pytest.FixtureRequest) -> Provider:
    """A provider of another kind than ``provider``: for what one provider must refuse of the
    other (its key files, sealed blobs, keys, endorsement keys)."""
    return PROVIDERS[other_kind(provider.kind)].open(request)


@pytest.fixture
def provider_options(request: pytest.FixtureRequest) -> list[str]:
    """The command's global options for each provider in turn."""
    return _under_test(request.param).options(request)


@pytest.fixture
def clean_swtpm(swtpm: Swtpm) -> Iterator[Swtpm]:
    """The session swtpm, which must hold no transient object after the test."""
    yield swtpm
    left = transient_handles(swtpm.tcti)
    assert left == [], f"transient objects left in the TPM: {left}"


@pytest.fixture
def clean_srk_swtpm(srk_swtpm: Swtpm) -> Iterator[Swtpm]:
    """The session swtpm with a persistent SRK, which must hold no transient object after."""
    yield srk_swtpm
    left = transient_handles(srk_swtpm.tcti)
    assert left == [], f"transient objects left in the TPM: {left}"


def _param(request: pytest.FixtureRequest) -> str:
    """The entry the test's ``provider`` was opened from (PROVIDERS or VARIANTS)."""
    return str(request.node.callspec.params["provider"])


@pytest.fixture
def pin_tries(provider: Provider, request: pytest.FixtureRequest) -> Iterator[None]:
    """For a test that tries wrong PINs: the provider forgives them afterwards."""
    yield
    _under_test(_param(request)).forgive_pins(provider)


@pytest.fixture
def ek_cas(provider: Provider, request: pytest.FixtureRequest) -> list[x509.Certificate]:
    """The CA certificates that issued the provider's EK certificates (the swtpm's local CA;
    none for software)."""
    return _under_test(_param(request)).ek_cas(request)


@pytest.fixture
def ek_policy(provider: Provider, ek_cas: list[x509.Certificate]) -> TrustPolicy:
    """The trust policy under which the provider's endorsement keys enroll an AK: its EK CAs
    for hardware, software allowed for software."""
    if provider.hardware_backed:
        return TrustPolicy(ek_ca_certificates=ek_cas)
    return TrustPolicy(allow_software=True)


@pytest.fixture
def store(provider: Provider, tmp_path: Path) -> KeyStore:
    """An empty key store of the provider under test."""
    return KeyStore(provider, tmp_path / "store")


@pytest.fixture(params=[KeyType.RSA2048, KeyType.ECC256, KeyType.ECC384], ids=lambda t: t.value)
def signing_key(provider: Provider, request: pytest.FixtureRequest) -> EntraPrivateKey:
    """A signing key of each common type, from each provider."""
    return cached_key(provider, request.param, KeyUsage.SIGN)


@pytest.fixture
def rsa_signing_key(provider: Provider) -> EntraPrivateKey:
    """An RSA-2048 signing key (the device key's type), from each provider."""
    return cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN)


@pytest.fixture
def transport_key(provider: Provider) -> EntraPrivateKey:
    """An RSA-2048 decryption key (the transport key's type), from each provider."""
    return cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
