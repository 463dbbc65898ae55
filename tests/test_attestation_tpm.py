"""Attestation where only a TPM has it: EK certificates from the maker's CA, PCR values the TPM
reports, another TPM's EK refused. What every provider does alike is in
tests/contract/test_attestation.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from entra_keys import (
    AttestationError,
    KeyType,
    KeyUsage,
    Provider,
    open_provider,
)
from entra_keys.testing.swtpm import Swtpm

from .helpers import cached_key

NONCE = bytes(range(32))


def tools(swtpm: Swtpm, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a tpm2-tools command against the session swtpm; raise with its stderr on failure."""
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti}
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done


def test_endorsement_keys_and_their_certificates(tpm_provider: Provider, swtpm: Swtpm) -> None:
    eks = {ek.key_type: ek for ek in tpm_provider.endorsement_keys()}
    # swtpm_setup provisions an RSA-2048 EK (low range) and a P-384 EK (high range).
    assert set(eks) == {KeyType.RSA2048, KeyType.ECC384}
    assert eks[KeyType.RSA2048].handle == 0x81010001
    assert eks[KeyType.RSA2048].nv_index == 0x01C00002
    assert eks[KeyType.ECC384].nv_index == 0x01C00016
    issuer = x509.load_pem_x509_certificate(swtpm.ca_certificates[1].read_bytes())
    for ek in eks.values():
        assert ek.hardware_backed and ek.certificate is not None
        cert = x509.load_der_x509_certificate(ek.certificate)
        assert cert.issuer == issuer.subject
        cert.verify_directly_issued_by(issuer)  # raises if the CA did not sign it


def test_quote_carries_the_pcr_values_the_tpm_reports(
    tpm_provider: Provider, swtpm: Swtpm, tmp_path: Path
) -> None:
    ak = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.ATTEST)
    tools(swtpm, "tpm2_pcrextend", "16:sha256=" + "ab" * 32, cwd=tmp_path)
    quote = tpm_provider.quote(ak, [16], NONCE)
    listed = tools(swtpm, "tpm2_pcrread", "sha256:16", cwd=tmp_path).stdout
    assert quote.pcr_values[16].hex().upper() in listed.upper()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(quote.pcr_values[16])
    assert digest.finalize() in quote.attest  # TPMS_QUOTE_INFO.pcrDigest


def test_ek_of_another_tpm_is_refused(tpm_provider: Provider, tmp_path: Path) -> None:
    other = Swtpm(tmp_path / "other-tpm")
    other.start()
    try:
        with open_provider("tpm", tcti=other.tcti) as provider:
            strangers = provider.endorsement_keys()
    finally:
        other.stop()
    ak = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.ATTEST)
    for stranger in strangers:
        with pytest.raises(AttestationError, match="not the one given"):
            tpm_provider.activate_credential(ak, stranger, b"\x00\x00", b"\x00\x00")
        unprovisioned = dataclasses.replace(stranger, handle=None)  # made from the template
        if stranger.key_type.is_rsa:
            with pytest.raises(AttestationError, match="not the one given"):
                tpm_provider.activate_credential(ak, unprovisioned, b"\x00\x00", b"\x00\x00")
