"""The attestation producer: endorsement keys, credential activation, quotes and certifications,
checked by independent parties (tpm2-tools, tpm2-pytss' unmarshalers, pyca) and by the verifier,
which takes software attestations only where its policy allows software."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import AttestationError, HardwareUnavailable, KeyType, KeyUsage, Provider
from entra_keys.attestation import (
    AKEnrollment,
    AKEvidence,
    TrustPolicy,
    verify_certify,
    verify_quote,
)
from entra_keys.tcg import TPMTPublic, make_credential
from entra_keys.tcg.records import quote_from_json, quote_to_json
from entra_keys.tcg.structures import TPMA_OBJECT
from entra_keys.testing.measured_boot import synthetic_boot

from ..helpers import cached_key, stranger_endorsement_key, unavailable

NONCE = bytes(range(32))
AK_TYPES = pytest.mark.parametrize(
    "ak_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value
)
#: What makes an EK: a restricted decryption key made in a TPM (TPM 2.0 EK profile).
EK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
)  # fmt: skip


def tools(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a tpm2-tools command that needs no TPM; raise with its stderr on failure."""
    if shutil.which(args[0]) is None:
        unavailable("tpm2-tools is not installed")
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done


def pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_endorsement_keys_are_restricted_decryption_keys(provider: Provider) -> None:
    eks = provider.endorsement_keys()
    assert KeyType.RSA2048 in {ek.key_type for ek in eks}
    for ek in eks:
        public = TPMTPublic.parse(ek.public)
        assert public.object_attributes & EK_ATTRIBUTES == EK_ATTRIBUTES, ek.key_type
        assert ek.hardware_backed is provider.hardware_backed
    assert provider.endorsement_keys() == eks  # the same EKs each time


@AK_TYPES
def test_a_credential_activates_only_for_the_ak_it_was_made_for(
    provider: Provider, tmp_path: Path, ak_type: KeyType
) -> None:
    """Enrollment: a verifier's credential (tpm2_makecredential -T none, the independent side,
    and entra_keys' own make_credential) against each EK and the AK's name."""
    ak = cached_key(provider, ak_type, KeyUsage.ATTEST)
    ak_name = TPMTPublic.parse(ak.tpm_public).name()
    other_type = KeyType.ECC256 if ak_type is KeyType.RSA2048 else KeyType.RSA2048
    other = cached_key(provider, other_type, KeyUsage.ATTEST)  # another AK, another name
    refused = "refused the credential" if provider.hardware_backed else "integrity check failed"
    for ek in provider.endorsement_keys():
        (tmp_path / "ek.pub").write_bytes(len(ek.public).to_bytes(2, "big") + ek.public)
        secret = os.urandom(32)
        (tmp_path / "secret").write_bytes(secret)
        tools("tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret",
              "-n", ak_name.hex(), "-o", "cred", cwd=tmp_path)  # fmt: skip
        blob = (tmp_path / "cred").read_bytes()
        assert blob[:8] == bytes.fromhex("badcc0de00000001")  # tpm2-tools' file header
        size = int.from_bytes(blob[8:10], "big")
        id_object, encrypted_secret = blob[8 : 10 + size], blob[10 + size :]
        got = provider.activate_credential(ak, ek, id_object, encrypted_secret)
        assert got == secret, ek.key_type
        ours = make_credential(ek.public, ak_name, b"enrolment secret")
        assert provider.activate_credential(ak, ek, *ours) == b"enrolment secret"
        # A credential made for another AK's name is refused.
        with pytest.raises(AttestationError, match=refused):
            provider.activate_credential(other, ek, id_object, encrypted_secret)


def test_an_endorsement_key_that_is_not_the_providers_is_refused(provider: Provider) -> None:
    ak = cached_key(provider, KeyType.RSA2048, KeyUsage.ATTEST)
    stranger = stranger_endorsement_key()
    with pytest.raises(AttestationError, match="endorsement key"):
        provider.activate_credential(ak, stranger, b"\x00\x00", b"\x00\x00")


def test_a_quote_is_accepted_by_tpm2_checkquote(provider: Provider, tmp_path: Path) -> None:
    ak = cached_key(provider, KeyType.RSA2048, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 1, 7], NONCE)
    assert quote.hardware_backed is provider.hardware_backed and quote.pcr_bank == "sha256"
    assert sorted(quote.pcr_values) == [0, 1, 7]
    (tmp_path / "ak.pem").write_bytes(pem(ak.public_key()))  # type: ignore[arg-type]
    (tmp_path / "msg").write_bytes(quote.attest)
    (tmp_path / "sig").write_bytes(quote.signature)
    tools("tpm2_checkquote", "-u", "ak.pem", "-m", "msg", "-s", "sig", "-g", "sha256",
          "-q", NONCE.hex(), cwd=tmp_path)  # fmt: skip
    bad = subprocess.run(
        ["tpm2_checkquote", "-u", "ak.pem", "-m", "msg", "-s", "sig", "-g", "sha256",
         "-q", bytes(32).hex()],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0  # the wrong nonce is caught: the check can fail


def test_certify_binds_the_key_name_and_nonce(provider: Provider) -> None:
    tss = pytest.importorskip("tpm2_pytss")  # its unmarshalers: the independent reader

    ak = cached_key(provider, KeyType.RSA2048, KeyUsage.ATTEST)
    device = cached_key(provider, KeyType.RSA2048, KeyUsage.SIGN)
    cert = provider.certify(device, ak, NONCE[:16])
    assert cert.hardware_backed is provider.hardware_backed
    attest, _ = tss.TPMS_ATTEST.unmarshal(cert.attest)
    assert attest.type == tss.TPM2_ST.ATTEST_CERTIFY
    assert bytes(attest.extraData) == NONCE[:16]
    key_public, _ = tss.TPMT_PUBLIC.unmarshal(cert.key_public)
    assert bytes(attest.attested.certify.name) == bytes(key_public.get_name())
    assert cert.key_public == device.tpm_public
    signature, _ = tss.TPMT_SIGNATURE.unmarshal(cert.signature)
    ak_public = ak.public_key()
    assert isinstance(ak_public, rsa.RSAPublicKey)
    ak_public.verify(
        bytes(signature.signature.rsassa.sig), cert.attest, padding.PKCS1v15(), hashes.SHA256()
    )


@AK_TYPES
def test_an_enrolled_ak_quotes_and_certifies_what_the_verifier_accepts(
    provider: Provider, ek_policy: TrustPolicy, ak_type: KeyType
) -> None:
    """The whole producer against the verifier: enroll the AK against each EK (the TPM's under
    the swtpm's EK CA, software's only where software is allowed), then quote and certify; the
    results claim hardware exactly when the provider has it."""
    ak = cached_key(provider, ak_type, KeyUsage.ATTEST)
    device = cached_key(provider, KeyType.ECC256, KeyUsage.SIGN)
    for ek in provider.endorsement_keys():
        enrollment = AKEnrollment(ak.tpm_public, ek.public, ek.certificate, policy=ek_policy)
        assert enrollment.hardware_backed is provider.hardware_backed
        answer = provider.activate_credential(
            ak, ek, enrollment.credential_blob, enrollment.encrypted_secret
        )
        enrolled = enrollment.finish(answer)
    if not provider.hardware_backed:  # a software enrollment is no evidence of a TPM
        with pytest.raises(AttestationError, match="no evidence of a TPM"):
            TrustPolicy(enrolled_aks=[enrolled], allow_software=True)
    evidence = [enrolled] if provider.hardware_backed else [ak.tpm_public]
    policy = TrustPolicy(enrolled_aks=evidence, allow_software=not provider.hardware_backed)
    quote = provider.quote(ak, [0, 7], NONCE)
    result = verify_quote(quote.attest, quote.signature, ak.tpm_public, NONCE,
                          {quote.pcr_bank: quote.pcr_values}, policy=policy)  # fmt: skip
    assert result.hardware_backed is provider.hardware_backed
    assert result.ak_evidence is AKEvidence.ENROLLED
    cert = provider.certify(device, ak, NONCE)
    certified = verify_certify(cert.attest, cert.signature, ak.tpm_public, cert.key_public,
                               NONCE, policy=policy, expected_key=device.public_key())  # fmt: skip
    assert certified.hardware_backed is provider.hardware_backed
    strict = TrustPolicy(enrolled_aks=evidence, allow_software=True, require_hardware=True)
    if not provider.hardware_backed:
        with pytest.raises(AttestationError, match="requires hardware"):
            verify_certify(cert.attest, cert.signature, ak.tpm_public, cert.key_public, NONCE,
                           policy=strict)  # fmt: skip
    else:
        verify_certify(cert.attest, cert.signature, ak.tpm_public, cert.key_public, NONCE,
                       policy=strict)  # fmt: skip


def test_nonce_longer_than_a_digest_is_a_typed_error(provider: Provider) -> None:
    ak = cached_key(provider, KeyType.RSA2048, KeyUsage.ATTEST)
    with pytest.raises(AttestationError, match="at most 32"):
        provider.quote(ak, [0], bytes(33))
    with pytest.raises(AttestationError, match="at most 32"):
        provider.certify(ak, ak, bytes(64))


def test_a_quote_carries_the_event_log_it_is_given(provider: Provider, tmp_path: Path) -> None:
    """``quote(..., event_log=path)``: the log read after the quote rides with it, through the
    quote's JSON too; without the option there is none; a log that cannot be read is the same
    typed error from every provider."""
    log = synthetic_boot().log()
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(log)
    ak = cached_key(provider, KeyType.RSA2048, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 7], NONCE, event_log=path)
    assert quote.event_log == log
    assert quote_from_json(quote_to_json(quote)) == quote
    assert provider.quote(ak, [0, 7], NONCE).event_log is None
    with pytest.raises(HardwareUnavailable, match="no event log at"):
        provider.quote(ak, [0], NONCE, event_log=tmp_path / "missing")
