"""Key health: ``status`` uses every stored key once, and a TPM that lost the keys' storage
hierarchy (cleared for real with TPM2_Clear on a swtpm of the test's own) is one state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from entra_keys import KeyStore, KeysUnusable, KeyType, KeyUsage, Provider, open_provider
from entra_keys.cli import main
from entra_keys.cli.status import PIN_LOADS, PIN_NOT_OPENED, UNUSABLE
from entra_keys.errors import ForeignKey
from entra_keys.testing.swtpm import Swtpm

from .helpers import join_keys, transient_handles, unavailable


def _join(store: KeyStore) -> None:
    """The keys of a join: device, transport, AK and the PRT session key, and the join state."""
    join_keys(store)
    store.save_join_state({"device_id": "d-1", "session_key": "prt", "ak": "ak"})


def _status(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json", "status"])
    return code, json.loads(capsys.readouterr().out)


def test_status_uses_every_key_once(
    provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    args = ["--provider", provider.kind, "--store", str(store.path)]
    if provider.kind == "tpm":
        args += ["--tcti", provider.info().tcti or ""]
    code, doc = _status(args, capsys)
    assert code == 0
    assert doc["device"]["azure_ad_joined"] is True and doc["device"]["session_key_present"]
    health = {k["name"]: k["health"] for k in doc["keys"]}
    assert health == {
        "ak": {"result": "ok", "test": "load"},
        "device": {"result": "ok", "test": "sign"},
        "prt": {"result": "ok", "test": "derive"},
        "transport": {"result": "ok", "test": "decrypt"},
    }
    assert doc["keys_unusable"] is False and doc["key_sign_test"]["result"] == "PASSED"


def test_status_loads_a_pin_protected_key_and_does_not_use_it(
    provider: Provider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The NGC key needs its PIN: ``status`` loads it only (a use without the PIN would count
    toward the TPM's lockout) and does not fail on it; the key still signs with its PIN."""
    monkeypatch.delenv("ENTRA_KEYS_PASSPHRASE", raising=False)
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=b"246810")
    assert {k.name: k.pin for k in store.list()}["ngc"] is True
    assert not any(k.pin for k in store.list() if k.name != "ngc")
    args = ["--provider", provider.kind, "--store", str(store.path)]
    if provider.kind == "tpm":
        args += ["--tcti", provider.info().tcti or ""]
    code, doc = _status(args, capsys)
    assert code == 0
    health = {k["name"]: k["health"] for k in doc["keys"]}
    if provider.kind == "tpm":  # the TPM loads it; the PIN is checked only at a use
        assert health["ngc"] == {"result": "pin-protected", "test": "load", "note": PIN_LOADS}
    else:  # the software key file is encrypted under its PIN: not opened without it
        assert health["ngc"] == {
            "result": "pin-protected", "test": "none", "note": PIN_NOT_OPENED
        }  # fmt: skip
    assert health["device"] == {"result": "ok", "test": "sign"}
    assert doc["key_sign_test"] == {"result": "PASSED", "tested": ["device"], "failures": []}
    assert main([*args, "status"]) == 0
    assert health["ngc"]["note"] in capsys.readouterr().out
    ngc = store.load("ngc", pin=b"246810")
    assert isinstance(ngc, rsa.RSAPrivateKey)
    signature = ngc.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    ngc.public_key().verify(signature, b"m", padding.PKCS1v15(), hashes.SHA256())


def test_status_does_not_open_a_software_pin_key_under_the_store_passphrase_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A software key made with a PIN in a store with a passphrase is written under both: the
    passphrase alone no longer opens it (it did, and then any PIN signed), so ``status`` given
    the passphrase reports it PIN-protected and unopened; with its PIN it opens and signs."""
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "store secret")
    with open_provider("software") as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, passphrase=b"store secret", pin=b"1")
    code, doc = _status(["--provider", "software", "--store", str(tmp_path / "store")], capsys)
    assert code == 0
    assert doc["keys"][0]["pin"] is True
    assert doc["keys"][0]["health"] == {
        "result": "pin-protected",
        "test": "none",
        "note": PIN_NOT_OPENED,
    }
    with open_provider("software") as provider:
        key = KeyStore(provider, tmp_path / "store").load(
            "ngc", passphrase=b"store secret", pin=b"1"
        )
        assert isinstance(key, rsa.RSAPrivateKey)
        key.public_key().verify(
            key.sign(b"m", padding.PKCS1v15(), hashes.SHA256()),
            b"m",
            padding.PKCS1v15(),
            hashes.SHA256(),
        )


def _clear(tpm: Swtpm) -> None:
    """TPM2_Clear with the lockout authorization (empty on a fresh swtpm), by tpm2-tools: a new
    storage seed, so nothing made under the old storage hierarchy loads again."""
    if shutil.which("tpm2_clear") is None:
        unavailable("tpm2-tools is not installed")
    subprocess.run(
        ["tpm2_clear", "-c", "l"],
        env={**os.environ, "TPM2TOOLS_TCTI": tpm.tcti},
        check=True,
        capture_output=True,
    )


def test_cleared_tpm_is_one_state_leave_and_join_again(
    own_swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        _join(KeyStore(provider, store_dir))
    _clear(own_swtpm)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        for load in (lambda: store.load("device"), lambda: store.load_session_key("prt")):
            with pytest.raises(KeysUnusable, match="keys unusable on this TPM: leave and join"):
                load()
        assert issubclass(KeysUnusable, ForeignKey)
    assert transient_handles(own_swtpm.tcti) == []  # the refused loads flushed nothing left
    args = ["--provider", "tpm", "--tcti", own_swtpm.tcti, "--store", str(store_dir)]
    code, doc = _status(args, capsys)
    assert code == 1 and doc["keys_unusable"] is True
    assert doc["device"]["azure_ad_joined"] is True  # the join state is there; its keys are not
    assert {k["name"]: k["health"]["result"] for k in doc["keys"]} == dict.fromkeys(
        ("ak", "device", "prt", "transport"), "unusable"
    )
    assert main([*args, "status"]) == 1
    assert UNUSABLE in capsys.readouterr().out
    # The way out: leave (no TPM needed), join again on the cleared TPM.
    assert main(["--store", str(store_dir), "leave"]) == 0
    capsys.readouterr()
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        _join(KeyStore(provider, store_dir))
    code, doc = _status(args, capsys)
    assert code == 0 and not doc["keys_unusable"]
    assert transient_handles(own_swtpm.tcti) == []


#: The TCG SRK template's attributes: tpm2-tools' default primary and noDA.
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"


def test_keys_under_a_persistent_srk_are_unusable_after_a_clear(
    own_swtpm: Swtpm, tmp_path: Path
) -> None:
    """A clear also evicts the persistent SRK: the keys' parent 0x81000001 is gone."""
    env = {**os.environ, "TPM2TOOLS_TCTI": own_swtpm.tcti}
    for argv in (
        ["tpm2_createprimary", "-C", "o", "-a", SRK_ATTRIBUTES, "-c", str(tmp_path / "srk.ctx")],
        ["tpm2_evictcontrol", "-C", "o", "-c", str(tmp_path / "srk.ctx"), "0x81000001"],
        ["tpm2_flushcontext", "-t"],
    ):
        if shutil.which(argv[0]) is None:
            unavailable("tpm2-tools is not installed")
        subprocess.run(argv, env=env, check=True, capture_output=True)
    with open_provider("tpm", tcti=own_swtpm.tcti) as provider:
        store = KeyStore(provider, tmp_path / "store")
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    _clear(own_swtpm)
    with (
        open_provider("tpm", tcti=own_swtpm.tcti) as provider,
        pytest.raises(KeysUnusable, match="0x81000001"),
    ):
        KeyStore(provider, tmp_path / "store").load("device")
