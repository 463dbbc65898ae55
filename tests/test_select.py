"""Provider selection: argument, environment, the TPM the machine has, then software; a TPM that
is named (tcti=, --tcti, $TPM2TOOLS_TCTI, $TSS2_TCTI) is required, never replaced by software."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import entra_keys
from entra_keys import HardwareUnavailable, UnsupportedAlgorithm, open_provider
from entra_keys.testing.swtpm import Swtpm

from .helpers import transient_handles


@pytest.fixture
def no_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with no TPM named anywhere (and none at /dev/tpmrm0 in this sandbox)."""
    for var in ("ENTRA_KEYS_PROVIDER", "TPM2TOOLS_TCTI", "TSS2_TCTI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("entra_keys.providers.tpm.tcti.TPM_DEVICE", "/nonexistent/tpmrm0")


def test_no_tpm_falls_back_to_software_with_a_warning(
    no_tpm: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        provider = open_provider()
    assert provider.kind == "software" and not provider.hardware_backed
    assert "no TPM found" in caplog.text and "not hardware-backed" in caplog.text


def test_requiring_hardware_without_a_tpm_says_why(no_tpm: None) -> None:
    with pytest.raises(HardwareUnavailable, match="/dev/tpmrm0 does not exist"):
        open_provider(require_hardware=True)
    with pytest.raises(HardwareUnavailable, match="software provider was chosen"):
        open_provider("software", require_hardware=True)


def test_requiring_hardware_with_a_dead_tcti_says_why(tmp_path: Path) -> None:
    with pytest.raises(HardwareUnavailable, match="cannot open the TPM"):
        open_provider(tcti=f"swtpm:path={tmp_path / 'gone'}", require_hardware=True)


def test_environment_chooses_the_provider(no_tpm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PROVIDER", "software")
    assert open_provider().kind == "software"
    monkeypatch.setenv("ENTRA_KEYS_PROVIDER", "quantum")
    with pytest.raises(UnsupportedAlgorithm, match="unknown provider 'quantum'"):
        open_provider()


def test_tpm2tools_tcti_selects_the_tpm(
    swtpm: Swtpm, no_tpm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPM2TOOLS_TCTI", swtpm.tcti)
    with open_provider() as provider:
        assert provider.kind == "tpm" and provider.hardware_backed
        assert provider.info().tcti == swtpm.tcti
    assert transient_handles(swtpm.tcti) == []


def test_import_works_without_tpm2_pytss() -> None:
    """The package and the software provider work where tpm2-pytss (or libtss2) is absent."""
    code = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "import entra_keys\n"
        "p = entra_keys.open_provider('software')\n"
        "k = p.create_key(entra_keys.KeyType.ECC256, entra_keys.KeyUsage.SIGN)\n"
        "try:\n"
        "    entra_keys.open_provider('tpm', tcti='swtpm:path=/nonexistent')\n"
        "except entra_keys.HardwareUnavailable as e:\n"
        "    print('unavailable:', e)\n"
    )
    src = str(Path(entra_keys.__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert "unavailable: tpm2-pytss is not usable" in out


def test_public_api_is_complete() -> None:
    exported = set(entra_keys.__all__)
    errors = {name for name in vars(entra_keys.errors) if name[0].isupper() and
              isinstance(getattr(entra_keys.errors, name), type)}  # fmt: skip
    assert errors <= exported, errors - exported
    for name in exported:
        assert hasattr(entra_keys, name), name


# -- no silent downgrade: a store with TPM keys needs the TPM ---------------------------------


@pytest.fixture
def tpm_store(tpm_provider: entra_keys.Provider, tmp_path: Path) -> Path:
    """A store holding a TPM key (the join's device key)."""
    store = entra_keys.KeyStore(tpm_provider, tmp_path / "store")
    store.create("device", entra_keys.KeyType.ECC256, entra_keys.KeyUsage.SIGN)
    return store.path


def test_store_with_tpm_keys_never_falls_back_to_software(no_tpm: None, tpm_store: Path) -> None:
    with pytest.raises(HardwareUnavailable, match=r"holds TPM keys.*/dev/tpmrm0 does not exist"):
        entra_keys.KeyStore.open(tpm_store)
    with pytest.raises(HardwareUnavailable, match=r"holds TPM keys.*the TCTI swtpm:.* failed"):
        entra_keys.KeyStore.open(tpm_store, tcti=f"swtpm:path={tpm_store / 'gone'}")
    with pytest.raises(HardwareUnavailable, match="the TPM device /nonexistent/tpm0 does not"):
        entra_keys.KeyStore.open(tpm_store, tcti="device:/nonexistent/tpm0")


def test_store_with_tpm_keys_opens_the_tpm(
    swtpm: Swtpm, no_tpm: None, tpm_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPM2TOOLS_TCTI", swtpm.tcti)
    with entra_keys.KeyStore.open(tpm_store) as store:
        assert store.provider.kind == "tpm"


def test_store_without_tpm_keys_falls_back_with_the_reason_logged(
    no_tpm: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = entra_keys.KeyStore(open_provider("software"), tmp_path / "store")
    store.create("device", entra_keys.KeyType.ECC256, entra_keys.KeyUsage.SIGN)
    with caplog.at_level(logging.WARNING):
        assert entra_keys.KeyStore.open(store.path).provider.kind == "software"
    assert "no TPM found" in caplog.text


def test_cli_refuses_a_tpm_store_without_its_tpm(
    no_tpm: None, tpm_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entra_keys.cli import main

    assert main(["--store", str(tpm_store), "keys", "create", "new", "--type", "ecc256"]) == 1
    assert "holds TPM keys" in capsys.readouterr().err
    assert sorted(p.name for p in tpm_store.iterdir()) == ["device.pem"]


def test_store_with_tpm_keys_and_no_tpm2_pytss_says_so(tpm_store: Path) -> None:
    code = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "import entra_keys\n"
        "try:\n"
        "    entra_keys.KeyStore.open(sys.argv[1])\n"
        "except entra_keys.HardwareUnavailable as e:\n"
        "    print('unavailable:', e)\n"
    )
    src = str(Path(entra_keys.__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tpm_store)], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "TPM2TOOLS_TCTI": "device:/dev/null"},
    ).stdout  # fmt: skip
    assert "holds TPM keys" in out and "tpm2-pytss is not usable" in out


def test_tpm_device_the_user_may_not_open_names_its_group(tpm_store: Path) -> None:
    """Run as nobody (tests run as root, who opens anything): a device node stand-in owned by
    root:tss, mode 660, as /dev/tpmrm0 is on Debian."""
    import grp
    import shutil
    import tempfile

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        tss = grp.getgrnam("tss").gr_gid
    except KeyError:
        tss = 0
    group = grp.getgrgid(tss).gr_name
    base = Path(tempfile.mkdtemp(prefix="entra-keys-perm-"))
    try:
        base.chmod(0o755)
        device = base / "tpmrm0"
        device.write_bytes(b"")
        os.chown(device, 0, tss)
        device.chmod(0o660)
        private = base / "tpm0"  # a node no group may open
        private.write_bytes(b"")
        private.chmod(0o600)
        store = base / "store"
        shutil.copytree(tpm_store, store)
        for path in (store, store / "device.pem"):
            os.chown(path, 65534, 65534)
        code = (
            "import sys, entra_keys\n"
            "for device in sys.argv[1].split(','):\n"
            "    try:\n"
            "        entra_keys.KeyStore.open(sys.argv[2], tcti='device:' + device)\n"
            "    except entra_keys.HardwareUnavailable as e:\n"
            "        print('unavailable:', e)\n"
        )
        src = str(Path(entra_keys.__file__).parent.parent)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", code, f"{device},{private}", str(store)],
            capture_output=True, text=True, check=True,
            env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": str(base)},
        ).stdout  # fmt: skip
    finally:
        shutil.rmtree(base)
    assert f"{device} belongs to group {group}" in out
    assert f"add the user to it (usermod -aG {group} USER)" in out
    assert f"{private} is open to its owner (uid 0) only (mode 600)" in out


# -- a TPM that is named is required: never a fallback to software ------------------------------

#: A TPM that cannot be opened, named each way a caller can name one.
DEAD = "swtpm:path=/nonexistent/entra-keys-sock"
NAMINGS = {
    "tcti argument": ({}, DEAD, "--tcti (tcti=)"),
    "TPM2TOOLS_TCTI": ({"TPM2TOOLS_TCTI": DEAD}, None, "$TPM2TOOLS_TCTI"),
    "TSS2_TCTI": ({"TSS2_TCTI": DEAD}, None, "$TSS2_TCTI"),
}


@pytest.mark.parametrize("naming", NAMINGS)
def test_a_named_tpm_that_cannot_be_opened_is_hardware_unavailable(
    naming: str, no_tpm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--tcti swtpm:path=/nonexistent keys create`` made a software key; now every way of
    naming a TPM makes it a requirement, with the reason, through every API that opens one."""
    env, tcti, by = NAMINGS[naming]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    pattern = rf"the TPM named by {re.escape(by)} \({re.escape(DEAD)}\).*failed.*no fallback"
    with pytest.raises(HardwareUnavailable, match=pattern):
        open_provider(tcti=tcti)
    with pytest.raises(HardwareUnavailable, match=pattern):
        open_provider("auto", tcti=tcti)
    with pytest.raises(HardwareUnavailable, match=pattern):
        entra_keys.KeyStore.open(tmp_path / "store", tcti=tcti)
    assert not (tmp_path / "store").exists()
    assert open_provider("software", tcti=tcti).kind == "software"  # software chosen: no TPM


@pytest.mark.parametrize("naming", NAMINGS)
def test_the_cli_never_makes_a_software_key_for_a_named_tpm(
    naming: str,
    no_tpm: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from entra_keys.cli import main

    env, tcti, by = NAMINGS[naming]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    store = tmp_path / "store"
    argv = ["--store", str(store), *(["--tcti", tcti] if tcti else [])]
    assert main([*argv, "keys", "create", "device", "--type", "ecc256"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"the TPM named by {by} ({DEAD}) cannot be used" in err and "no fallback" in err
    assert not store.exists() or not any(store.iterdir())


def test_the_default_device_alone_still_falls_back(
    no_tpm: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing named: the machine's /dev/tpmrm0 is looked for and its absence logged, as
    before (auto may fall back only here)."""
    with caplog.at_level(logging.WARNING):
        assert open_provider("auto").kind == "software"
    assert "using the software provider" in caplog.text


@pytest.mark.parametrize("naming", NAMINGS)
def test_the_environment_s_software_choice_never_overrides_a_named_tpm(
    naming: str,
    no_tpm: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ENTRA_KEYS_PROVIDER=software`` left in the environment made ``--tcti ... keys create``
    write a software key, exit 0, silently. A TPM named any way is a requirement the variable
    does not undo: HardwareUnavailable naming both, and nothing written; an explicit choice of
    the software provider still gets it."""
    from entra_keys.cli import main

    env, tcti, by = NAMINGS[naming]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("ENTRA_KEYS_PROVIDER", "software")
    pattern = rf"named by {re.escape(by)}, but \$ENTRA_KEYS_PROVIDER chooses the software"
    with pytest.raises(HardwareUnavailable, match=pattern):
        open_provider(tcti=tcti)
    with pytest.raises(HardwareUnavailable, match=pattern):
        entra_keys.KeyStore.open(tmp_path / "store", tcti=tcti)
    store = tmp_path / "store"
    argv = ["--store", str(store), *(["--tcti", tcti] if tcti else [])]
    assert main([*argv, "keys", "create", "device", "--type", "ecc256"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "$ENTRA_KEYS_PROVIDER chooses the software" in err
    assert not store.exists() or not any(store.iterdir())
    assert open_provider("software", tcti=tcti).kind == "software"
