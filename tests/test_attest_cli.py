"""``entra-keys attest`` and ``verify``: over both providers, checked by tpm2-tools as well."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from entra_keys.cli import main
from entra_keys.testing.swtpm import Swtpm

from .helpers import transient_handles

NONCE = "00112233445566778899aabbccddeeff"


@pytest.fixture
def cli(provider_options: list[str], tmp_path: Path) -> list[str]:
    """Global options for each provider (a TPM run must leave no object in the TPM)."""
    return [*provider_options, "--store", str(tmp_path / "store")]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_quote_and_certify_round_trip_through_verify(
    cli: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    software = "software" in cli
    allow = ["--allow-software"] if software else []
    assert run(capsys, *cli, "attest", "ak", "create", "ak")[0] == 0
    assert run(capsys, *cli, "keys", "create", "device", "--type", "ecc256")[0] == 0
    (tmp_path / "ak.pem").write_text(_export(capsys, cli, "ak"))
    (tmp_path / "ak.tpm").write_bytes(_export_tpm(capsys, cli, "ak"))
    (tmp_path / "device.pem").write_text(_export(capsys, cli, "device"))

    quote_file, cert_file = tmp_path / "quote.json", tmp_path / "cert.json"
    code, _, err = run(capsys, *cli, "attest", "quote", "--ak", "ak", "--pcrs", "0,1,7",
                       "--nonce", NONCE, "--out", str(quote_file))  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, *cli, "attest", "certify", "device", "--ak", "ak",
                       "--nonce", NONCE, "--out", str(cert_file))  # fmt: skip
    assert code == 0, err
    assert json.loads(quote_file.read_text())["hardware_backed"] is not software

    verify_quote = ["verify", "quote", str(quote_file), "--ak-public", str(tmp_path / "ak.tpm")]
    code, out, err = run(capsys, "--json", *verify_quote, "--nonce", NONCE, *allow)
    assert code == 0, err
    assert json.loads(out)["valid"] is True
    # No enrollment and no AK certificate: valid, but nothing shows a TPM holds the AK.
    assert json.loads(out)["ak_evidence"] == "unverified"
    assert json.loads(out)["hardware_backed"] is False
    code, out, err = run(capsys, *verify_quote, "--nonce", NONCE, *allow)
    assert code == 0 and "AK: unverified" in out, err
    code, _, err = run(capsys, *verify_quote, "--nonce", "ff" * 16, *allow)
    assert code == 1
    assert err.startswith("entra-keys: error: ") and "nonce" in err
    if software:  # a software quote is refused unless allowed
        code, _, err = run(capsys, *verify_quote, "--nonce", NONCE)
        assert code == 1
        assert "software" in err

    verify_cert = ["verify", "certify", str(cert_file), "--ak-public", str(tmp_path / "ak.tpm")]
    key = ["--key-public", str(tmp_path / "device.pem")]
    code, out, err = run(capsys, *verify_cert, *key, "--nonce", NONCE, *allow)
    assert code == 0, err
    assert "Certification: VALID" in out
    other = ["--key-public", str(tmp_path / "ak.pem")]  # not the certified key
    code, _, err = run(capsys, *verify_cert, *other, "--nonce", NONCE, *allow)
    assert code == 1
    assert len(err.strip().splitlines()) == 1


def _export(capsys: pytest.CaptureFixture[str], cli: list[str], name: str) -> str:
    assert main([*cli, "keys", "export", name, "--format", "pem"]) == 0
    return capsys.readouterr().out


def _export_tpm(capsys: pytest.CaptureFixture[str], cli: list[str], name: str) -> bytes:
    """The key's TPM2B_PUBLIC (``keys export --format tpm``), through --json's base64."""
    assert main([*cli, "--json", "keys", "export", name, "--format", "tpm"]) == 0
    return base64.b64decode(json.loads(capsys.readouterr().out)["data"])


def test_ek_with_certificate_on_the_tpm(
    swtpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--provider", "tpm", "--tcti", swtpm.tcti, "--store", str(tmp_path / "s")]
    code, out, _ = run(capsys, *base, "attest", "ek", "--cert")
    assert code == 0
    assert out.count("-----BEGIN PUBLIC KEY-----") == 2
    assert out.count("-----BEGIN CERTIFICATE-----") == 2
    code, out, _ = run(capsys, *base, "--json", "attest", "ek")
    assert code == 0
    kinds = {ek["key_type"] for ek in json.loads(out)["endorsement_keys"]}
    assert kinds == {"rsa2048", "ecc384"}
    assert transient_handles(swtpm.tcti) == []


def test_tpm2_checkquote_accepts_the_quote_files(
    cli: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cli, "attest", "ak", "create", "ak", "--type", "ecc256"]) == 0
    (tmp_path / "ak.pem").write_text(_export(capsys, cli, "ak"))
    files = tmp_path / "files"
    files.mkdir()
    code = main([*cli, "attest", "quote", "--ak", "ak", "--pcrs", "0,7", "--nonce", NONCE,
                 "--out", str(tmp_path / "q.json"), "--tpm2-tools", str(files)])  # fmt: skip
    assert code == 0
    command = ["tpm2_checkquote", "-u", "ak.pem", "-m", "files/quote.msg", "-s",
               "files/quote.sig", "-f", "files/quote.pcrs", "-g", "sha256"]  # fmt: skip
    checked = subprocess.run(
        [*command, "-q", NONCE], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    other = subprocess.run(  # another nonce is caught: the check can fail
        [*command, "-q", NONCE[::-1]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert other.returncode != 0


@pytest.mark.parametrize("nonce", ["", "00112233445566"], ids=["empty", "7-bytes"])
def test_attest_refuses_short_nonces(
    cli: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, nonce: str
) -> None:
    """An empty or short nonce would let an old attestation be replayed: both providers and
    both commands refuse it, with one error line and status 1, and write nothing."""
    assert run(capsys, *cli, "attest", "ak", "create", "ak")[0] == 0
    assert run(capsys, *cli, "keys", "create", "device", "--type", "ecc256")[0] == 0
    for command in (["quote", "--ak", "ak", "--pcrs", "0"], ["certify", "device", "--ak", "ak"]):
        out = tmp_path / "out.json"
        code, _, err = run(capsys, *cli, "attest", *command, "--nonce", nonce, "--out", str(out))
        assert code == 1 and "at least 8" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
