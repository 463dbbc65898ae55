"""The ``entra-keys`` command, run in-process and as a real program, over both providers.

Every test gets its own key store. A TPM test runs against the session swtpm, and afterwards no
transient object may be left in it. Signatures and CSRs are checked by openssl, not by us.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import entra_keys
from entra_keys.cli import main
from entra_keys.formats import REGISTRATION_SUBJECT

from .contract.providers import option_kind
from .helpers import assert_keys_encrypted

SRC = Path(entra_keys.__file__).resolve().parents[1]
MESSAGE = b"the bytes a join agent signs\n"


@dataclass
class Result:
    """What one run of the command left: its exit code and its output."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        assert self.code == 0, self.err
        return json.loads(self.out)


@dataclass
class Cli:
    """``entra-keys`` with the global options of one provider and a store of the test's own."""

    kind: str
    options: list[str]
    store: Path
    capsys: pytest.CaptureFixture[str]

    def argv(self, *args: str) -> list[str]:
        return [*self.options, "--store", str(self.store), *args]

    def __call__(self, *args: str) -> Result:
        """Run in this process, as ``main(argv)``."""
        self.capsys.readouterr()
        code = main(self.argv(*args))
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.code == 0, result.err
        return result.out

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """Run as a program: ``python -m entra_keys.cli``."""
        return run_program(*self.argv(*args), stdin=stdin)


def run_program(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environ = {**(os.environ if env is None else env), "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "entra_keys.cli", *args],
        input=stdin,
        capture_output=True,
        env=environ,
        timeout=60,
        check=False,
    )


def one_error_line(err: str) -> str:
    """The single ``entra-keys: error:`` line a failed command prints, checked to be alone."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("entra-keys: error: "), err
    assert "Traceback" not in err
    return lines[0]


pytestmark = pytest.mark.usefixtures("clean_cli_environment")


@pytest.fixture
def cli(provider_options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The command for each provider in turn (a TPM run must leave no object in the TPM)."""
    kind = option_kind(provider_options)
    return Cli(kind, provider_options, tmp_path / "store", capsys)


@pytest.fixture
def software(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The command with the software provider only (for what needs no TPM to show)."""
    return Cli("software", ["--provider", "software"], tmp_path / "store", capsys)


def public_key(cli: Cli, name: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(cli.ok("keys", "export", name).encode())
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


# -- keys ---------------------------------------------------------------------------------------


def test_create_list_show_delete_round_trip(cli: Cli) -> None:
    hardware = cli.kind == "tpm"
    created = cli.ok("keys", "create", "device", "--type", "ecc256")
    assert re.search(r"KeyName : device$", created, re.MULTILINE)
    assert re.search(rf"HardwareBacked : {'YES' if hardware else 'NO'}$", created, re.MULTILINE)
    cli.ok("keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt")

    listing = cli.ok("keys", "list").splitlines()
    assert listing[0].split() == ["NAME", "TYPE", "USAGE", "PROVIDER", "HARDWARE", "ENCRYPTED"]
    assert [line.split()[:4] for line in listing[1:]] == [
        ["device", "ecc256", "sign", cli.kind],
        ["transport", "rsa2048", "decrypt", cli.kind],
    ]
    listed = cli.ok("--json", "keys", "list")
    assert [(k["name"], k["hardware_backed"]) for k in json.loads(listed)["keys"]] == [
        ("device", hardware),
        ("transport", hardware),
    ]

    shown = json.loads(cli.ok("--json", "keys", "show", "device"))
    assert shown["type"] == "ecc256" and shown["usage"] == "sign"
    assert shown["provider"] == cli.kind and shown["hardware_backed"] is hardware
    assert shown["encrypted"] is False
    assert Path(shown["path"]) == cli.store / "device.pem" and Path(shown["path"]).is_file()
    jwk = json.loads(cli.ok("keys", "export", "device", "--format", "jwk"))
    assert shown["jwk_thumbprint"] == jwk["kid"]
    assert serialization.load_pem_public_key(shown["public_key_pem"].encode()) == public_key(
        cli, "device"
    )
    text = cli.ok("keys", "show", "device")
    assert f"JwkThumbprint : {jwk['kid']}" in text
    assert "-----BEGIN PUBLIC KEY-----" in text

    assert cli.ok("keys", "delete", "device").startswith("Deleted key 'device'")
    assert [k["name"] for k in json.loads(cli.ok("--json", "keys", "list"))["keys"]] == [
        "transport"
    ]
    gone = cli("keys", "show", "device")
    assert gone.code == 1 and gone.out == ""
    assert "no key 'device'" in one_error_line(gone.err)


def test_create_refuses_a_duplicate_unless_replace(cli: Cli) -> None:
    cli.ok("keys", "create", "device", "--type", "ecc256")
    before = public_key(cli, "device")
    again = cli("keys", "create", "device", "--type", "ecc256")
    assert again.code == 1 and again.out == ""
    assert "already exists" in one_error_line(again.err)
    assert public_key(cli, "device") == before
    cli.ok("keys", "create", "device", "--type", "ecc384", "--replace")
    replaced = public_key(cli, "device")
    assert isinstance(replaced, ec.EllipticCurvePublicKey) and replaced.curve.name == "secp384r1"


def test_export_rsa_key_in_every_format(cli: Cli) -> None:
    cli.ok("keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt")
    pem = public_key(cli, "transport")
    assert isinstance(pem, rsa.RSAPublicKey) and pem.key_size == 2048
    numbers = pem.public_numbers()

    der = cli.run("keys", "export", "transport", "--format", "der")
    assert der.returncode == 0, der.stderr
    assert serialization.load_der_public_key(der.stdout) == pem

    jwk = json.loads(cli.ok("keys", "export", "transport", "--format", "jwk"))
    assert set(jwk) == {"kty", "n", "e", "kid"}
    assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
    n = base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4))
    assert int.from_bytes(n, "big") == numbers.n

    blob = base64.b64decode(cli.ok("keys", "export", "transport", "--format", "bcrypt"))
    assert len(blob) == 283
    assert blob[:4] == b"RSA1" and int.from_bytes(blob[4:8], "little") == 2048
    assert blob[24:27] == b"\x01\x00\x01" and int.from_bytes(blob[27:], "big") == numbers.n

    wrapped = json.loads(cli.ok("--json", "keys", "export", "transport", "--format", "bcrypt"))
    assert base64.b64decode(wrapped["data"]) == blob


def test_export_ec_key_as_jwk_but_not_as_bcrypt_blob(cli: Cli) -> None:
    cli.ok("keys", "create", "device", "--type", "ecc256")
    point = public_key(cli, "device")
    assert isinstance(point, ec.EllipticCurvePublicKey)
    jwk = json.loads(cli.ok("keys", "export", "device", "--format", "jwk"))
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    x = base64.urlsafe_b64decode(jwk["x"] + "=")
    assert len(x) == 32 and int.from_bytes(x, "big") == point.public_numbers().x
    refused = cli("keys", "export", "device", "--format", "bcrypt")
    assert refused.code == 1 and refused.out == ""
    assert "RSA" in one_error_line(refused.err)


def test_rsa3072_key_exports_a_larger_bcrypt_blob(cli: Cli) -> None:
    cli.ok("keys", "create", "device", "--type", "rsa3072")
    assert json.loads(cli.ok("--json", "keys", "show", "device"))["type"] == "rsa3072"
    blob = base64.b64decode(cli.ok("keys", "export", "device", "--format", "bcrypt"))
    assert len(blob) == 24 + 3 + 384


# -- csr, sign ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "subject"),
    [("rsa2048", None), ("ecc256", "CN=device-42,O=Contoso,C=US")],
)
def test_csr_is_signed_by_the_key_and_openssl_verifies_it(
    cli: Cli, tmp_path: Path, key_type: str, subject: str | None
) -> None:
    cli.ok("keys", "create", "device", "--type", key_type)
    extra = [] if subject is None else ["--subject", subject]
    pem = cli.ok("csr", "device", *extra)
    path = tmp_path / "device.csr"
    path.write_text(pem)
    checked = subprocess.run(
        ["openssl", "req", "-in", str(path), "-verify", "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.subject.rfc4514_string() == (subject or REGISTRATION_SUBJECT)
    assert csr.public_key() == public_key(cli, "device")


def test_csr_with_a_bad_subject_is_an_error(software: Cli) -> None:
    software.ok("keys", "create", "device", "--type", "ecc256")
    bad = software("csr", "device", "--subject", "no equals sign")
    assert bad.code == 1 and bad.out == ""
    assert "RFC 4514" in one_error_line(bad.err)


OPENSSL_PSS = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]


@pytest.mark.parametrize(
    ("key_type", "alg", "digest", "sigopts"),
    [
        ("rsa2048", "RS256", "-sha256", []),
        ("rsa2048", "PS256", "-sha256", OPENSSL_PSS),
        ("ecc256", "ES256", "-sha256", []),
        ("ecc384", "ES384", "-sha384", []),
    ],
)
def test_signature_verifies_with_openssl(
    cli: Cli, tmp_path: Path, key_type: str, alg: str, digest: str, sigopts: list[str]
) -> None:
    cli.ok("keys", "create", "device", "--type", key_type)
    (tmp_path / "pub.pem").write_text(cli.ok("keys", "export", "device"))
    (tmp_path / "data").write_bytes(MESSAGE)
    sig = tmp_path / "sig"
    cli.ok("sign", "device", "--alg", alg, "--in", str(tmp_path / "data"), "--out", str(sig))
    checked = subprocess.run(
        ["openssl", "dgst", digest, "-verify", "pub.pem", *sigopts, "-signature", "sig", "data"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Verified OK" in checked.stdout


def test_sign_reads_stdin_and_writes_stdout(cli: Cli, tmp_path: Path) -> None:
    cli.ok("keys", "create", "device", "--type", "ecc256")
    (tmp_path / "pub.pem").write_text(cli.ok("keys", "export", "device"))
    (tmp_path / "data").write_bytes(MESSAGE)
    done = cli.run("sign", "device", "--alg", "ES256", "--in", "-", "--out", "-", stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    (tmp_path / "sig").write_bytes(done.stdout)
    checked = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "data"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_sign_with_a_decryption_key_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    cli.ok("keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt")
    (tmp_path / "data").write_bytes(MESSAGE)
    out = tmp_path / "sig"
    refused = cli("sign", "transport", "--alg", "RS256", "--in", str(tmp_path / "data"),
                  "--out", str(out))  # fmt: skip
    assert refused.code == 1 and refused.out == ""
    assert "created to decrypt, not to sign" in one_error_line(refused.err)
    assert not out.exists()


def test_sign_errors_are_one_line(software: Cli, tmp_path: Path) -> None:
    software.ok("keys", "create", "device", "--type", "rsa2048")
    (tmp_path / "data").write_bytes(MESSAGE)
    mismatch = software("sign", "device", "--alg", "ES256", "--in", str(tmp_path / "data"))
    assert mismatch.code == 1
    assert "needs an elliptic-curve key" in one_error_line(mismatch.err)
    missing = software("sign", "device", "--alg", "RS256", "--in", str(tmp_path / "nope"))
    assert missing.code == 1
    assert "cannot read" in one_error_line(missing.err)
    unwritable = software("sign", "device", "--alg", "RS256", "--in", str(tmp_path / "data"),
                          "--out", str(tmp_path / "no" / "such" / "dir"))  # fmt: skip
    assert unwritable.code == 1
    assert "cannot write" in one_error_line(unwritable.err)


# -- status -------------------------------------------------------------------------------------


def test_status_describes_the_provider_and_sign_tests_every_key(cli: Cli) -> None:
    cli.ok("keys", "create", "device", "--type", "ecc256")
    cli.ok("keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt")
    text = cli.ok("status")
    assert re.search(r"^\+-+\+$", text, re.MULTILINE)

    def field(name: str) -> str:
        found = re.search(rf"^ *{name} : (.*)$", text, re.MULTILINE)
        assert found, f"no {name} line in:\n{text}"
        return found.group(1)

    assert field("Provider") == cli.kind
    assert field("TpmProtected") == ("YES" if cli.kind == "tpm" else "NO")
    assert field("KeySignTest") == "PASSED"
    assert field("KeyCount") == "2"
    if cli.kind == "tpm":
        assert field("TpmManufacturer") == "IBM"  # swtpm's
        assert field("TpmSpecVersion").startswith("2.0")
        assert field("StorageKey").startswith("0x")

    status = cli("--json", "status").json()
    assert isinstance(status, dict)
    assert status["provider"]["kind"] == cli.kind
    assert status["provider"]["tpm_protected"] is (cli.kind == "tpm")
    assert [key["name"] for key in status["keys"]] == ["device", "transport"]
    assert status["key_sign_test"] == {"result": "PASSED", "tested": ["device"], "failures": []}


def test_status_fails_when_a_key_cannot_sign(
    software: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "correct horse")
    software.ok("keys", "create", "locked", "--type", "ecc256")
    monkeypatch.delenv("ENTRA_KEYS_PASSPHRASE")
    failed = software("status")
    assert failed.code == 1
    assert re.search(r"KeySignTest : FAILED$", failed.out, re.MULTILINE)
    assert re.search(r"KeySignTestError : locked: .*passphrase", failed.out, re.MULTILINE)
    report = json.loads(software("--json", "status").out)
    assert report["key_sign_test"]["result"] == "FAILED"
    assert report["key_sign_test"]["failures"][0]["name"] == "locked"


# -- passphrase, provider choice, usage errors -------------------------------------------------


def test_software_keys_are_encrypted_with_the_passphrase_from_the_environment(
    software: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "correct horse")
    created = software("keys", "create", "device", "--type", "ecc256")
    assert created.code == 0 and "correct horse" not in created.out + created.err
    assert json.loads(software.ok("--json", "keys", "show", "device"))["encrypted"] is True
    assert b"ENCRYPTED PRIVATE KEY" in (software.store / "device.pem").read_bytes()
    (tmp_path / "data").write_bytes(MESSAGE)
    software.ok("sign", "device", "--alg", "ES256", "--in", str(tmp_path / "data"),
                "--out", str(tmp_path / "sig"))  # fmt: skip

    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "wrong")
    wrong = software("keys", "show", "device")
    assert wrong.code == 1
    assert "passphrase" in one_error_line(wrong.err) and "correct horse" not in wrong.err
    monkeypatch.delenv("ENTRA_KEYS_PASSPHRASE")
    missing = software("keys", "export", "device")
    assert missing.code == 1 and "passphrase" in one_error_line(missing.err)


def test_every_key_the_cli_creates_is_under_the_passphrase(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keys create`` and ``attest ak create`` both encrypt a software key file under the store
    passphrase (the AK was written in the clear); a TPM key file takes none."""
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "correct horse")
    cli.ok("keys", "create", "device", "--type", "ecc256")
    cli.ok("attest", "ak", "create", "ak")
    if cli.kind == "software":
        with entra_keys.open_provider("software") as provider:
            store = entra_keys.KeyStore(provider, cli.store)
            assert assert_keys_encrypted(store, b"correct horse") == ["ak", "device"]
        return
    for name in ("ak", "device"):
        assert b"-----BEGIN TSS2 PRIVATE KEY-----" in (cli.store / f"{name}.pem").read_bytes()
    assert json.loads(cli.ok("--json", "keys", "show", "ak"))["encrypted"] is False


def test_tpm_keys_ignore_the_passphrase(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "correct horse")
    cli.ok("keys", "create", "device", "--type", "ecc256")
    shown = json.loads(cli.ok("--json", "keys", "show", "device"))
    assert shown["encrypted"] is (cli.kind == "software")


def test_unknown_key_is_one_error_line_from_the_program(software: Cli) -> None:
    done = software.run("keys", "show", "nosuchkey")
    assert done.returncode == 1 and done.stdout == b""
    assert "no key 'nosuchkey'" in one_error_line(done.stderr.decode())


def test_unreachable_tpm_is_one_error_line(tmp_path: Path) -> None:
    """Not even libtss2's own log lines reach stderr: only the command's one error line."""
    done = run_program("--provider", "tpm", "--tcti", f"swtpm:path={tmp_path / 'no-sock'}",
                       "--store", str(tmp_path / "store"), "keys", "list")  # fmt: skip
    assert done.returncode == 1 and done.stdout == b""
    assert "cannot open the TPM" in one_error_line(done.stderr.decode())


def test_without_a_tpm_the_software_fallback_is_announced(tmp_path: Path) -> None:
    if os.path.exists("/dev/tpmrm0"):
        pytest.skip("this machine has a TPM: there is no fallback to see")
    env = {k: v for k, v in os.environ.items() if k not in ("TPM2TOOLS_TCTI", "TSS2_TCTI")}
    done = run_program("--store", str(tmp_path / "store"), "status", env=env)
    assert done.returncode == 0, done.stderr
    assert b"using the software provider" in done.stderr
    assert re.search(rb"TpmProtected : NO$", done.stdout, re.MULTILINE)


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "device", "--type", "rsa1024"],
        ["keys", "create", "device"],
        ["keys", "export", "device", "--format", "pkcs12"],
        ["sign", "device", "--alg", "HS256"],
        ["--provider", "hsm", "status"],
        ["keys"],
        [],
    ],
)
def test_usage_errors_exit_2(
    software: Cli, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", str(software.store), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: entra-keys" in err
    assert not software.store.exists()


def test_program_help_and_version() -> None:
    helped = run_program("--help")
    assert helped.returncode == 0
    for command in (b"status", b"keys", b"csr", b"sign"):
        assert command in helped.stdout
    version = run_program("--version")
    assert version.returncode == 0
    assert version.stdout.decode().strip() == f"entra-keys {entra_keys.__version__}"
    bad = run_program("keys", "create", "x", "--type", "rsa1024")
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
