"""Several processes on one TPM: the provider's contract through tpm2-abrmd in front of a swtpm
(create, sign, decrypt, EKs, credential activation, quote, certify, session key), two processes
signing at once with no error and no object left behind, and a resource manager's quota refusal
(0xb0902) taken as the TPM's own TPMObjectMemory, with its evict-and-retry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import KeyType, KeyUsage, Provider, TPMObjectMemory, open_provider
from entra_keys.attestation import TrustPolicy, verify_certify, verify_quote
from entra_keys.session import derive_key, import_session_key
from entra_keys.tcg import make_credential
from entra_keys.tcg.public import TPMTPublic
from entra_keys.testing.swtpm import Swtpm, Tabrmd, swtpm_available, tabrmd_available
from entra_keys.testing.token_service import TokenService
from entra_keys.testing.tpm import connection_handles

from .helpers import unavailable

NONCE = bytes(range(16))
ECDSA = ec.ECDSA(hashes.SHA256())
UNVERIFIED = TrustPolicy(allow_unverified_ak=True)


@pytest.fixture
def shared(tabrmd: Tabrmd) -> Iterator[Provider]:
    """A TPM provider over tabrmd; after the test, its key cache flushed, its connection holds
    at most its storage primary (opened when first needed; tabrmd virtualizes handles per
    connection: the check is on its own)."""
    provider = open_provider("tpm", tcti=tabrmd.tcti)
    assert connection_handles(provider) == []  # opening loads nothing
    try:
        yield provider
        provider.connection.flush_cache()  # type: ignore[attr-defined]
        assert len(connection_handles(provider)) <= 1
    finally:
        provider.close()


def test_sign_and_decrypt_through_tabrmd(shared: Provider) -> None:
    rsa_key = shared.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    signature = rsa_key.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    public = rsa_key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())
    ec_key = shared.create_key(KeyType.ECC256, KeyUsage.SIGN)
    ec_public = ec_key.public_key()
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    ec_public.verify(ec_key.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))
    transport = shared.create_key(KeyType.RSA2048, KeyUsage.DECRYPT)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    transport_public = transport.public_key()
    assert isinstance(transport_public, rsa.RSAPublicKey)
    assert transport.decrypt(transport_public.encrypt(b"secret", oaep), oaep) == b"secret"
    again = shared.key_from_pem(shared.key_to_pem(rsa_key), KeyUsage.SIGN)
    assert again.public_key() == public


def test_attestation_through_tabrmd(shared: Provider) -> None:
    ek = next(e for e in shared.endorsement_keys() if e.key_type is KeyType.RSA2048)
    assert ek.require_certificate()
    ak = shared.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    ak_public: bytes = ak.tpm_public  # type: ignore[attr-defined]
    secret = os.urandom(16)
    blob, encrypted = make_credential(ek.public, TPMTPublic.parse(ak_public).name(), secret)
    assert shared.activate_credential(ak, ek, blob, encrypted) == secret
    quote = shared.quote(ak, [0, 1, 7], NONCE, "sha256")
    result = verify_quote(quote.attest, quote.signature, ak_public, NONCE,
                          {"sha256": quote.pcr_values}, policy=UNVERIFIED)  # fmt: skip
    assert result.pcr_values["sha256"] == quote.pcr_values
    key = shared.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    c = shared.certify(key, ak, NONCE)
    verify_certify(c.attest, c.signature, ak_public, c.key_public, NONCE, policy=UNVERIFIED)


def test_session_key_through_tabrmd(shared: Provider) -> None:
    transport = shared.create_key(KeyType.RSA2048, KeyUsage.DECRYPT)
    transport_public = transport.public_key()
    assert isinstance(transport_public, rsa.RSAPublicKey)
    session_key = import_session_key(
        shared, transport, TokenService().session_key_jwe(transport_public)
    )
    derived = derive_key(session_key, b"c" * 24, payload=b"{}")
    assert len(derived) == 32 and derive_key(session_key, b"c" * 24, payload=b"{}") == derived


_WORKER = textwrap.dedent(
    """
    import sys
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from entra_keys import KeyType, KeyUsage, open_provider
    from entra_keys.testing.tpm import connection_handles

    with open_provider("tpm", tcti=sys.argv[1]) as provider:
        assert connection_handles(provider) == []
        key = provider.create_key(KeyType.RSA2048, KeyUsage.SIGN)
        for n in range(int(sys.argv[2])):
            message = b"process %s message %d" % (sys.argv[3].encode(), n)
            signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
            key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        provider.connection.flush_cache()
        assert len(connection_handles(provider)) <= 1, connection_handles(provider)
    print("signed", sys.argv[2])
    """
)


def test_two_processes_sign_at_once(tabrmd: Tabrmd) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, tabrmd.tcti, "25", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert out.strip() == "signed 25"
    # Both closed: a fresh connection finds nothing of theirs, and tabrmd still serves.
    with open_provider("tpm", tcti=tabrmd.tcti) as provider:
        handles = connection_handles(provider)
        assert len(handles) <= 1  # at most this provider's own storage primary


@pytest.fixture
def small_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tabrmd]:
    """tpm2-abrmd with ``--max-transients=1`` (two objects per connection: fewer than the
    provider's budget of three) in front of a swtpm of its own."""
    if not swtpm_available() or not tabrmd_available():
        unavailable("swtpm or tpm2-abrmd (with libtss2-tcti-tabrmd0, dbus-daemon) is missing")
    broker = Tabrmd(Swtpm(tmp_path / "tpm"), max_transients=1)
    broker.start()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", broker.bus_address)
    try:
        yield broker
    finally:
        broker.stop()
        broker.tpm.stop()


def test_a_resource_managers_quota_is_object_memory_and_makes_room(small_quota: Tabrmd) -> None:
    """tpm2-abrmd refuses a third object with its own layer's TPM_RC_OBJECT_MEMORY (0xb0902):
    the provider flushes a kept key and retries, so three keys take turns; with every slot
    pinned the refusal is TPMObjectMemory, never a foreign key."""
    with open_provider("tpm", tcti=small_quota.tcti) as provider:
        provider.OBJECT_MEMORY_WAIT = 0.2  # type: ignore[attr-defined]
        keys = [provider.create_key(KeyType.ECC256, KeyUsage.SIGN) for _ in range(3)]
        pem = provider.key_to_pem(keys[2])
        for _ in range(2):
            for key in keys:
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                key.public_key().verify(key.sign(b"m", ECDSA), b"m", ECDSA)
        second = keys[1]
        assert isinstance(second, ec.EllipticCurvePrivateKey)
        with keys[0].loaded():  # the storage primary and this pin fill the quota
            with pytest.raises(TPMObjectMemory) as full:
                second.sign(b"m", ECDSA)
            assert full.value.rc == 0xB0902
            with pytest.raises(TPMObjectMemory):
                provider.key_from_pem(pem, KeyUsage.SIGN)
        again = provider.key_from_pem(pem, KeyUsage.SIGN)
        assert again.public_key() == keys[2].public_key()


def test_every_layers_object_memory_is_object_memory() -> None:
    """The TPM's 0x902 and a resource manager's (its layer: 0xb0902; the RESMGR_TPM layer's
    0xc0902) are the same TPMObjectMemory."""
    from tpm2_pytss import TSS2_Exception

    from entra_keys.providers.tpm import _errors

    for rc in (0x902, 0xB0902, 0xC0902):
        error = _errors.translate(TSS2_Exception(rc), "load key", "tabrmd")
        assert isinstance(error, TPMObjectMemory) and error.rc == rc
        assert _errors.is_object_memory(TSS2_Exception(rc))
    assert not isinstance(_errors.translate(TSS2_Exception(0x8000A), "x", "t"), TPMObjectMemory)
