"""The ``entra-keys`` command, run in-process and as a real program, over both providers.

Every test gets its own key store. A TPM test runs against the session swtpm, and afterwards no
transient object may be left in it. Signatures and CSRs are checked by openssl, not by us.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import entra_keys
from entra_keys import KeyType, KeyUsage, Provider
from entra_keys.cli import main
from entra_keys.errors import KeyUsageError
from entra_keys.formats import REGISTRATION_SUBJECT
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService

from .contract.providers import option_kind
from .helpers import assert_keys_encrypted, cached_key

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
                       "--store", str(tmp_path / "store"), "status")  # fmt: skip
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


# -- global options in either place -------------------------------------------------------------

GLOBAL_OPTIONS = [
    (["--provider", "software"], "provider", "software"),
    (["--tcti", "swtpm:path=/x/sock"], "tcti", "swtpm:path=/x/sock"),
    (["--store", "/x/store"], "store", "/x/store"),
    (["--passphrase-file", "/x/pass"], "passphrase_file", "/x/pass"),
    (["--json"], "json", True),
    (["-v"], "verbose", True),
    (["--verbose"], "verbose", True),
]


@pytest.mark.parametrize(("option", "dest", "value"), GLOBAL_OPTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize(
    "command", [["status"], ["keys", "list"], ["attest", "ak", "create", "ak"], ["demo"]]
)
def test_every_global_option_is_taken_before_and_after_the_command(
    option: list[str], dest: str, value: object, command: list[str]
) -> None:
    from entra_keys.cli import build_parser

    before = build_parser().parse_args([*option, *command])
    after = build_parser().parse_args([*command, *option])
    nested = build_parser().parse_args([*command[:1], *option, *command[1:]])
    assert getattr(before, dest) == getattr(after, dest) == getattr(nested, dest) == value
    defaults = build_parser().parse_args(command)  # not given: the main parser's default
    assert getattr(defaults, dest) in (None, False)


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["--store", "/a", "status", "--store", "/b"], "store", "/b"),
        (["--provider", "tpm", "keys", "list", "--provider", "software"], "provider", "software"),
        (["keys", "--store", "/a", "list", "--store", "/b"], "store", "/b"),
    ],
)
def test_an_option_given_before_and_after_the_command_takes_the_later(
    argv: list[str], dest: str, value: str
) -> None:
    from entra_keys.cli import build_parser

    assert getattr(build_parser().parse_args(argv), dest) == value


def test_global_options_after_the_command_work_as_before_it(software: Cli, tmp_path: Path) -> None:
    """What the README's own table writes: ``status --json``, ``--store`` and
    ``--passphrase-file`` after the command, ``-v`` after it."""
    secret = tmp_path / "pass"
    secret.write_bytes(b"correct horse\n")
    secret.chmod(0o600)
    store = str(software.store)
    created = software.ok(
        "keys",
        "create",
        "device",
        "--type",
        "ecc256",
        "--provider",
        "software",
        "--store",
        store,
        "--passphrase-file",
        str(secret),
    )
    assert "Encrypted : YES" in created
    document = json.loads(software.ok("status", "--json", "--passphrase-file", str(secret)))
    assert document["key_sign_test"]["result"] == "PASSED"
    assert [key["name"] for key in json.loads(software.ok("keys", "list", "--json"))["keys"]] == [
        "device"
    ]
    quiet = software.run("keys", "show", "nosuchkey")
    verbose = software.run("keys", "show", "nosuchkey", "-v")  # the failure's debug log too
    assert quiet.returncode == verbose.returncode == 1
    assert b"DEBUG" not in quiet.stderr and b"entra-keys: DEBUG: keys failed" in verbose.stderr


# -- a reader that goes away ---------------------------------------------------------------------


def closed_pipe_run(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Run the program with its stdout a pipe whose reader is gone before it writes (as
    ``entra-keys ... | head`` after head exits); its exit status and stderr."""
    environ = {**(os.environ if env is None else env), "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-m", "entra_keys.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away first
    err = process.stderr.read()
    return process.wait(60), err


def test_a_closed_pipe_ends_every_kind_of_output_quietly(software: Cli, tmp_path: Path) -> None:
    software.ok("keys", "create", "device", "--type", "rsa2048")
    store = ["--provider", "software", "--store", str(software.store)]
    for command in (
        ["keys", "list"],
        ["--json", "keys", "list"],
        ["keys", "show", "device"],
        ["keys", "export", "device", "--format", "der"],  # bytes
        ["status"],
        ["--json", "status"],
        ["attest", "ek", "--cert"],
        ["completion", "bash"],
    ):
        code, err = closed_pipe_run(*store, *command)
        assert (code, err) == (141, b""), (command, err.decode())
    code, err = closed_pipe_run("--help")  # argparse drops what it cannot write: quiet too
    assert err == b"" and code in (0, 141)


def test_a_closed_pipe_after_attest_ek_cert_on_a_tpm(swtpm: Swtpm, tmp_path: Path) -> None:
    """The issue's case: ``entra-keys attest ek --cert | head`` ended in a traceback."""
    code, err = closed_pipe_run(
        "--provider",
        "tpm",
        "--tcti",
        swtpm.tcti,
        "--store",
        str(tmp_path / "store"),
        "attest",
        "ek",
        "--cert",
    )
    assert (code, err) == (141, b"")


def test_a_reader_that_stops_after_one_line_sees_no_traceback(swtpm: Swtpm, tmp_path: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} -m entra_keys.cli --provider tpm --tcti {swtpm.tcti} --store "
        f"{tmp_path / 'store'} attest ek --cert | head -1",
        shell=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith(b"# EK ")
    assert done.stderr == b""


# -- keys list reads files only ------------------------------------------------------------------


def test_keys_list_of_a_tpm_store_needs_no_tpm(swtpm: Swtpm, tmp_path: Path) -> None:
    """``keys list`` reads the key files, as ``leave`` does: with the TPM out of reach it still
    lists a TPM store, while a command that uses the keys says the TPM cannot be opened."""
    store = str(tmp_path / "store")
    with entra_keys.open_provider("tpm", tcti=swtpm.tcti) as provider:
        entra_keys.KeyStore(provider, store).create(
            "device", entra_keys.KeyType.ECC256, entra_keys.KeyUsage.SIGN
        )
    gone = ["--tcti", f"swtpm:path={tmp_path / 'no-sock'}", "--store", store]
    for provider_option in ([], ["--provider", "tpm"]):
        done = run_program(*provider_option, *gone, "--json", "keys", "list")
        assert done.returncode == 0, done.stderr
        keys = json.loads(done.stdout)["keys"]
        assert [(k["name"], k["provider"], k["hardware_backed"]) for k in keys] == [
            ("device", "tpm", True)
        ]
    shown = run_program(*gone, "keys", "show", "device")
    assert shown.returncode == 1 and "cannot" in one_error_line(shown.stderr.decode())


# -- messages -------------------------------------------------------------------------------------


def test_already_exists_says_replace_where_the_command_has_it(
    software: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "store passphrase")
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    service = TokenService()
    for command in (
        ["keys", "create", "device", "--type", "rsa2048"],
        ["keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt"],
        ["attest", "ak", "create", "ak"],
        ["seal", "token", "--in", str(secret)],
    ):
        software.ok(*command)
        again = software(*command)
        line = one_error_line(again.err)
        assert again.code == 1 and "already exists; --replace overwrites it" in line, line
        software.ok(*command, "--replace")
    transport = json.loads(software.ok("keys", "export", "transport", "--format", "jwk"))
    key = serialization.load_pem_public_key(software.ok("keys", "export", "transport").encode())
    assert isinstance(key, rsa.RSAPublicKey) and transport["kty"] == "RSA"
    jwe = tmp_path / "jwe"
    jwe.write_text(service.session_key_jwe(key))
    session = ["session", "import", "prt", "--transport-key", "transport", "--in", str(jwe)]
    software.ok(*session)
    line = one_error_line(software(*session).err)
    assert "already exists; --replace overwrites it" in line


def test_a_shared_directory_as_the_store_is_never_told_to_chmod(
    software: Cli, tmp_path: Path
) -> None:
    """``--store /tmp`` advised ``chmod 700`` on /tmp. A shared directory (sticky, writable by
    others, at the top of the tree, or holding directories) is named as such: use a store of
    your own. A directory that is only the user's store still gets the chmod advice."""
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    own.chmod(0o755)
    lib = tmp_path / "lib"
    (lib / "package").mkdir(parents=True)
    lib.chmod(0o755)
    for store, advice in (("/tmp", False), (str(lib), False), (str(own), True)):
        done = main(
            ["--provider", "software", "--store", store, "keys", "create", "k", "--type", "ecc256"]
        )
        line = one_error_line(software.capsys.readouterr().err)
        assert done == 1 and "is open to other users" in line, line
        assert ("chmod 700" in line) is advice, line
        assert ("shared directory: use a directory of your own" in line) is not advice, line
    assert not (lib / "k.pem").exists() and stat.S_IMODE(lib.stat().st_mode) == 0o755


def test_a_pin_file_is_called_a_pin_file(software: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    pin = tmp_path / "pin"
    pin.write_bytes(b"2468\n")
    pin.chmod(0o644)
    done = software("seal", "token", "--in", str(secret), "--pin-file", str(pin))
    line = one_error_line(done.err)
    assert done.code == 1 and f"the PIN file {pin} is open to other users" in line
    assert "passphrase" not in line
    pin.write_bytes(b"\n")
    pin.chmod(0o600)
    line = one_error_line(software("unseal", "token", "--pin-file", str(pin)).err)
    assert f"the PIN file {pin} holds no PIN on its first line" in line


def test_status_has_one_tpm_protected_line(cli: Cli) -> None:
    """Device State's TpmProtected (the device key's) and Provider State's said NO and YES in
    one report: the provider's row is TpmPresent."""
    text = cli.ok("status")  # no device key yet
    assert len(re.findall(r"^ *TpmProtected : ", text, re.MULTILINE)) == 1
    assert re.search(r"^ *TpmProtected : NO$", text, re.MULTILINE)
    present = "YES" if cli.kind == "tpm" else "NO"
    assert re.search(rf"^ *TpmPresent : {present}$", text, re.MULTILINE)


def test_a_tpm_key_s_private_numbers_point_to_jws_sign_and_pyjwt(tpm_provider: Provider) -> None:
    key = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    assert isinstance(key, rsa.RSAPrivateKey)
    for refused in (
        key.private_numbers,
        lambda: key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ):
        with pytest.raises(KeyUsageError, match=r"formats\.jws_sign.*PyJWT") as caught:
            refused()
        assert "never leaves the TPM" in str(caught.value)
    jwt = pytest.importorskip("jwt")  # what the message offers works
    token = jwt.encode({"sub": "device"}, key, algorithm="RS256")
    assert jwt.decode(token, key.public_key(), algorithms=["RS256"]) == {"sub": "device"}


def test_sign_refuses_a_terminal_unless_out_is_explicit(software: Cli, tmp_path: Path) -> None:
    software.ok("keys", "create", "device", "--type", "ecc256")
    (tmp_path / "data").write_bytes(MESSAGE)
    base = [
        "--provider",
        "software",
        "--store",
        str(software.store),
        "sign",
        "device",
        "--alg",
        "ES256",
        "--in",
        str(tmp_path / "data"),
    ]

    def on_a_terminal(*extra: str) -> tuple[int, bytes, bytes]:
        leader, follower = os.openpty()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "entra_keys.cli", *base, *extra],
                stdout=follower,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(SRC)},
                timeout=60,
                check=False,
            )
            os.set_blocking(leader, False)
            try:
                shown = os.read(leader, 4096)
            except BlockingIOError:
                shown = b""
            return done.returncode, shown, done.stderr
        finally:
            os.close(leader)
            os.close(follower)

    code, shown, err = on_a_terminal()
    assert code == 1 and shown == b""
    assert "stdout is a terminal: give --out FILE, or --out -" in one_error_line(err.decode())
    code, shown, err = on_a_terminal("--out", "-")
    assert code == 0 and shown, err
    piped = run_program(*base)  # not a terminal: the signature, as before
    assert piped.returncode == 0 and piped.stdout[:1] == b"\x30"  # DER ECDSA


@pytest.mark.parametrize(
    "argv",
    [
        ["attest", "quote", "--ak", "ak", "--nonce", "zzzz", "--out", "q.json"],
        ["attest", "quote", "--ak", "ak", "--nonce", "00" * 8, "--pcrs", "0,x", "--out", "q"],
        ["attest", "certify", "device", "--ak", "ak", "--nonce", "zzzz", "--out", "c.json"],
        ["verify", "quote", "q.json", "--ak-public", "ak.tpm", "--nonce", "zzzz"],
        ["verify", "certify", "c.json", "--ak-public", "a", "--key-public", "k", "--nonce", "0g"],
        ["session", "derive", "prt", "--ctx", "nothex"],
        ["session", "decrypt", "prt", "--in", "r", "--max-size", "big"],
        ["seal", "s", "--in", "f", "--pcrs", "seven"],
        ["completion", "tcsh"],
    ],
    ids=lambda argv: "-".join(argv[:2]),
)
def test_a_value_of_the_wrong_form_is_a_usage_error_exit_2(
    software: Cli, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ctx nothex`` exited 2 and ``--nonce zzzz`` 1: every value argparse can check the
    form of is a usage error (2), before anything runs."""
    assert main(["--provider", "software", "--store", str(software.store), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: entra-keys" in err and "Traceback" not in err
    assert not software.store.exists()


# -- completion ---------------------------------------------------------------------------------


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command path of the parser that runs something (``keys create``, ``status``...)."""
    from entra_keys.cli import build_parser
    from entra_keys.cli.completion import command_tree

    def leaves(node: Any) -> list[tuple[str, ...]]:
        if not node.commands:
            return [node.path]
        return [leaf for child in node.commands.values() for leaf in leaves(child)]

    return leaves(command_tree(build_parser()))


def bash_complete(script: Path, *words: str) -> list[str]:
    """What bash completes for the words (the last one being typed), with the script."""
    line = " ".join(shlex.quote(w) for w in words)
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); "
            "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _entra_keys; "
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_completes_commands_options_and_choices(
    software: Cli, tmp_path: Path
) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "entra-keys.bash"
    script.write_text(software.ok("completion", "bash"))
    assert bash_complete(script, "entra-keys", "ke") == ["keys"]
    assert bash_complete(script, "entra-keys", "keys", "c") == ["create"]
    assert bash_complete(script, "entra-keys", "keys", "create", "d", "--type", "rsa") == [
        "rsa2048",
        "rsa3072",
    ]
    assert bash_complete(script, "entra-keys", "--store", "/s", "status", "--js") == ["--json"]
    assert bash_complete(script, "entra-keys", "--provider", "s") == ["software"]
    assert bash_complete(script, "entra-keys", "attest", "ak", "create", "a", "--type", "") == [
        "rsa2048",
        "ecc256",
    ]
    assert bash_complete(script, "entra-keys", "completion", "f") == ["fish"]
    top = bash_complete(script, "entra-keys", "")
    assert {path[0] for path in leaf_commands()} <= set(top)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_s_script_names_every_command(software: Cli, shell: str) -> None:
    text = software.ok("completion", shell)
    for path in leaf_commands():
        for word in path:
            assert re.search(rf"\b{re.escape(word)}\b", text), (shell, path)
    option = "-l passphrase-file" if shell == "fish" else "--passphrase-file"
    assert option in text and "rsa3072" in text
    checker = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}
    if shutil.which(checker[shell][0]):
        done = subprocess.run(
            [*checker[shell]], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
    if shell == "zsh":
        assert "bashcompinit" in text and "complete -o default -F _entra_keys entra-keys" in text


# -- --json everywhere --------------------------------------------------------------------------


def test_every_command_prints_one_json_document_with_json(
    software: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command of the parser, run with --json, prints exactly one JSON document (a new
    command must be added here: the list is checked against the parser). ``tpm init`` is run
    on a TPM in test_tpm_init_prints_one_json_document."""
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "store passphrase")
    work = tmp_path
    (work / "data").write_bytes(MESSAGE)
    (work / "secret").write_bytes(b"s3cret")
    (work / "payload.json").write_bytes(b'{"refresh_token": "r", "request_nonce": "n"}')
    tss2 = work / "other-store"
    nonce = "00112233445566778899aabbccddeeff"
    service = TokenService()
    log = Path(__file__).parent / "vectors/realworld/tpm2-tools/event-moklisttrusted.bin"
    steps: dict[tuple[str, ...], list[list[str]]] = {
        ("keys", "create"): [
            ["keys", "create", "device", "--type", "rsa2048"],
            ["keys", "create", "transport", "--type", "rsa2048", "--usage", "decrypt"],
        ],
        ("keys", "list"): [["keys", "list"]],
        ("keys", "show"): [["keys", "show", "device"]],
        ("keys", "export"): [["keys", "export", "device", "--format", "der"]],
        ("csr",): [["csr", "device"]],
        ("sign",): [["sign", "device", "--alg", "RS256", "--in", str(work / "data")]],
        ("attest", "ak", "create"): [["attest", "ak", "create", "ak"]],
        ("attest", "ek"): [["attest", "ek", "--cert"]],
        ("attest", "quote"): [
            ["attest", "quote", "--ak", "ak", "--nonce", nonce, "--out", str(work / "quote.json")],
            ["attest", "quote", "--ak", "ak", "--nonce", nonce, "--out", "-"],
        ],
        ("attest", "certify"): [
            [
                "attest",
                "certify",
                "device",
                "--ak",
                "ak",
                "--nonce",
                nonce,
                "--out",
                str(work / "certify.json"),
            ]
        ],
        ("attest", "eventlog"): [["attest", "eventlog", "--in", str(log)]],
        ("verify", "quote"): [
            [
                "verify",
                "quote",
                str(work / "quote.json"),
                "--ak-public",
                str(work / "ak.tpm"),
                "--nonce",
                nonce,
                "--allow-software",
            ]
        ],
        ("verify", "certify"): [
            [
                "verify",
                "certify",
                str(work / "certify.json"),
                "--ak-public",
                str(work / "ak.tpm"),
                "--key-public",
                str(work / "device.pem"),
                "--nonce",
                nonce,
                "--allow-software",
            ]
        ],
        ("session", "import"): [
            ["session", "import", "prt", "--transport-key", "transport", "--in", str(work / "jwe")]
        ],
        ("session", "derive"): [["session", "derive", "prt", "--ctx", "00" * 24]],
        ("session", "sign"): [["session", "sign", "prt", "--in", str(work / "payload.json")]],
        ("session", "decrypt"): [["session", "decrypt", "prt", "--in", str(work / "reply")]],
        ("seal",): [["seal", "token", "--in", str(work / "secret")]],
        ("unseal",): [["unseal", "token"]],
        ("status",): [["status"]],
        ("keys", "import"): [],  # a TSS2 key file: test_keys_import_prints_one_json_document
        ("tpm", "init"): [],  # a TPM's: test_tpm_init_prints_one_json_document
        ("keys", "delete"): [["keys", "delete", "device"]],
        ("leave",): [["leave"]],
        ("completion",): [["completion", "fish"]],
        ("demo",): [["--store", str(tss2), "demo"]],
    }
    assert sorted(steps) == sorted(leaf_commands())
    del tss2
    for path, runs in steps.items():
        for argv in runs:
            if path == ("verify", "quote"):  # the AK's TPM2B_PUBLIC and the key, for verify
                (work / "ak.tpm").write_bytes(
                    base64.b64decode(
                        json.loads(
                            software.ok("--json", "keys", "export", "ak", "--format", "tpm")
                        )["data"]
                    )
                )
                (work / "device.pem").write_text(software.ok("keys", "export", "device"))
            if path == ("session", "import"):
                key = serialization.load_pem_public_key(
                    software.ok("keys", "export", "transport").encode()
                )
                assert isinstance(key, rsa.RSAPublicKey)
                (work / "jwe").write_text(service.session_key_jwe(key))
                (work / "reply").write_text(service.encrypt_response(b'{"a": 1}'))
            result = (
                software("--json", *argv)
                if argv[0] != "--store"
                else software(*argv[:2], "--json", *argv[2:])
            )
            assert result.code == 0, (argv, result.err)
            document = json.loads(result.out)  # one document, nothing before or after it
            assert isinstance(document, dict), argv


def test_tpm_init_prints_one_json_document(own_swtpm: Swtpm, tmp_path: Path) -> None:
    argv = ["--provider", "tpm", "--tcti", own_swtpm.tcti, "--store", str(tmp_path / "s")]
    first = run_program(*argv, "tpm", "init", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "storage_root_key": "0x81000001",
        "persisted": True,
        "no_longer_load": [],
    }
    again = json.loads(run_program(*argv, "--json", "tpm", "init").stdout)
    assert again["persisted"] is False


def test_keys_import_prints_one_json_document(
    tpm_provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TSS2 key file of another store, imported with --json."""
    other = entra_keys.KeyStore(tpm_provider, tmp_path / "other")
    other.create("device", KeyType.ECC256, KeyUsage.SIGN)
    key_file = tmp_path / "other" / "device.pem"
    tcti = getattr(tpm_provider, "tcti", None)
    assert isinstance(tcti, str)
    code = main(
        [
            "--provider",
            "tpm",
            "--tcti",
            tcti,
            "--store",
            str(tmp_path / "store"),
            "keys",
            "import",
            "imported",
            "--in",
            str(key_file),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["name"] == "imported"
