"""Keys: every provider makes the same keys, signs and decrypts alike, refuses the same calls,
and says where each key lives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from entra_keys import (
    DecryptionError,
    KeyFileCorrupt,
    KeyStore,
    KeyType,
    KeyUsage,
    KeyUsageError,
    Provider,
    TPMAuthFailure,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from entra_keys.provider import EntraPrivateKey

from ..helpers import cached_key

MESSAGE = b"the bytes a join agent signs"
#: Why a key is or is not hardware-backed, as each provider says it.
MADE_HERE = "made in this TPM (fixedTPM, fixedParent, sensitiveDataOrigin)"
SOFTWARE_REASON = "a software key: no TPM"
SHA = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


def pss(h: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)


def oaep(h: hashes.HashAlgorithm, label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=label)


def test_key_is_a_cryptography_key_that_says_where_it_lives(
    provider: Provider, signing_key: EntraPrivateKey
) -> None:
    assert isinstance(signing_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert signing_key.hardware_backed is (provider.kind == "tpm")
    assert signing_key.usage is KeyUsage.SIGN
    assert signing_key.key_size == signing_key.key_type.bits
    assert signing_key.public_key().key_size == signing_key.key_type.bits
    assert signing_key.key_type.value in repr(signing_key)


@pytest.mark.parametrize("hash_name", sorted(SHA))
def test_rsa_pkcs1_and_pss_signatures_verify(
    rsa_signing_key: EntraPrivateKey, hash_name: str
) -> None:
    assert isinstance(rsa_signing_key, rsa.RSAPrivateKey)
    h = SHA[hash_name]
    public = rsa_signing_key.public_key()
    for pad in (padding.PKCS1v15(), pss(h)):
        signature = rsa_signing_key.sign(MESSAGE, pad, h)
        public.verify(signature, MESSAGE, pad, h)  # raises InvalidSignature if wrong
        with pytest.raises(InvalidSignature):
            public.verify(signature, MESSAGE + b"!", pad, h)


@pytest.mark.parametrize("key_type", [KeyType.ECC256, KeyType.ECC384], ids=lambda t: t.value)
def test_ecdsa_signatures_verify(provider: Provider, key_type: KeyType) -> None:
    key = cached_key(provider, key_type, KeyUsage.SIGN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    for h in (hashes.SHA256(), hashes.SHA384()):
        signature = key.sign(MESSAGE, ec.ECDSA(h))
        public.verify(signature, MESSAGE, ec.ECDSA(h))
        with pytest.raises(InvalidSignature):
            public.verify(signature, MESSAGE + b"!", ec.ECDSA(h))


def test_prehashed_digest_signs_like_the_message(rsa_signing_key: EntraPrivateKey) -> None:
    assert isinstance(rsa_signing_key, rsa.RSAPrivateKey)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(MESSAGE)
    signature = rsa_signing_key.sign(
        digest.finalize(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )
    rsa_signing_key.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())


def test_signature_verifies_with_openssl(signing_key: EntraPrivateKey, tmp_path: Path) -> None:
    """An independent verifier (the openssl command) accepts the provider's signatures."""
    if isinstance(signing_key, rsa.RSAPrivateKey):
        signature = signing_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = signing_key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    pub = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pub)
    (tmp_path / "msg").write_bytes(MESSAGE)
    (tmp_path / "sig").write_bytes(signature)
    cmd = ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "msg"]
    ok = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stderr
    (tmp_path / "msg").write_bytes(MESSAGE + b"x")
    bad = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_x509_builder_takes_the_key_as_is(signing_key: EntraPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "entra_keys test")])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(signing_key, hashes.SHA256())
    )
    assert csr.is_signature_valid
    assert csr.public_key() == signing_key.public_key()


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_transport_key_decrypts_rsa_oaep(transport_key: EntraPrivateKey, hash_name: str) -> None:
    assert isinstance(transport_key, rsa.RSAPrivateKey)
    h = hashes.SHA1() if hash_name == "sha1" else hashes.SHA256()
    session_key = bytes(range(32))
    ciphertext = transport_key.public_key().encrypt(session_key, oaep(h))
    assert transport_key.decrypt(ciphertext, oaep(h)) == session_key


def test_ciphertext_that_does_not_decrypt_is_a_typed_value_error(
    transport_key: EntraPrivateKey,
) -> None:
    assert isinstance(transport_key, rsa.RSAPrivateKey)
    h = hashes.SHA1()
    ciphertext = bytearray(transport_key.public_key().encrypt(b"k" * 32, oaep(h)))
    ciphertext[-1] ^= 1
    with pytest.raises(DecryptionError) as info:
        transport_key.decrypt(bytes(ciphertext), oaep(h))
    assert isinstance(info.value, ValueError)
    with pytest.raises(DecryptionError):
        transport_key.decrypt(b"short", oaep(h))


def test_refusals_are_the_same_in_both_providers(
    rsa_signing_key: EntraPrivateKey, transport_key: EntraPrivateKey
) -> None:
    assert isinstance(rsa_signing_key, rsa.RSAPrivateKey)
    assert isinstance(transport_key, rsa.RSAPrivateKey)
    h = hashes.SHA256()
    with pytest.raises(KeyUsageError, match="created to decrypt"):
        transport_key.sign(MESSAGE, padding.PKCS1v15(), h)
    with pytest.raises(KeyUsageError, match="created to sign"):
        rsa_signing_key.decrypt(b"\0" * 256, oaep(h))
    with pytest.raises(UnsupportedAlgorithm, match="SHA-256"):
        rsa_signing_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA1())
    with pytest.raises(UnsupportedAlgorithm, match="salt length"):
        rsa_signing_key.sign(MESSAGE, padding.PSS(padding.MGF1(h), padding.PSS.MAX_LENGTH), h)
    with pytest.raises(UnsupportedAlgorithm, match="MGF1"):
        rsa_signing_key.sign(
            MESSAGE, padding.PSS(padding.MGF1(hashes.SHA384()), padding.PSS.DIGEST_LENGTH), h
        )
    with pytest.raises(UnsupportedAlgorithm, match="prehashed"):
        rsa_signing_key.sign(b"too short", padding.PKCS1v15(), utils.Prehashed(h))
    with pytest.raises(UnsupportedAlgorithm, match="only OAEP"):
        transport_key.decrypt(b"\0" * 256, padding.PKCS1v15())
    with pytest.raises(UnsupportedAlgorithm, match="SHA-1 and SHA-256"):
        transport_key.decrypt(b"\0" * 256, oaep(hashes.SHA384()))
    with pytest.raises(UnsupportedAlgorithm, match="label"):
        transport_key.decrypt(b"\0" * 256, oaep(hashes.SHA1(), label=b"x"))


def test_ec_keys_refuse_ecdh_and_decryption(provider: Provider) -> None:
    key = cached_key(provider, KeyType.ECC256, KeyUsage.SIGN)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(UnsupportedAlgorithm, match="ECDH"):
        key.exchange(ec.ECDH(), peer)
    with pytest.raises(UnsupportedAlgorithm, match="deterministic"):
        key.sign(MESSAGE, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    with pytest.raises(UnsupportedAlgorithm, match="decryption keys are RSA"):
        provider.create_key(KeyType.ECC256, KeyUsage.DECRYPT)


def test_rsa3072_signs(provider: Provider) -> None:
    key = cached_key(provider, KeyType.RSA3072, KeyUsage.SIGN)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072
    signature = key.sign(MESSAGE, pss(hashes.SHA384()), hashes.SHA384())
    key.public_key().verify(signature, MESSAGE, pss(hashes.SHA384()), hashes.SHA384())
    signature = key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA512())
    key.public_key().verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA512())


def test_private_half_exports_only_from_software(
    provider: Provider, signing_key: EntraPrivateKey
) -> None:
    args = (
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if provider.kind == "tpm":
        with pytest.raises(KeyUsageError, match="never leaves the TPM"):
            signing_key.private_bytes(*args)
        with pytest.raises(KeyUsageError):
            signing_key.private_numbers()
    else:
        exported = serialization.load_pem_private_key(signing_key.private_bytes(*args), None)
        assert exported.public_key() == signing_key.public_key()


def test_provider_info_describes_the_provider(provider: Provider) -> None:
    info = provider.info()
    assert info.kind == provider.kind
    assert info.hardware_backed is (provider.kind == "tpm")
    if provider.kind == "tpm":
        assert info.manufacturer == "IBM"  # swtpm reports IBM's manufacturer id
        assert info.spec_version is not None and info.spec_version.startswith("2.0")
        assert info.firmware_version
    else:
        assert info.manufacturer is None


def test_a_key_says_where_it_lives_and_why(provider: Provider, store: KeyStore) -> None:
    """Made in a TPM: hardware, and why; software: never hardware, even with allow_imported."""
    reason = MADE_HERE if provider.hardware_backed else SOFTWARE_REASON
    for usage in (KeyUsage.SIGN, KeyUsage.DECRYPT, KeyUsage.ATTEST):
        made = cached_key(provider, KeyType.RSA2048, usage)
        assert made.hardware_backed is provider.hardware_backed
        assert made.hardware_reason == reason
        store.save(usage.value, made)
        for allow in (False, True):
            key = store.load(usage.value, allow_imported=allow)
            assert key.hardware_backed is provider.hardware_backed
            assert key.hardware_reason == reason
        again = provider.key_from_pem(provider.key_to_pem(key), usage, allow_imported=True)
        assert again.hardware_reason == reason
    assert {i.hardware_backed for i in store.list()} == {provider.hardware_backed}


def test_a_key_file_round_trips_and_the_other_providers_is_refused(
    provider: Provider, other_provider: Provider, signing_key: EntraPrivateKey
) -> None:
    pem = provider.key_to_pem(signing_key)
    assert provider.key_from_pem(pem, KeyUsage.SIGN).public_key() == signing_key.public_key()
    with pytest.raises(KeyFileCorrupt):
        other_provider.key_from_pem(pem, KeyUsage.SIGN)
    with pytest.raises(UnsupportedAlgorithm):
        other_provider.key_to_pem(signing_key)


def test_an_attestation_key_signs_only_attestations(provider: Provider, store: KeyStore) -> None:
    store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    ak = store.load("ak")
    assert ak.usage is KeyUsage.ATTEST and ak.hardware_backed is provider.hardware_backed
    assert isinstance(ak, ec.EllipticCurvePrivateKey)
    with pytest.raises(KeyUsageError, match="created to attest"):
        ak.sign(b"caller data", ec.ECDSA(hashes.SHA256()))
    device = cached_key(provider, KeyType.ECC256, KeyUsage.SIGN)
    with pytest.raises(KeyUsageError):
        provider.quote(device, [0], bytes(16))  # a device key is not an AK


def test_a_pin_guards_a_key(provider: Provider, store: KeyStore, pin_tries: None) -> None:
    """Software has no dictionary-attack counter: a PIN encrypts the file, asked again to load;
    a TPM checks it at each use and counts wrong ones (tests/test_tpm.py: the lockout)."""
    made = store.create("device", KeyType.ECC256, KeyUsage.SIGN, pin=b"1234")
    assert store.info("device").pin
    assert store.info("device").encrypted is not provider.hardware_backed
    with pytest.raises(WrongPassphrase, match="'device'"):
        store.load("device")
    if provider.hardware_backed:  # the TPM checks the PIN when the key is used
        wrong = store.load("device", pin=b"0000")
        assert isinstance(wrong, ec.EllipticCurvePrivateKey)
        with pytest.raises(TPMAuthFailure, match="wrong PIN"):
            wrong.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    else:  # the PIN opens the key file
        with pytest.raises(WrongPassphrase, match="'device'"):
            store.load("device", pin=b"0000")
    good = store.load("device", pin=b"1234")
    assert good.public_key() == made.public_key()
    assert isinstance(good, ec.EllipticCurvePrivateKey)
    signature = good.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    good.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
