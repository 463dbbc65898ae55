"""A TPM that restarts under a long-lived provider: the provider reconnects and reloads what it
needs, and says "keys unusable" only once the storage hierarchy is shown gone.

Each test runs on a swtpm of its own, with and without a persistent SRK: it is restarted on the
same state (a reboot: TPM2_Startup(CLEAR), every transient object and session gone), left
waiting for TPM2_Startup, has its objects flushed by another program, or is cleared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    KeyStore,
    KeysUnusable,
    KeyType,
    KeyUsage,
    PRTSession,
    TPMError,
    TPMObjectMemory,
    TPMUnreachable,
    open_provider,
)
from entra_keys.providers.tpm import TPMProvider, persist_storage_key
from entra_keys.store import sealed
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService

from .helpers import transient_handles, unavailable

ECDSA = ec.ECDSA(hashes.SHA256())
OAEP = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
PIN = b"1357"
SECRET = b"the refresh token"


@pytest.fixture(params=["persistent SRK", "owner primary"])
def tpm(request: pytest.FixtureRequest, own_swtpm: Swtpm, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Swtpm:  # fmt: skip
    """A swtpm of the test's own, after ``tpm init`` or without a persistent SRK; a runtime
    directory of its own for the saved primary context."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    if request.param == "persistent SRK":
        persist_storage_key(own_swtpm.tcti)
    return own_swtpm


class Join:
    """A joined store's keys in one provider: device (ECC), transport (RSA), session key,
    a sealed secret with a PIN; ``use`` checks each of them once."""

    def __init__(self, provider: TPMProvider, path: Path) -> None:
        self.store = KeyStore(provider, path)
        self.service = TokenService()
        device = self.store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        transport = self.store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(device, ec.EllipticCurvePrivateKey)
        assert isinstance(transport, rsa.RSAPrivateKey)
        self.device, self.transport = device, transport
        jwe = self.service.session_key_jwe(transport.public_key())
        self.prt = PRTSession.create(self.store, "prt", transport, jwe)
        sealed.seal(self.store, "secret", SECRET, pin=PIN)

    def use(self) -> None:
        self.device.public_key().verify(self.device.sign(b"m", ECDSA), b"m", ECDSA)
        ciphertext = self.transport.public_key().encrypt(b"secret", OAEP)
        assert self.transport.decrypt(ciphertext, OAEP) == b"secret"
        token = self.prt.sign_request({"request_nonce": "n"})
        self.service.verify_request(token)
        reply = b'{"id_token": "x"}'
        assert self.prt.decrypt_response(self.service.encrypt_response(reply)) == reply
        assert sealed.unseal(self.store, "secret", pin=PIN) == SECRET


@pytest.fixture
def joined(tpm: Swtpm, tmp_path: Path) -> Iterator[Join]:
    provider = TPMProvider(tpm.tcti)
    try:
        yield Join(provider, tmp_path / "store")
    finally:
        provider.close()
    assert transient_handles(tpm.tcti) == []


def test_a_provider_keeps_working_across_tpm_restarts(tpm: Swtpm, joined: Join) -> None:
    """The same provider and key objects sign, decrypt, derive and unseal after the swtpm is
    restarted on its state (a reboot), twice; a fresh provider agrees."""
    joined.use()
    for _ in range(2):
        tpm.restart()
        joined.use()
    with open_provider("tpm", tcti=tpm.tcti) as fresh:
        again = KeyStore(fresh, joined.store.path).load("device")
        assert again.public_key() == joined.device.public_key()


def test_a_tpm_that_is_away_for_a_while_is_unreachable_then_works_again(
    tpm: Swtpm, joined: Join
) -> None:
    """While the TPM is away every use fails fast as unreachable (the connection is dropped);
    once it is back, the same provider reconnects and its keys work."""
    joined.use()
    tpm.stop()
    for _ in range(2):
        with pytest.raises(TPMUnreachable):
            joined.device.sign(b"m", ECDSA)
    tpm.start()
    joined.use()


def test_a_key_pinned_across_a_restart_reloads(tpm: Swtpm, joined: Join) -> None:
    """``with key.loaded()`` (a long-lived agent's login) survives a restart in the block:
    the pinned handle is gone with the TPM's reset, the key loads again and stays pinned."""
    with joined.device.loaded(), joined.prt.loaded():
        joined.device.sign(b"m", ECDSA)
        joined.prt.derive_key(b"c" * 24, kdf_version=1)
        tpm.restart()
        joined.device.public_key().verify(joined.device.sign(b"m", ECDSA), b"m", ECDSA)
        derived = joined.prt.derive_key(b"c" * 24, kdf_version=1)
        assert derived == joined.service.derived_key(b"c" * 24, kdf_version=1)
    joined.use()


def test_objects_flushed_by_another_program_are_reloaded(tpm: Swtpm, joined: Join) -> None:
    """TPM_RC_REFERENCE_H0 (a handle the TPM no longer holds: here another program flushed
    every transient object) is a stale handle, not a lost join."""
    joined.use()
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)
    subprocess.run(["tpm2_flushcontext", "-l"], env=env, check=True, capture_output=True)
    joined.use()


def test_a_tpm_waiting_for_startup_is_an_error_not_lost_keys(tpm: Swtpm, joined: Join) -> None:
    """After a reset with no TPM2_Startup yet (TPM_RC_INITIALIZE), a use fails as a TPM error
    that does not say the keys are lost; once the platform sends TPM2_Startup, the same provider
    works."""
    tpm.restart(startup=False)
    with pytest.raises(TPMError) as raised:
        joined.device.sign(b"m", ECDSA)
    assert not isinstance(raised.value, KeysUnusable)
    assert "leave" not in str(raised.value)
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_startup", "-c"], env=env, check=True, capture_output=True)
    joined.use()


def test_a_cleared_tpm_makes_the_keys_unusable(tpm: Swtpm, joined: Join) -> None:
    """TPM2_Clear (a new storage seed; the SRK evicted): the storage key's name is not the one
    recorded, so the same provider says leave and join again, and so does a new one."""
    if shutil.which("tpm2_clear") is None:
        unavailable("tpm2_clear (tpm2-tools) is not installed")
    joined.use()
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_clear", "-c", "l"], env=env, check=True, capture_output=True)
    for _ in range(2):
        with pytest.raises(KeysUnusable, match="leave and join again"):
            joined.device.sign(b"m", ECDSA)
    with pytest.raises(KeysUnusable, match="leave and join again"):
        joined.prt.derive_key(b"c" * 24, kdf_version=1)
    with (
        open_provider("tpm", tcti=tpm.tcti) as fresh,
        pytest.raises(KeysUnusable, match="leave and join again"),
    ):
        KeyStore(fresh, joined.store.path).load("device")


def _other_program_loads(tcti: str, count: int) -> None:
    """Another program, after a reset, loads ``count`` ECC signing keys and exits; with no
    resource manager they stay, at the handle numbers the provider had."""
    import tpm2_pytss as t

    attrs = t.TPMA_OBJECT
    sign = attrs.SIGN_ENCRYPT | attrs.FIXEDTPM | attrs.FIXEDPARENT | attrs.SENSITIVEDATAORIGIN
    template = t.TPM2B_PUBLIC.parse("ecc256", objectAttributes=sign | attrs.USERWITHAUTH)
    esys = t.ESAPI(tcti)
    try:
        for _ in range(count):
            esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER)
    finally:
        esys.close()


def test_handles_a_reset_gave_to_another_program_are_never_used(tpm: Swtpm, joined: Join) -> None:
    """After a reset another program's key takes a handle number the provider kept: the device
    key's signature is still the device key's (checked against its public half), a load is not
    "leave and join again", and the other program's object is not flushed by the provider."""
    joined.use()
    tpm.restart()
    _other_program_loads(tpm.tcti, 1)
    theirs = transient_handles(tpm.tcti)
    assert len(theirs) == 1
    joined.device.public_key().verify(joined.device.sign(b"m", ECDSA), b"m", ECDSA)
    again = joined.store.load("device")
    again.public_key().verify(again.sign(b"m", ECDSA), b"m", ECDSA)
    joined.use()
    joined.store.provider.close()
    assert transient_handles(tpm.tcti) == theirs  # theirs, still loaded; none of ours
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)


def test_a_reset_tpm_full_of_another_programs_keys_is_a_typed_error(
    tpm: Swtpm, joined: Join
) -> None:
    """With the TPM's slots taken by another program after a reset (one left: too few without a
    persistent SRK), a use is the device key's signature or TPMObjectMemory: never another
    key's signature, never KeysUnusable."""
    joined.use()
    tpm.restart()
    _other_program_loads(tpm.tcti, 2)
    provider = joined.store.provider
    assert isinstance(provider, TPMProvider)
    provider.connection.object_memory_wait = 0.1
    try:
        joined.device.public_key().verify(joined.device.sign(b"m", ECDSA), b"m", ECDSA)
        again = joined.store.load("device")
        again.public_key().verify(again.sign(b"m", ECDSA), b"m", ECDSA)
    except TPMObjectMemory:
        assert tpm.tcti and "persistent" not in (provider.info().storage_key or "")
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, check=True, capture_output=True)
    joined.use()


@pytest.mark.parametrize("pcrs", [None, [7]], ids=["pin", "pin-and-pcrs"])
def test_seal_recovers_after_a_restart(tpm: Swtpm, joined: Join, pcrs: list[int] | None) -> None:
    """A long-lived agent re-seals a renewed secret after a resume: the first seal after the
    restart works (it reloads as every other operation does), and the secret unseals."""
    joined.use()
    tpm.restart()
    sealed.seal(joined.store, "renewed", b"a renewed PRT", pin=PIN, pcrs=pcrs)
    assert sealed.unseal(joined.store, "renewed", pin=PIN) == b"a renewed PRT"
