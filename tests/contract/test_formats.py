"""Formats with provider keys: what tests/test_formats.py checks with software keys only.

(The CSR, JWK, BCRYPT blob, raw-signature and JWS tests there already take ``signing_key`` from
each provider.)
"""

from __future__ import annotations

import pytest

from entra_keys import KeyType, KeyUsageError, UnsupportedAlgorithm
from entra_keys.formats import algorithms_for, build_csr
from entra_keys.provider import EntraPrivateKey

ALGORITHMS = {
    KeyType.RSA2048: ("RS256", "PS256"),
    KeyType.ECC256: ("ES256",),
    KeyType.ECC384: ("ES384",),
}


def test_a_csr_is_signed_through_the_keys_own_sign(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey
) -> None:
    # Only the key's own sign() refuses a decryption key: pyca's builder alone would not.
    with pytest.raises(KeyUsageError, match="created to decrypt"):
        build_csr(transport_key)
    with pytest.raises(UnsupportedAlgorithm, match="private key"):
        build_csr(rsa_signing_key.public_key())  # type: ignore[arg-type]
    csr = build_csr(rsa_signing_key)
    assert csr.is_signature_valid and csr.public_key() == rsa_signing_key.public_key()


def test_algorithms_for_each_key_type(signing_key: EntraPrivateKey) -> None:
    expected = ALGORITHMS[signing_key.key_type]
    assert algorithms_for(signing_key) == expected
    assert algorithms_for(signing_key.public_key()) == expected
