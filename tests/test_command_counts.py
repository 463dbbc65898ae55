"""TPM commands per user flow, counted where the TPM receives them, so they cannot silently grow.

Each flow of benchmarks/roundtrips.py (PRT sign-in, Windows Hello, unseal with and without PCRs,
the device-key PRT request, the whole join, ``entra-keys status``) runs on a provider of its own
on a swtpm after ``tpm init`` and on one without a persistent SRK; directly (the pcap TCTI) and
through tpm2-abrmd with the pcap TCTI on its TPM side, so its context swaps count, also with
``--max-transients=2`` (the three objects /dev/tpmrm0 lets a process hold), where every flow must
work. The small flows' commands are asserted one by one; every count has an upper bound, today's.
Then the long-lived agent's pattern: one provider, keys pinned across a login, safe across a TPM
restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.roundtrips import FLOWS, Rig, count_flows, rig
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from entra_keys import KeyStore, PRTSession, open_provider
from entra_keys.testing.pcap import command_names
from entra_keys.testing.swtpm import swtpm_available, tabrmd_available

from .helpers import open_pcap_provider, transient_handles, unavailable

#: The commands of the small flows after ``tpm init``, directly on the TPM.
EXACT = {
    # ReadPublic: the SRK (its public area salts the session); Load: the session key; one
    # salted session; two derivations; at close the key and the session are flushed (no
    # resource manager drops them for us).
    "prt_signin": "ReadPublic Load StartAuthSession HMAC HMAC FlushContext FlushContext",
    # The PIN key is loaded once, with its PIN; the PIN authorizes in the salted session.
    "windows_hello": "ReadPublic Load StartAuthSession Sign FlushContext FlushContext",
    # A session of its own that the unseal ends (continueSession clear): no FlushContext.
    "unseal": "ReadPublic Load StartAuthSession Unseal FlushContext",
    "unseal_pcrs": (
        "ReadPublic Load StartAuthSession PolicyPCR PolicyAuthValue Unseal FlushContext"
    ),
    "device_request": "ReadPublic Load Sign FlushContext",
}
#: Upper bounds, today's counts: (storage, route) -> flow -> at most.
BOUNDS: dict[tuple[str, str], dict[str, int]] = {
    ("srk", "direct"): {**{flow: len(names.split()) for flow, names in EXACT.items()},
                        "join": 53, "status": 17},
    ("primary", "direct"): {"prt_signin": 9, "windows_hello": 8, "unseal": 7, "unseal_pcrs": 9,
                            "device_request": 6, "join": 56, "status": 20},
    ("srk", "tabrmd"): {"prt_signin": 19, "windows_hello": 13, "unseal": 11, "unseal_pcrs": 17,
                        "device_request": 8, "join": 168, "status": 36},
    ("primary", "tabrmd"): {"prt_signin": 31, "windows_hello": 25, "unseal": 23,
                            "unseal_pcrs": 29, "device_request": 17, "join": 217, "status": 61},
}  # fmt: skip
BOUNDS["srk", "tabrmd2"] = BOUNDS["srk", "tabrmd"]
BOUNDS["primary", "tabrmd2"] = BOUNDS["primary", "tabrmd"]


@pytest.fixture(scope="module", params=["srk", "primary"])
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A swtpm of its own, after ``tpm init`` or without a persistent SRK, with the flows'
    keys made on it (benchmarks.roundtrips.Rig)."""
    if not swtpm_available():
        unavailable("swtpm is not installed")
    with rig(request.param, tmp_path_factory.mktemp(f"counts-{request.param}")) as made:
        yield made


@pytest.mark.parametrize("route", ["direct", "tabrmd", "tabrmd2"])
def test_each_flow_sends_at_most_todays_commands(made: Rig, route: str) -> None:
    if route != "direct" and not tabrmd_available():
        unavailable("tpm2-abrmd (with libtss2-tcti-tabrmd0, dbus-daemon) is missing")
    counts = count_flows(made, route)
    assert set(counts) == set(FLOWS)  # every flow ran to its end (each checks its result)
    bounds = BOUNDS[made.storage, route]
    over = {flow: len(names) for flow, names in counts.items() if len(names) > bounds[flow]}
    assert not over, {flow: counts[flow] for flow in over}
    if (made.storage, route) == ("srk", "direct"):
        for flow, names in EXACT.items():
            assert counts[flow] == names.split(), flow
    if made.storage == "primary" and route == "direct":
        # The owner primary from its saved context (ContextLoad, checked by ReadPublic), never
        # a CreatePrimary; a flow that only loads keys does not ask for an SRK (its key files
        # name their parent), one that makes keys does (one ReadPublic more).
        for flow, names in counts.items():
            assert "CreatePrimary" not in names
            if flow in EXACT:
                assert names[:2] == ["ContextLoad", "ReadPublic"], names
    assert transient_handles(made.tpm.tcti) == []


def test_a_long_lived_agent_pays_the_open_once(
    made: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One provider per process and ``with key.loaded()`` / ``prt.loaded()`` across a login:
    a login after the first costs its uses alone (one signature, two derivations); after a TPM
    restart the next login reloads what it needs and works, with the same objects."""
    assert made.certificate is not None
    capture = tmp_path / "agent.pcap"
    provider = open_pcap_provider(made.tpm.tcti, capture, monkeypatch)
    try:
        store = KeyStore(provider, made.login)
        device = store.load("device")
        assert isinstance(device, rsa.RSAPrivateKey)
        prt = PRTSession.open(store, "prt")

        def login() -> list[str]:
            before = len(command_names(capture))
            with device.loaded(), prt.loaded():
                device.sign(b"nonce", padding.PKCS1v15(), hashes.SHA256())
                made.service.verify_request(prt.sign_request({"request_nonce": "n"}))
                reply = made.service.encrypt_response(b'{"id_token": "x"}')
                assert prt.decrypt_response(reply) == b'{"id_token": "x"}'
            return command_names(capture)[before:]

        first = login()
        assert first.count("Load") <= 2 and first.count("StartAuthSession") == 1
        for _ in range(2):
            assert login() == ["Sign", "HMAC", "HMAC"]
        made.tpm.restart()
        again = login()  # the pinned handles and the session went with the reset: reloaded
        assert again.count("Load") == 2 and again.count("StartAuthSession") == 1, again
        assert again[-2:] == ["HMAC", "HMAC"], again
        assert login() == ["Sign", "HMAC", "HMAC"]
    finally:
        provider.close()
    assert transient_handles(made.tpm.tcti) == []
    with open_provider("tpm", tcti=made.tpm.tcti):  # the TPM serves the next process as ever
        pass
