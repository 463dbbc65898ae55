"""The TPM side of attestation, checked with tpm2-tools and tpm2-pytss as independent parties."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    AttestationError,
    KeyStore,
    KeyType,
    KeyUsage,
    KeyUsageError,
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


def pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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


@pytest.mark.parametrize("ak_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value)
def test_credential_made_by_tpm2_tools_activates(
    tpm_provider: Provider, swtpm: Swtpm, tmp_path: Path, ak_type: KeyType
) -> None:
    """Enrollment: tpm2_makecredential (the verifier's side) against each EK and the AK's name."""
    from tpm2_pytss import TPM2B_PUBLIC, TPMT_PUBLIC

    ak = cached_key(tpm_provider, ak_type, KeyUsage.ATTEST)
    ak_public, _ = TPMT_PUBLIC.unmarshal(ak.tpm_public)  # type: ignore[union-attr]
    ak_name = bytes(ak_public.get_name()).hex()
    for ek in tpm_provider.endorsement_keys():
        ek_public, _ = TPMT_PUBLIC.unmarshal(ek.public)
        (tmp_path / "ek.pub").write_bytes(bytes(TPM2B_PUBLIC(publicArea=ek_public).marshal()))
        secret = os.urandom(32)
        (tmp_path / "secret").write_bytes(secret)
        tools(swtpm, "tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret",
              "-n", ak_name, "-o", "cred", cwd=tmp_path)  # fmt: skip
        blob = (tmp_path / "cred").read_bytes()
        assert blob[:8] == bytes.fromhex("badcc0de00000001")  # tpm2-tools' file header
        size = int.from_bytes(blob[8:10], "big")
        id_object, encrypted_secret = blob[8 : 10 + size], blob[10 + size :]
        got = tpm_provider.activate_credential(ak, ek, id_object, encrypted_secret)
        assert got == secret, ek.key_type
        # A credential made for another AK's name is refused by the TPM.
        other = tpm_provider.create_key(ak_type, KeyUsage.ATTEST)
        with pytest.raises(AttestationError, match="refused the credential"):
            tpm_provider.activate_credential(other, ek, id_object, encrypted_secret)


def test_quote_is_accepted_by_tpm2_checkquote(
    tpm_provider: Provider, swtpm: Swtpm, tmp_path: Path
) -> None:
    ak = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.ATTEST)
    quote = tpm_provider.quote(ak, [0, 1, 7], NONCE)
    assert quote.hardware_backed and quote.pcr_bank == "sha256"
    assert sorted(quote.pcr_values) == [0, 1, 7]
    (tmp_path / "ak.pem").write_bytes(pem(ak.public_key()))
    (tmp_path / "msg").write_bytes(quote.attest)
    (tmp_path / "sig").write_bytes(quote.signature)
    tools(swtpm, "tpm2_checkquote", "-u", "ak.pem", "-m", "msg", "-s", "sig", "-g", "sha256",
          "-q", NONCE.hex(), cwd=tmp_path)  # fmt: skip
    bad = subprocess.run(
        ["tpm2_checkquote", "-u", "ak.pem", "-m", "msg", "-s", "sig", "-g", "sha256",
         "-q", bytes(32).hex()],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0  # the wrong nonce is caught: the check can fail


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


def test_certify_binds_the_key_name_and_nonce(tpm_provider: Provider) -> None:
    from tpm2_pytss import TPM2_ST, TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE

    ak = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.ATTEST)
    device = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    cert = tpm_provider.certify(device, ak, NONCE[:16])
    attest, _ = TPMS_ATTEST.unmarshal(cert.attest)
    assert attest.type == TPM2_ST.ATTEST_CERTIFY
    assert bytes(attest.extraData) == NONCE[:16]
    key_public, _ = TPMT_PUBLIC.unmarshal(cert.key_public)
    assert bytes(attest.attested.certify.name) == bytes(key_public.get_name())
    signature, _ = TPMT_SIGNATURE.unmarshal(cert.signature)
    ak_public = ak.public_key()
    assert isinstance(ak_public, rsa.RSAPublicKey)
    ak_public.verify(
        bytes(signature.signature.rsassa.sig), cert.attest, padding.PKCS1v15(), hashes.SHA256()
    )


def test_attestation_key_signs_only_tpm_structures(tpm_provider: Provider, tmp_path: Path) -> None:
    store = KeyStore(tpm_provider, tmp_path / "store")
    store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    ak = store.load("ak")
    assert ak.usage is KeyUsage.ATTEST and ak.hardware_backed
    assert isinstance(ak, ec.EllipticCurvePrivateKey)
    with pytest.raises(KeyUsageError, match="created to attest"):
        ak.sign(b"caller data", ec.ECDSA(hashes.SHA256()))
    device = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN)
    with pytest.raises(KeyUsageError):
        tpm_provider.quote(device, [0], NONCE)  # a device key is not an AK


def test_nonce_longer_than_a_digest_is_a_typed_error(tpm_provider: Provider) -> None:
    ak = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.ATTEST)
    with pytest.raises(AttestationError, match="at most 32"):
        tpm_provider.quote(ak, [0], bytes(33))
    with pytest.raises(AttestationError, match="at most 32"):
        tpm_provider.certify(ak, ak, bytes(64))


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
