"""The main job: ``entra-keys demo`` runs a whole join to the end, on both providers and on a
TPM after ``tpm init`` (its SRK persistent: the contract's VARIANTS run the join there too), and
never writes into a key store that holds anything."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import entra_keys
from entra_keys import KeyStore, KeyType, Provider
from entra_keys.cli import main
from entra_keys.cli._demo import REFRESH_TOKEN_SEALED, JoinDemo
from entra_keys.store import sealed
from entra_keys.testing.swtpm import Swtpm

from .helpers import assert_keys_encrypted, join_keys, transient_handles

STEPS = 14
#: Every key file the demo writes: device, transport, AK, Windows Hello and PRT session keys.
DEMO_KEYS = ["ak", "device", "ngc", "prt", "transport"]
#: The demo's Windows Hello key has a PIN: under it and the store passphrase together.
DEMO_PINS = {"ngc": b"246810"}
GUID = re.compile(r"DeviceId : ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def field(output: str, name: str) -> str:
    found = re.search(rf"^\s*{name} : (.*)$", output, re.MULTILINE)
    assert found, f"{name} missing from:\n{output}"
    return found.group(1).strip()


def assert_joined(output: str, *, hardware: bool) -> None:
    """Every step PASSED, but on software those with nothing to do there, which say
    "skipped (software)": the EK certificate check (a software EK has none), and the sealed
    refresh token when there is no passphrase to seal it under."""
    skipped = output.count(": skipped (software) ")
    assert output.count(": PASSED (") + skipped == STEPS, output
    if hardware:
        assert skipped == 0, output
    else:
        assert "Read the EK certificate and check its chain: skipped (software) " in output
        assert skipped in (1, 2), output
    assert "FAILED" not in output
    assert GUID.search(output), output
    assert field(output, "AzureAdJoined") == "YES"
    assert re.fullmatch(r"[0-9A-F]{40}", field(output, "Thumbprint"))
    assert field(output, "TpmProtected") == ("YES" if hardware else "NO")
    assert field(output, "AkEnrolled") == "YES"
    assert field(output, "SessionKeyPresent") == "YES"
    assert field(output, "SessionKeyTpmBound") == ("YES" if hardware else "NO")
    assert field(output, "KeySignTest") == "PASSED"


def test_demo_on_a_swtpm_it_starts_itself(
    swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --tcti: the demo provisions, starts and stops its own swtpm."""
    code = main(["--store", str(tmp_path / "keys"), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "Starting a throwaway swtpm" in output
    assert_joined(output, hardware=True)
    assert field(output, "EkCertificateChain") == "verified"
    assert field(output, "KeyProvider") == "Microsoft Platform Crypto Provider"


def test_demo_on_the_software_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a store passphrase the software provider cannot seal: the demo keeps no refresh
    token and says so; given one (ENTRA_KEYS_PASSPHRASE) it seals the token under it."""
    monkeypatch.delenv("ENTRA_KEYS_PASSPHRASE", raising=False)
    store_dir = tmp_path / "keys"
    code = main(["--provider", "software", "--store", str(store_dir), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert_joined(output, hardware=False)
    assert field(output, "KeyProvider") == "Microsoft Software Key Storage Provider"
    assert (
        "its refresh token sealed in software: skipped (software) not kept: software seals "
        "only under a passphrase" in output
    )
    assert not list(store_dir.glob("*.sealed"))
    state = json.loads(next(store_dir.glob("*.json")).read_text())
    assert "prt_refresh_token" not in state

    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "demo store passphrase")
    store_dir = tmp_path / "keys-2"  # the demo never writes into a store that holds a join
    code = main(["--provider", "software", "--store", str(store_dir), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert_joined(output, hardware=False)
    assert output.count(": skipped (software) ") == 1  # the token is sealed: only the EK
    assert f"{REFRESH_TOKEN_SEALED}.sealed (under the passphrase)" in output
    with entra_keys.open_provider("software") as provider:
        store = KeyStore(provider, store_dir)
        assert assert_keys_encrypted(store, b"demo store passphrase", DEMO_PINS) == DEMO_KEYS
    with entra_keys.open_provider("software") as provider:
        token = sealed.unseal(
            KeyStore(provider, store_dir), REFRESH_TOKEN_SEALED, pin=b"demo store passphrase"
        )
    assert token and token.decode() not in "".join(
        path.read_text(errors="replace") for path in store_dir.iterdir()
    )


def _encodings(secret: bytes) -> list[bytes]:
    """The secret as a file could hold it: raw, base64, base64url (padded or not)."""
    b64, url = base64.b64encode(secret), base64.urlsafe_b64encode(secret)
    return [secret, b64, url, b64.rstrip(b"="), url.rstrip(b"=")]


def test_the_join_state_keeps_no_secret_in_the_clear(
    provider: Provider, ek_cas: list[x509.Certificate], tmp_path: Path
) -> None:
    """After the demo no file of the store holds the refresh token (raw or base64/base64url);
    the join state names the sealed entry, which unseals to the PRT the stand-in issued."""
    pin = None if provider.hardware_backed else b"store passphrase"
    store = KeyStore(provider, tmp_path / "keys")
    demo = JoinDemo(provider, store, ek_cas, io.StringIO(), pin)
    demo.run()
    state = store.load_join_state()
    assert state is not None and state["prt_refresh_token"] == REFRESH_TOKEN_SEALED
    assert sealed.names(store) == [REFRESH_TOKEN_SEALED]
    token = sealed.unseal(store, REFRESH_TOKEN_SEALED, pin=pin)
    issued = demo.entra.prts[token.decode()]  # a PRT the stand-in issued, to this device
    assert issued.device_id == state["device_id"]
    files = [p for p in store.path.rglob("*") if p.is_file()]
    assert store.path / f"{REFRESH_TOKEN_SEALED}.sealed" in files
    for path in files:
        data = path.read_bytes()
        for form in _encodings(token):
            assert form not in data, f"{path.name} holds the refresh token"
    assert "ngc" in {k.name for k in store.list()}  # the Windows Hello key is kept


def test_a_store_passphrase_protects_every_key_the_demo_writes(
    provider: Provider, ek_cas: list[x509.Certificate], tmp_path: Path
) -> None:
    """Given a store passphrase, no key file of the store holds a private key in the clear: on
    software each is encrypted under it (and loads back with it only, the session key too);
    on a TPM each is a TSS2 key file only this TPM loads, the passphrase taking no part."""
    passphrase = b"a store passphrase"
    store = KeyStore(provider, tmp_path / "keys")
    JoinDemo(provider, store, ek_cas, io.StringIO(), passphrase).run()
    if provider.kind == "software":
        assert assert_keys_encrypted(store, passphrase, DEMO_PINS) == DEMO_KEYS
        return
    assert sorted(info.name for info in store.list()) == DEMO_KEYS
    for path in sorted(store.path.glob("*.pem")):
        data = path.read_bytes()
        labels = [line for line in data.splitlines() if line.startswith(b"-----BEGIN ")]
        assert labels == [b"-----BEGIN TSS2 PRIVATE KEY-----"], path.name
        with pytest.raises(ValueError, match="no BEGIN/END delimiters for a private key"):
            serialization.load_pem_private_key(data, None)
    assert store.load_session_key("prt").hardware_backed
    assert store.load("device").hardware_backed


def test_demo_on_a_given_tpm_and_status_afterwards(
    swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tcti: the demo uses that TPM; a later ``status`` reports the join from the store."""
    base = ["--tcti", swtpm.tcti, "--store", str(tmp_path / "keys")]
    cas = [arg for path in swtpm.ca_certificates for arg in ("--ek-ca", str(path))]
    assert main([*base, "demo", *cas]) == 0
    demo_output = capsys.readouterr().out
    assert_joined(demo_output, hardware=True)
    assert transient_handles(swtpm.tcti) == []

    assert main([*base, "--json", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    device = status["device"]
    assert device["azure_ad_joined"] is True
    assert device["device_id"] in demo_output
    assert device["tpm_protected"] is True
    assert device["ak_enrolled"] is True
    assert device["ek_certificate_chain"] == "verified"
    assert device["session_key_present"] is True
    assert device["session_key_tpm_bound"] is True
    assert status["key_sign_test"]["result"] == "PASSED"
    assert transient_handles(swtpm.tcti) == []


def test_demo_after_tpm_init_joins_and_status_passes(
    srk_swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a TPM whose SRK is persistent the join went as far as sealing and stopped there (no
    free object slot: the SRK takes one for every command that names it). The whole join
    runs, its keys hang under the SRK, and ``status`` finds every key working."""
    base = ["--tcti", srk_swtpm.tcti, "--store", str(tmp_path / "keys")]
    cas = [arg for path in srk_swtpm.ca_certificates for arg in ("--ek-ca", str(path))]
    assert main([*base, "demo", *cas]) == 0
    assert_joined(capsys.readouterr().out, hardware=True)
    assert main([*base, "--json", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["provider"]["storage_key"] == "0x81000001 (persistent)"
    assert {key["name"]: key["health"]["result"] for key in status["keys"]} == {
        "ak": "ok", "device": "ok", "ngc": "pin-protected", "prt": "ok", "transport": "ok",
    }  # fmt: skip
    assert transient_handles(srk_swtpm.tcti) == []


def test_demo_on_a_given_tpm_without_its_ca_stops_with_one_clear_line(
    swtpm: Swtpm, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", "--tcti", swtpm.tcti,
         "--store", str(tmp_path / "keys"), "demo"],
        env={"PYTHONPATH": str(Path(entra_keys.__file__).parent.parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    assert done.stderr.strip().splitlines() == [
        "entra-keys: error: no EK CA to check the chain against: give it with --ek-ca"
    ]
    assert transient_handles(swtpm.tcti) == []


# -- the demo never writes into a store that holds anything --------------------------------------


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``path`` (relative name: bytes and mode)."""
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_demo_leaves_a_store_with_a_join_byte_identical(
    provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``entra-keys --store DIR demo`` on a store that holds a join replaced its device,
    transport and AK keys with those of a throwaway swtpm. Now the demo says it leaves the
    store untouched, joins in a fresh temporary store, and every file of the join is
    byte-identical afterwards; the join still works."""
    store = KeyStore(provider, tmp_path / "store")
    join_keys(store)
    store.save_join_state({"device_id": "d-1", "session_key": "prt"})
    sealed.seal(store, "refresh", b"a token", pin=None if provider.hardware_backed else b"pin")
    before = _snapshot(store.path)
    options = [] if provider.hardware_backed else ["--provider", "software"]  # TPM: its own
    code = main([*options, "--store", str(store.path), "demo"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert f"Key store: {store.path} holds files (a join?): the demo leaves it untouched" in output
    assert_joined(output, hardware=provider.hardware_backed)
    assert field(output, "KeyStore") != str(store.path)
    assert _snapshot(store.path) == before
    assert store.load("device").key_type is KeyType.ECC256
    assert store.load_join_state() == {"device_id": "d-1", "session_key": "prt"}


@pytest.mark.parametrize(
    "content",
    ["join state", "sealed secret", "a file of another program"],
)
def test_demo_never_writes_into_a_store_that_holds_anything(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    name = {"join state": "join.json", "sealed secret": "x.sealed"}.get(content, "notes.txt")
    (store_dir / name).write_bytes(b'{"device_id": "d-1"}')
    (store_dir / name).chmod(0o600)
    before = _snapshot(store_dir)
    assert main(["--provider", "software", "--store", str(store_dir), "demo"]) == 0
    output = capsys.readouterr().out
    assert "the demo leaves it untouched and joins in a fresh temporary store" in output
    assert _snapshot(store_dir) == before


def test_demo_joins_in_a_named_empty_store_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    assert main(["--provider", "software", "--store", str(store_dir), "demo"]) == 0
    output = capsys.readouterr().out
    assert f"Key store: {store_dir} (empty: the demo's join stays there)" in output
    assert field(output, "KeyStore") == str(store_dir)
    assert sorted(p.stem for p in store_dir.glob("*.pem")) == DEMO_KEYS


def test_demo_refused_store_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store path that is a symbolic link (to a store that holds keys) is not used."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert main(["--provider", "software", "--store", str(link), "demo"]) == 0
    output = capsys.readouterr().out
    assert f"Key store: {link} cannot be used" in output and "symbolic link" in output
    assert list(real.iterdir()) == []


# -- without the tpm extra, and global options after the command ----------------------------------


def test_demo_without_tpm2_pytss_runs_on_software_and_says_why(tmp_path: Path) -> None:
    """Without the tpm extra the demo started a swtpm and then failed: it now looks first,
    starts no swtpm, and runs on the software provider, saying why (as the README says)."""
    hidden = tmp_path / "hidden" / "tpm2_pytss"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named tpm2_pytss')\n")
    path = f"{hidden.parent}:{Path(entra_keys.__file__).parent.parent}"
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", "demo", "--store", str(tmp_path / "keys")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("tpm2-pytss is not usable (No module named tpm2_pytss)")
    assert first.endswith("; running on the software provider (keys are not hardware-backed)")
    assert "Starting a throwaway swtpm" not in done.stdout
    assert_joined(done.stdout, hardware=False)
    assert not (tmp_path / "keys" / "tpm").exists()
    # asked for a TPM, it does not fall back
    refused = subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", "--provider", "tpm", "demo", "--store",
         str(tmp_path / "keys-2")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("entra-keys: error: --provider tpm, and no throwaway swtpm")


def test_demo_takes_its_global_options_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``entra-keys demo --provider software``, as the README's table writes it."""
    store_dir = tmp_path / "keys"
    assert main(["demo", "--provider", "software", "--store", str(store_dir), "--json"]) == 0
    out, err = capsys.readouterr()
    # with --json the steps go to stderr, and the status is the one JSON document
    assert err.count(": PASSED (") + err.count(": skipped (software) ") == STEPS, err
    status = json.loads(out)
    assert status["provider"]["kind"] == "software" and status["store"] == str(store_dir)
    assert status["device"]["azure_ad_joined"] is True
