"""The stand-in registration service refuses what the real one would: stale or foreign proofs."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509

from entra_keys import AttestationError, KeyStore, KeyType, KeyUsage, Provider
from entra_keys.tcg.records import certification_to_json
from entra_keys.testing.registration import RegistrationService


def enrolled(provider: Provider, store: KeyStore, service: RegistrationService) -> object:
    ak = store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    ek = provider.endorsement_keys()[0]
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)
    service.finish_enrollment(ak.tpm_public, provider.activate_credential(ak, ek, blob, secret))
    return ak


def test_certification_nonce_must_be_issued_and_is_used_once(
    provider: Provider, store: KeyStore, ek_cas: list[x509.Certificate]
) -> None:
    service = RegistrationService(ek_ca_certificates=ek_cas, allow_software=True)
    ak = enrolled(provider, store, service)
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    assert store.load("ak").usage is KeyUsage.ATTEST  # an ECC AK reloads

    def attestation(nonce: bytes) -> dict[str, object]:
        proof = json.loads(certification_to_json(provider.certify(device, ak, nonce)))  # type: ignore[arg-type]
        return {"AkPublic": base64.b64encode(ak.tpm_public).decode(),  # type: ignore[attr-defined]
                "DeviceKey": proof, "TransportKey": proof}  # fmt: skip

    with pytest.raises(AttestationError, match="nonce was not issued"):
        service._check_attestation(attestation(b"chosen by device"), device.public_key(), None)  # type: ignore[arg-type]
    nonce = service.issue_nonce()
    # The device key's proof spends the nonce; the transport key's, reusing it, is refused.
    with pytest.raises(AttestationError, match="TransportKey certification's nonce"):
        service._check_attestation(attestation(nonce), device.public_key(), device.public_key())  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match="nonce was not issued"):  # spent: no replay
        service._check_attestation(attestation(nonce), device.public_key(), None)  # type: ignore[arg-type]
