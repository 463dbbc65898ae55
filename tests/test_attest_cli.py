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


def test_verify_reads_each_input_up_to_its_limit(
    cli: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file ``verify`` reads has a limit, found one byte past it: a larger one (here a
    sparse file, as /dev/zero would be endless) is the one-line error naming it, not a
    MemoryError. Each input is swapped for one in turn, the others genuine."""
    allow = ["--allow-software"] if "software" in cli else []
    assert run(capsys, *cli, "attest", "ak", "create", "ak")[0] == 0
    assert run(capsys, *cli, "keys", "create", "device", "--type", "ecc256")[0] == 0
    files = {name: tmp_path / name for name in ("quote", "cert", "ak", "device", "ca", "pcrs")}
    files["ak"].write_bytes(_export_tpm(capsys, cli, "ak"))
    files["device"].write_text(_export(capsys, cli, "device"))
    files["ca"].write_text(_export(capsys, cli, "device"))  # read before it is judged
    files["pcrs"].write_text("{}")
    for command, out in (("quote", files["quote"]), ("certify", files["cert"])):
        extra = ["--pcrs", "0"] if command == "quote" else []
        target = ["--ak", "ak"] if command == "quote" else ["device", "--ak", "ak"]
        code, _, err = run(capsys, *cli, "attest", command, *target, *extra, "--nonce", NONCE,
                           "--out", str(out))  # fmt: skip
        assert code == 0, err
    huge = tmp_path / "huge"
    with huge.open("wb") as f:
        f.truncate(25 * 1024 * 1024)  # past the largest limit (a quote, 24 MiB)

    def quote(**swap: str) -> list[str]:
        given = {"file": str(files["quote"]), "ak": str(files["ak"]), **swap}
        argv = ["verify", "quote", given["file"], "--ak-public", given["ak"]]
        for flag in ("pcr_values", "boot_policy", "event_log", "ak_ca", "ak_cert"):
            if flag in given:
                argv += [f"--{flag.replace('_', '-')}", given[flag]]
        if "ak_cert" in given and "ak_ca" not in given:
            argv += ["--ak-ca", str(files["ca"])]
        return argv

    cases = {
        "quote": quote(file=str(huge)),
        "AK public key": quote(ak=str(huge)),
        "PCR values": quote(pcr_values=str(huge)),
        "boot policy": quote(boot_policy=str(huge)),
        "event log": quote(event_log=str(huge)),
        "AK CA certificate": quote(ak_ca=str(huge)),
        "AK certificate": quote(ak_cert=str(huge)),
        "certification": ["verify", "certify", str(huge), "--ak-public", str(files["ak"]),
                          "--key-public", str(files["device"])],
        "key's public key": ["verify", "certify", str(files["cert"]), "--ak-public",
                             str(files["ak"]), "--key-public", str(huge)],
    }  # fmt: skip
    for what, argv in cases.items():
        code, _, err = run(capsys, *argv, "--nonce", NONCE, *allow)
        assert code == 1, what
        assert err.startswith(f"entra-keys: error: {huge} holds more than"), err
        assert err.rstrip().endswith(f"bytes, the limit for the {what}"), err
        assert len(err.strip().splitlines()) == 1, err
