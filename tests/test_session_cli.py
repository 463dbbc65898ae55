"""The ``entra-keys session`` commands over both providers: import, derive, sign, decrypt.

Each test gets its own store holding the transport key; the token-service stand-in plays Entra.
A failed command prints one ``entra-keys: error:`` line and exits 1; a usage error exits 2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_keys import KeyStore, KeyType, KeyUsage, open_provider
from entra_keys._json import MAX_JSON_SIZE, b64url_decode
from entra_keys.testing.token_service import TokenService

from .contract.providers import open_apart, option_kind
from .helpers import cached_key, kbkdf
from .test_cli import Cli, one_error_line, run_program

RESPONSE = b'{"access_token":"eyJ0-secret","refresh_token":"0.AXk"}'


pytestmark = pytest.mark.usefixtures("clean_cli_environment")


@pytest.fixture
def cli(
    provider_options: list[str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """The command for each provider, with the session's transport key stored as 'transport'
    (a TPM run must leave no object in the TPM)."""
    store = tmp_path / "store"
    kind = option_kind(provider_options)
    with open_apart(kind, request) as provider:
        KeyStore(provider, store).save(
            "transport", cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        )
    return Cli(kind, provider_options, store, capsys)


def transport_public(cli: Cli) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(cli.ok("keys", "export", "transport").encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _json(cli: Cli, *args: str) -> str:
    return cli.ok("--json", *args)


def imported(cli: Cli, tmp_path: Path, name: str = "prt") -> TokenService:
    service = TokenService()
    jwe = write(tmp_path / "jwe.txt", service.session_key_jwe(transport_public(cli)) + "\n")
    cli.ok("session", "import", name, "--transport-key", "transport", "--in", jwe)
    return service


def test_inputs_are_read_only_up_to_a_json_document(cli: Cli, tmp_path: Path) -> None:
    """import, sign and derive --payload read their whole input: /dev/zero (or a huge file, or
    stdin) until memory ran out, then a MemoryError traceback. Each reads one byte past
    MAX_JSON_SIZE (1 MiB, the most a token response or a payload may be) and refuses it in one
    line; stdin too. A document of exactly MAX_JSON_SIZE bytes is read."""
    imported(cli, tmp_path)
    huge = write(tmp_path / "huge", b" " * (MAX_JSON_SIZE + 1))
    commands = {
        "session_key_jwe": ["session", "import", "other", "--transport-key", "transport"],
        "payload": ["session", "sign", "prt"],
    }
    for source in ("/dev/zero", huge):
        for what, command in commands.items():
            result = cli(*command, "--in", source)
            assert result.code == 1
            assert f"more than {MAX_JSON_SIZE} bytes, the limit for the {what}" in (
                one_error_line(result.err)
            )
        result = cli("session", "derive", "prt", "--ctx", "00" * 24, "--payload", source)
        assert result.code == 1 and f"more than {MAX_JSON_SIZE}" in one_error_line(result.err)
    done = cli.run("session", "sign", "prt", "--in", "-", stdin=b"{" * (MAX_JSON_SIZE + 5))
    assert done.returncode == 1 and done.stderr.count(b"\n") == 1, done.stderr
    assert f"more than {MAX_JSON_SIZE} bytes".encode() in done.stderr
    # The control: the largest payload taken is signed.
    payload = b'{"a":"' + b"x" * (MAX_JSON_SIZE - 8) + b'"}'
    assert len(payload) == MAX_JSON_SIZE
    token = cli.ok("session", "sign", "prt", "--in", write(tmp_path / "max", payload)).strip()
    assert b64url_decode(token.split(".")[1]) == payload
    assert "other" not in cli.ok("keys", "list")


def test_import_derive_sign_decrypt(cli: Cli, tmp_path: Path) -> None:
    service = imported(cli, tmp_path)
    keys = json.loads(_json(cli, "keys", "list"))
    prt = next(k for k in keys["keys"] if k["name"] == "prt")
    assert (prt["type"], prt["usage"]) == ("hmac-sha256", "derive")
    assert prt["hardware_backed"] is (cli.kind == "tpm")

    ctx = os.urandom(24)
    out = cli.ok("session", "derive", "prt", "--ctx", ctx.hex(), "--kdf", "1")
    assert out == kbkdf(service.session_key, ctx).hex() + "\n"
    assert cli.ok("session", "derive", "prt", "--ctx", ctx.hex()) == out  # v1 without a payload

    payload = b'{ "refresh_token": "0.A",\n  "request_nonce": "AwAB" }\n'
    path = write(tmp_path / "payload.json", payload)
    want = kbkdf(service.session_key, hashlib.sha256(ctx + payload).digest()).hex()
    assert cli.ok("session", "derive", "prt", "--ctx", ctx.hex(), "--payload", path) == want + "\n"
    out = cli.ok("session", "derive", "prt", "--ctx", ctx.hex(), "--payload", path, "--kdf", "2")
    assert out == want + "\n"

    token = cli.ok("session", "sign", "prt", "--in", path).strip()
    assert b64url_decode(token.split(".")[1]) == payload  # the file's exact bytes
    assert service.verify_request(token) == {"refresh_token": "0.A", "request_nonce": "AwAB"}

    for mode in ("gcm", "cbc"):
        body = write(tmp_path / f"{mode}.jwe", service.encrypt_response(RESPONSE, mode=mode))
        opened = cli.ok("session", "decrypt", "prt", "--in", body, "--allow-cbc")
        assert opened == RESPONSE.decode()
    # The unauthenticated CBC form only when asked for: whether it opens is an oracle.
    result = cli("session", "decrypt", "prt", "--in", body)
    assert result.code == 1 and "does not decrypt" in one_error_line(result.err)
    # GCM only, when asked: Entra's CBC form is refused with the one decryption failure.
    body = write(tmp_path / "gcm.jwe", service.encrypt_response(RESPONSE, mode="gcm"))
    assert cli.ok("session", "decrypt", "prt", "--in", body, "--require-gcm") == RESPONSE.decode()
    body = write(tmp_path / "cbc.jwe", service.encrypt_response(RESPONSE, mode="cbc"))
    result = cli("session", "decrypt", "prt", "--in", body, "--require-gcm", "--allow-cbc")
    assert result.code == 1 and "does not decrypt" in one_error_line(result.err)
    # Plain JSON is not decrypted, so it is not passed through; the service's error is shown.
    plain = write(tmp_path / "plain.json", RESPONSE)
    result = cli("session", "decrypt", "prt", "--in", plain)
    assert result.code == 1 and "not an encrypted reply" in one_error_line(result.err)
    error = write(
        tmp_path / "error.json", b'{"error":"invalid_grant","error_description":"A\\r\\nB"}'
    )
    result = cli("session", "decrypt", "prt", "--in", error)
    assert result.code == 1 and "'invalid_grant': A B" in one_error_line(result.err)


def test_json_output(cli: Cli, tmp_path: Path) -> None:
    service = TokenService()
    response = json.dumps({"session_key_jwe": service.session_key_jwe(transport_public(cli))})
    document = json.loads(
        _json(
            cli, "session", "import", "prt", "--transport-key", "transport",
            "--in", write(tmp_path / "token_response.json", response),
        )
    )  # fmt: skip
    assert document["name"] == "prt" and document["hardware_backed"] is (cli.kind == "tpm")
    ctx = os.urandom(24)
    derived = json.loads(_json(cli, "session", "derive", "prt", "--ctx", ctx.hex()))
    assert derived == {
        "name": "prt",
        "kdf_ver": 1,
        "derived_key": kbkdf(service.session_key, ctx).hex(),
    }
    signed = json.loads(_json(cli, "session", "sign", "prt", "--in", write(tmp_path / "p", "{}")))
    service.verify_request(signed["jws"])
    body = write(tmp_path / "r.jwe", service.encrypt_response(RESPONSE))
    assert json.loads(_json(cli, "session", "decrypt", "prt", "--in", body)) == {
        "name": "prt",
        "plaintext": RESPONSE.decode(),
    }
    # Only a JSON object comes out (anything else is the one DecryptionError: no oracle).
    body = write(tmp_path / "b.jwe", service.encrypt_response(b'{"a":"\\u00ff"}', mode="cbc"))
    document = json.loads(_json(cli, "session", "decrypt", "prt", "--allow-cbc", "--in", body))
    assert json.loads(document["plaintext"]) == {"a": "\u00ff"}


def test_import_replaces_only_when_asked(cli: Cli, tmp_path: Path) -> None:
    first = imported(cli, tmp_path)
    second = TokenService()
    jwe = write(tmp_path / "second.jwe", second.session_key_jwe(transport_public(cli)))
    result = cli("session", "import", "prt", "--transport-key", "transport", "--in", jwe)
    assert result.code == 1
    assert "already exists" in one_error_line(result.err)
    ctx = os.urandom(24)
    assert cli.ok("session", "derive", "prt", "--ctx", ctx.hex()).strip() == (
        kbkdf(first.session_key, ctx).hex()
    )
    cli.ok("session", "import", "prt", "--transport-key", "transport", "--in", jwe, "--replace")
    assert cli.ok("session", "derive", "prt", "--ctx", ctx.hex()).strip() == (
        kbkdf(second.session_key, ctx).hex()
    )
    cli.ok("keys", "delete", "prt")
    result = cli("session", "derive", "prt", "--ctx", ctx.hex())
    assert result.code == 1 and "no key 'prt'" in one_error_line(result.err)


def test_failures_are_one_error_line(cli: Cli, tmp_path: Path) -> None:
    service = imported(cli, tmp_path)
    other = rsa.generate_private_key(65537, 2048).public_key()
    cases = {
        "not a JWE": write(tmp_path / "garbage", "not a jwe"),
        "another key": write(tmp_path / "other", TokenService().session_key_jwe(other)),
        "not ASCII": write(tmp_path / "binary", b"\xff\xfe"),
        "no such file": str(tmp_path / "missing"),
        "no session_key_jwe": write(tmp_path / "resp.json", '{"refresh_token": "x"}'),
    }
    for what, path in cases.items():
        result = cli("session", "import", "p2", "--transport-key", "transport", "--in", path)
        assert result.code == 1, what
        one_error_line(result.err)
    result = cli(
        "session", "import", "p2", "--transport-key", "nosuch", "--in", cases["another key"]
    )
    assert result.code == 1 and "no key 'nosuch'" in one_error_line(result.err)
    result = cli("session", "derive", "transport", "--ctx", "00")
    assert result.code == 1 and "not a session key" in one_error_line(result.err)
    result = cli("session", "derive", "prt", "--ctx", "00", "--kdf", "2")
    assert result.code == 1 and "--payload" in one_error_line(result.err)
    result = cli("session", "sign", "prt", "--in", write(tmp_path / "bad.json", "[1]"))
    assert result.code == 1 and "JSON object" in one_error_line(result.err)
    sealed = service.encrypt_response(RESPONSE).split(".")
    sealed[4] = sealed[4][:-2] + ("AA" if sealed[4][-2:] != "AA" else "BA")
    result = cli("session", "decrypt", "prt", "--in", write(tmp_path / "t.jwe", ".".join(sealed)))
    assert result.code == 1 and "does not decrypt" in one_error_line(result.err)
    result = cli("session", "decrypt", "prt", "--in", write(tmp_path / "u.jwe", "a.b+.c.d.e"))
    assert result.code == 1 and "base64" in one_error_line(result.err)
    for secret_form in (service.session_key.hex(), base64.b64encode(service.session_key).decode()):
        assert secret_form not in result.err


@pytest.mark.parametrize(
    "args",
    [
        ["session", "derive", "prt", "--ctx", "zz"],
        ["session", "derive", "prt", "--ctx", ""],
        ["session", "derive", "prt", "--ctx", "00", "--kdf", "3"],
        ["session", "derive", "prt"],
        ["session", "import", "prt", "--in", "x"],
        ["session", "sign", "prt"],
        ["session"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from entra_keys.cli import main

    assert main(["--provider", "software", *args]) == 2
    assert "usage:" in capsys.readouterr().err


def test_software_session_key_uses_the_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    provider = open_provider("software")
    KeyStore(provider, store).save(
        "transport", cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
    )
    cli = Cli("software", ["--provider", "software"], store, capsys)
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "correct horse")
    service = imported(cli, tmp_path)
    assert KeyStore(provider, store).info("prt").encrypted
    ctx = os.urandom(24)
    assert cli.ok("session", "derive", "prt", "--ctx", ctx.hex()).strip() == (
        kbkdf(service.session_key, ctx).hex()
    )
    monkeypatch.delenv("ENTRA_KEYS_PASSPHRASE")
    result = cli("session", "derive", "prt", "--ctx", ctx.hex())
    assert result.code == 1 and "passphrase" in one_error_line(result.err)


def test_help_says_derive_is_for_diagnostics() -> None:
    done = run_program("session", "derive", "--help")
    assert done.returncode == 0
    assert b"diagnostics" in done.stdout


def test_decrypt_from_stdin_as_a_program(cli: Cli, tmp_path: Path) -> None:
    service = TokenService()
    jwe = write(tmp_path / "jwe", service.session_key_jwe(transport_public(cli)))
    done = cli.run("session", "import", "prt", "--transport-key", "transport", "--in", jwe)
    assert done.returncode == 0, done.stderr
    body = service.encrypt_response(b'{"a":"binary"}', mode="cbc").encode()
    done = cli.run("session", "decrypt", "prt", "--allow-cbc", "--in", "-", stdin=body)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"a":"binary"}'
