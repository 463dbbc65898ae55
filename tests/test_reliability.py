"""Failing safely: killed writers, damaged files, threads and a second process on one TPM.

Counts are small by default so the suite stays fast; ``ENTRA_KEYS_STRESS=extended`` runs the
issue's full counts (50 kills, 1,000 operations per thread, 10,000 corruptions).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

import entra_keys
from entra_keys import (
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    Provider,
    PRTSession,
    TPMError,
    open_provider,
)
from entra_keys.providers.tpm import TPMProvider
from entra_keys.session import derive_key, import_session_key
from entra_keys.testing.swtpm import Swtpm
from entra_keys.testing.token_service import TokenService
from entra_keys.testing.tpm import cached_keys, connection_handles

from .helpers import cached_key, transient_handles

EXTENDED = os.environ.get("ENTRA_KEYS_STRESS") == "extended"
SRC = str(Path(entra_keys.__file__).parent.parent)

# A writer that creates, replaces and deletes keys until it is killed; it says "ready" first.
WRITER = """
import sys
from entra_keys import KeyStore, KeyType, KeyUsage, open_provider
provider = open_provider(sys.argv[1], tcti=sys.argv[3] or None)
store = KeyStore(provider, sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    name = f"k{i % 4}"
    if i % 5 == 4 and name in store:
        store.delete(name)
    else:
        store.create(name, KeyType.ECC256, KeyUsage.SIGN, replace=True)
    i += 1
"""


def kill_writers(kind: str, store_dir: Path, tcti: str, times: int) -> None:
    """Start a writer, let it run a random moment, SIGKILL it; ``times`` over."""
    rng = random.Random(1234)
    for _ in range(times):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, kind, str(store_dir), tcti],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        threading.Event().wait(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()


def assert_store_whole(store: KeyStore) -> None:
    """Every listed key loads and signs; nothing unreadable sits under a key name."""
    assert store.broken() == []
    for info in store.list():
        key = store.load(info.name)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.public_key().verify(
            key.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256())
        )


@pytest.mark.parametrize("kind", ["software", "tpm"])
def test_a_killed_writer_leaves_only_whole_keys(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Writers SIGKILLed at random moments (software: 50; a TPM: 8, or 50 extended, on a swtpm
    of its own, as a killed client's objects stay in a TPM without a resource manager until
    flushed): every key left loads and signs, and the next write sweeps dead temp files."""
    store_dir = tmp_path / "store"
    if kind == "software":
        kill_writers("software", store_dir, "", 50)
        provider = open_provider("software")
    else:
        tpm: Swtpm = request.getfixturevalue("own_swtpm")
        for _ in range(50 if EXTENDED else 8):
            kill_writers(kind, store_dir, tpm.tcti, 1)
            subprocess.run(
                ["tpm2_flushcontext", "-t"],
                env={**os.environ, "TPM2TOOLS_TCTI": tpm.tcti},
                check=True,
                capture_output=True,
            )
        provider = open_provider(kind, tcti=tpm.tcti)
    with provider:
        store = KeyStore(provider, store_dir)
        assert_store_whole(store)
        store.create("after", KeyType.ECC256, KeyUsage.SIGN)
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".tmp-")]
    if kind != "software":
        assert transient_handles(tpm.tcti) == []


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 64), st.just(0)),
)


def damage(data: bytes, how: tuple[str, int, int]) -> bytes:
    kind, where, bit = how
    if kind == "flip":
        buf = bytearray(data)
        buf[where % len(buf)] ^= 1 << bit
        return bytes(buf)
    if kind == "cut":
        return data[: where % len(data)]
    return data + os.urandom(where)


@pytest.mark.parametrize("kind", ["software", "tpm"])
def test_damaged_key_file_is_refused_by_name_and_others_are_untouched(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "tpm":
        provider: Provider = request.getfixturevalue("tpm_provider")
    else:
        provider = open_provider("software")
    store = KeyStore(provider, tmp_path / "store")
    good = store.create("good", KeyType.ECC256, KeyUsage.SIGN)
    original = store.create("victim", KeyType.ECC256, KeyUsage.SIGN)
    path = store.path / "victim.pem"
    pristine = path.read_bytes()
    examples = 10_000 if EXTENDED else (40 if kind == "tpm" else 300)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(how=mutation)
    def check(how: tuple[str, int, int]) -> None:
        path.write_bytes(damage(pristine, how))
        try:
            key = store.load("victim")
        except KeyStoreError as exc:
            refused: KeyStoreError | None = exc
        else:
            refused = None
        if refused is not None:
            assert refused.key_name == "victim"
            assert "'victim'" in str(refused)
        else:
            # Only a change PEM readers ignore (trailing bytes, header spacing) may load,
            # and then it must still be the very same key.
            assert key.public_key() == original.public_key()
        assert store.load("good").public_key() == good.public_key()

    check()


def test_eight_threads_share_one_tpm_provider(tpm_provider: Provider) -> None:
    per_thread = 1000 if EXTENDED else 25
    ec_key = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.SIGN)
    rsa_key = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    transport = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.DECRYPT)
    ak = cached_key(tpm_provider, KeyType.ECC256, KeyUsage.ATTEST)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(transport, rsa.RSAPrivateKey)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    service = TokenService()
    session_key = import_session_key(
        tpm_provider, transport, service.session_key_jwe(transport.public_key())
    )
    errors: list[BaseException] = []
    done = [0] * 8

    def work(index: int) -> None:
        rng = random.Random(index)
        try:
            for n in range(per_thread):
                message = f"{index}-{n}".encode()
                op = rng.randrange(5)
                if op == 0:
                    sig = ec_key.sign(message, ec.ECDSA(hashes.SHA256()))
                    ec_key.public_key().verify(sig, message, ec.ECDSA(hashes.SHA256()))
                elif op == 1:
                    sig = rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
                    rsa_key.public_key().verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
                elif op == 2:
                    secret = os.urandom(32)
                    ciphertext = transport.public_key().encrypt(secret, oaep)
                    assert transport.decrypt(ciphertext, oaep) == secret
                elif op == 3:
                    nonce = os.urandom(32)
                    quote = tpm_provider.quote(ak, [0, 7], nonce)
                    assert nonce in quote.attest
                else:
                    ctx = os.urandom(24)
                    derived = derive_key(session_key, ctx, kdf_version=2, payload=message)
                    assert derived == service.derived_key(ctx, kdf_version=2, payload=message)
                done[index] += 1
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert done == [per_thread] * 8
    # The storage key and the keys the cache keeps loaded, nothing else.
    assert len(connection_handles(tpm_provider)) == 1 + cached_keys(tpm_provider)


# A second client of the same swtpm: signs and verifies in a loop, prints its count.
SIGNER = """
import sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from entra_keys import KeyStore, open_provider
with open_provider("tpm", tcti=sys.argv[1]) as provider:
    key = KeyStore(provider, sys.argv[2]).load("device")
    for _ in range(int(sys.argv[3])):
        sig = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))
print("ok")
"""


def test_two_processes_share_one_swtpm_without_a_resource_manager(
    tpm_provider: Provider, swtpm: Swtpm, tmp_path: Path
) -> None:
    """Each process keeps its own storage key loaded; loads wait for a free slot."""
    KeyStore(tpm_provider, tmp_path / "store").create("device", KeyType.ECC256, KeyUsage.SIGN)
    tpm_provider.close()  # this test's provider steps aside: two processes, two storage keys
    count = "200" if EXTENDED else "40"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SIGNER, swtpm.tcti, str(tmp_path / "store"), count],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "ok"


def _exercise(operation: str, store: KeyStore, round_: int, jwe: str) -> None:
    """One unit of the work a TPM is pulled from under: sign, create a key, import a PRT key."""
    if operation == "sign":
        key = store.load("device")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        with key.loaded():
            while True:
                key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    transport = store.load("transport")
    while True:
        if operation == "create":
            store.create(f"new{round_ % 3}", KeyType.ECC256, KeyUsage.SIGN, replace=True)
        else:
            PRTSession.create(store, "prt", transport, jwe, replace=True)


@pytest.mark.parametrize("operation", ["sign", "create", "import"])
def test_tpm_killed_mid_operation_fails_typed_and_loses_no_key(
    operation: str, swtpm: Swtpm, tmp_path: Path
) -> None:
    """SIGKILL the swtpm at a random moment of the work; then restart it on the same state."""
    tpm = Swtpm(tmp_path / "tpm")
    tpm.start()
    store_dir = tmp_path / "store"
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        store = KeyStore(provider, store_dir)
        store.create("device", KeyType.ECC256, KeyUsage.SIGN)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        assert isinstance(transport, rsa.RSAPrivateKey)
        jwe = TokenService().session_key_jwe(transport.public_key())
    rng = random.Random(operation)
    try:
        for round_ in range(50 if EXTENDED else 20):
            provider = TPMProvider(tpm.tcti, timeout=5.0)
            store = KeyStore(provider, store_dir)
            killer = threading.Timer(rng.uniform(0.0, 0.03), tpm.kill)
            started = time.monotonic()
            killer.start()
            try:
                with pytest.raises(TPMError):
                    _exercise(operation, store, round_, jwe)
            finally:
                killer.join()
                provider.close()
            assert time.monotonic() - started < 10  # typed error, in bounded time
            tpm.start()  # the same state: what was created before the kill is all there
            with open_provider("tpm", tcti=tpm.tcti) as again:
                survivors = KeyStore(again, store_dir)
                assert survivors.broken() == []
                for info in survivors.list():
                    if info.usage is KeyUsage.DERIVE:
                        survivors.load_session_key(info.name).hmac_sha256(b"ctx")
                    elif info.usage is KeyUsage.SIGN:
                        key = survivors.load(info.name)
                        assert isinstance(key, ec.EllipticCurvePrivateKey)
                        key.public_key().verify(
                            key.sign(b"m", ec.ECDSA(hashes.SHA256())),
                            b"m",
                            ec.ECDSA(hashes.SHA256()),
                        )
                    else:
                        survivors.load(info.name)
            assert transient_handles(tpm.tcti) == []
    finally:
        tpm.stop()
