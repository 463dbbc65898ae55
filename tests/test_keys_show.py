"""``entra-keys keys show`` of a key made with a PIN, over both providers: the command cannot
take a PIN, so it describes the key without using it (no dictionary-attack try)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from entra_keys import KeyStore, KeyType, KeyUsage

from .contract.providers import open_apart, option_kind
from .test_cli import Cli

pytestmark = pytest.mark.usefixtures("clean_cli_environment")


@pytest.fixture
def cli(provider_options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The command for each provider in turn (a TPM run must leave no object in the TPM)."""
    return Cli(option_kind(provider_options), provider_options, tmp_path / "store", capsys)


def test_keys_show_describes_a_pin_key_without_its_pin(
    cli: Cli, request: pytest.FixtureRequest
) -> None:
    """It exited 1 for every PIN key ("the key has a PIN; give it"), so it never showed
    ``pin: true``. A TPM key is only loaded (TPM2_Load asks for no authorization) and shows its
    public key; a software key, encrypted under its PIN, is described from its file."""
    with open_apart(cli.kind, request) as provider:
        key = KeyStore(provider, cli.store).create("ngc", KeyType.ECC256, KeyUsage.SIGN, pin=b"13")
        expected = key.public_key()
    shown = json.loads(cli.ok("--json", "keys", "show", "ngc"))
    assert shown["pin"] is True and shown["type"] == "ecc256" and shown["usage"] == "sign"
    text = cli.ok("keys", "show", "ngc")
    assert re.search(r"PinProtected\s*: YES", text)
    if cli.kind == "software":
        assert shown["public_key_pem"] is None and shown["jwk_thumbprint"] is None
        assert "(encrypted under its PIN)" in text
    else:
        assert serialization.load_pem_public_key(shown["public_key_pem"].encode()) == expected
