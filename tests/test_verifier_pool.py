"""VerifierPool: verification in worker processes gives what the in-process call gives.

Quotes and certifications of both providers (RSA-2048 and P-256 AKs) go through a pool of two
spawned workers; the results equal the in-process ones, and forged attestations are refused with
the same typed error and the same check. The pickling the pool relies on is checked directly.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from entra_keys import KeyType, KeyUsage, Provider
from entra_keys.attestation import TrustPolicy, VerifierPool, verify_certify, verify_quote
from entra_keys.errors import AttestationCheckFailed, Check, MalformedAttestation

NONCE = bytes(range(16))


def _ca_certificate() -> x509.Certificate:
    """A self-signed CA certificate, to put in a policy that must pickle."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pool test CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def pool_policy() -> TrustPolicy:
    return TrustPolicy(allow_software=True, ek_ca_certificates=[_ca_certificate()])


@pytest.fixture(scope="module")
def pool(pool_policy: TrustPolicy) -> Iterator[VerifierPool]:
    with VerifierPool(2, policy=pool_policy) as pool:
        yield pool


def _refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[type[BaseException], Check, str]:
    with pytest.raises(AttestationCheckFailed) as caught:
        call(*args, **kwargs)
    return type(caught.value), caught.value.check, str(caught.value)


def test_policy_and_errors_pickle(pool_policy: TrustPolicy) -> None:
    """The policy (CA certificates included) and the typed errors survive pickling."""
    again = pickle.loads(pickle.dumps(pool_policy))
    assert again.allow_software is True
    assert list(again.ek_ca_certificates()) == list(pool_policy.ek_ca_certificates())
    for error in (AttestationCheckFailed("no", Check.NONCE), MalformedAttestation("short")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert copy.check == error.check
        assert str(copy) == str(error)


@pytest.mark.parametrize("ak_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value)
def test_pool_quote_equals_in_process(
    provider: Provider, pool: VerifierPool, pool_policy: TrustPolicy, ak_type: KeyType
) -> None:
    """A quote verifies through the pool to the in-process result; forged ones are refused with
    the same error and check (signature, nonce, PCR digest, malformed)."""
    ak = provider.create_key(ak_type, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 7], NONCE)
    pcrs = {quote.pcr_bank: quote.pcr_values}
    args = (quote.attest, quote.signature, ak.tpm_public, NONCE, pcrs)
    local = verify_quote(*args, policy=pool_policy)
    remote = pool.verify_quote(*args)
    assert remote == local
    assert remote.attest == local.attest
    assert remote.hardware_backed is local.hardware_backed is False  # not enrolled
    assert list(pool.map([args, args, args])) == [local] * 3

    forged = bytearray(quote.attest)
    forged[-1] ^= 1
    wrong_pcrs = {quote.pcr_bank: {i: b"\xaa" * len(v) for i, v in quote.pcr_values.items()}}
    cases = [
        (bytes(forged), quote.signature, ak.tpm_public, NONCE, pcrs),
        (quote.attest, quote.signature, ak.tpm_public, bytes(16), pcrs),
        (quote.attest, quote.signature, ak.tpm_public, NONCE, wrong_pcrs),
        (quote.attest, quote.signature[:-3], ak.tpm_public, NONCE, pcrs),
    ]
    checks = []
    for case in cases:
        expected = _refusal(verify_quote, *case, policy=pool_policy)
        assert _refusal(pool.verify_quote, *case) == expected
        with pytest.raises(AttestationCheckFailed) as caught:
            list(pool.map([args, case, args]))
        assert (type(caught.value), caught.value.check, str(caught.value)) == expected
        checks.append(expected[1])
    assert checks[:3] == [Check.SIGNATURE, Check.NONCE, Check.PCR_DIGEST]
    assert checks[3] == Check.STRUCTURE


@pytest.mark.parametrize("ak_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value)
def test_pool_certify_equals_in_process(
    provider: Provider, pool: VerifierPool, pool_policy: TrustPolicy, ak_type: KeyType
) -> None:
    """A key certification verifies through the pool (the expected key sent as its SPKI) to the
    in-process result, public key included; a certification of another key is refused alike."""
    ak = provider.create_key(ak_type, KeyUsage.ATTEST)
    key = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
    other = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
    cert = provider.certify(key, ak, NONCE)
    args = (cert.attest, cert.signature, ak.tpm_public, cert.key_public, NONCE)
    local = verify_certify(*args, policy=pool_policy, expected_key=key.public_key())
    remote = pool.verify_certify(*args, expected_key=key.public_key())
    assert remote == local
    assert remote.public_key == key.public_key()
    assert list(pool.map([args], kind="certify")) == [verify_certify(*args, policy=pool_policy)]
    for kwargs in ({"expected_key": other.public_key()},):
        expected = _refusal(verify_certify, *args, policy=pool_policy, **kwargs)
        assert _refusal(pool.verify_certify, *args, **kwargs) == expected
        assert expected[1] == Check.KEY
    other_cert = provider.certify(other, ak, NONCE)
    wrong_name = (cert.attest, cert.signature, ak.tpm_public, other_cert.key_public, NONCE)
    expected = _refusal(verify_certify, *wrong_name, policy=pool_policy)
    assert _refusal(pool.verify_certify, *wrong_name) == expected
    assert expected[1] == Check.NAME
