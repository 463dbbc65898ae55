"""VerifierPool: verification in worker processes gives what the in-process call gives.

Quotes and certifications of both providers (RSA-2048 and P-256 AKs) go through a pool of two
spawned workers; the results equal the in-process ones, and forged attestations are refused with
the same typed error and the same check. The pickling the pool relies on is checked directly.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import entra_keys
from entra_keys import KeyType, KeyUsage, Provider, open_provider
from entra_keys.attestation import TrustPolicy, VerifierPool, verify_certify, verify_quote
from entra_keys.errors import (
    AttestationCheckFailed,
    Check,
    EntraKeysError,
    InvalidData,
    MalformedAttestation,
)

from . import test_verifier as vt

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


# --- the pool takes what the functions take, and the policy it is given now ---------------------


def _quote_args(nonce: Any = vt.NONCE) -> tuple[Any, ...]:
    """A quote by the test RSA AK (enrolled in ``ENROLLED``) and the arguments that verify it."""
    data = vt.quote_attest(extra_data=bytes(nonce)).to_bytes()
    return data, vt.sign(vt.RSA_AK, data), vt.ak_public(vt.RSA_AK), nonce, {"sha256": vt.PCRS}


@pytest.fixture(scope="module")
def enrolled_pool() -> Iterator[VerifierPool]:
    with VerifierPool(2, policy=vt.ENROLLED) as pool:
        yield pool


@pytest.mark.parametrize("kind", [memoryview, bytearray, lambda b: memoryview(bytearray(b))],
                         ids=["memoryview", "bytearray", "writable-memoryview"])  # fmt: skip
def test_the_pool_takes_bytes_like_inputs_as_the_function_does(
    enrolled_pool: VerifierPool, kind: Any
) -> None:
    """A memoryview nonce worked in-process but not through the pool (it does not pickle)."""
    attest, signature, ak, nonce, pcrs = _quote_args()
    only_nonce = (attest, signature, ak, kind(nonce), pcrs)
    assert enrolled_pool.verify_quote(*only_nonce) == verify_quote(*only_nonce, policy=vt.ENROLLED)
    values = {"sha256": {i: kind(v) for i, v in vt.PCRS.items()}}
    args = (kind(attest), kind(signature), kind(ak), kind(nonce), values)
    local = verify_quote(*args, policy=vt.ENROLLED)
    assert enrolled_pool.verify_quote(*args) == local and local.hardware_backed
    assert list(enrolled_pool.map([args, args])) == [local, local]


def test_a_buffer_changed_after_submitting_changes_nothing(enrolled_pool: VerifierPool) -> None:
    attest, signature, ak, nonce, pcrs = _quote_args()
    buffer = bytearray(attest)
    future = enrolled_pool.submit_quote(buffer, signature, ak, nonce, pcrs)
    buffer[:] = bytes(len(buffer))  # after submit returns: what was sent is a copy
    assert future.result().raw_attest == attest


@pytest.mark.parametrize(
    ("position", "value"),
    [(0, "text"), (2, 5), (3, "0123456789abcdef"), (4, [("sha256", vt.PCRS)]),
     (4, {"sha256": vt.PCRS, 0x000B: vt.PCRS}), (4, {"md5": {0: bytes(16)}})],
    ids=["attest-str", "ak-int", "nonce-str", "pcrs-list", "bank-twice", "unknown-bank"],
)  # fmt: skip
def test_the_pool_refuses_what_the_function_refuses_alike(
    enrolled_pool: VerifierPool, position: int, value: Any
) -> None:
    args = list(_quote_args())
    args[position] = value
    with pytest.raises(EntraKeysError) as local:
        verify_quote(*args, policy=vt.ENROLLED)
    for call in (
        lambda: enrolled_pool.verify_quote(*args),
        lambda: list(enrolled_pool.map([_quote_args(), tuple(args)])),
    ):
        with pytest.raises(EntraKeysError) as remote:
            call()
        assert type(remote.value) is type(local.value)
        assert str(remote.value) == str(local.value)
        assert getattr(remote.value, "check", None) == getattr(local.value, "check", None)


def test_set_policy_revokes_an_ak_in_a_running_pool() -> None:
    """The pool kept the policy it started with: after the parent revoked the AK (a policy
    without it, requiring hardware), the pool still said hardware_backed=True. With set_policy,
    nothing submitted after it returns runs under the old policy; what was submitted before
    completes."""
    args = _quote_args()
    policy = TrustPolicy(enrolled_aks=[vt.ak_public(vt.RSA_AK)])
    with VerifierPool(2, policy=policy) as pool:
        pool.warm_up()
        assert pool.verify_quote(*args).hardware_backed
        before = [pool.submit_quote(*args) for _ in range(20)]
        policy.require_hardware = True  # changing the object the pool was given changes nothing
        assert pool.verify_quote(*args).hardware_backed
        pool.set_policy(TrustPolicy(require_hardware=True))  # the AK is no longer enrolled
        after = [pool.submit_quote(*args) for _ in range(20)]
        for future in after:
            with pytest.raises(AttestationCheckFailed, match="requires hardware") as caught:
                future.result()
            assert caught.value.check == Check.TRUST
        with pytest.raises(AttestationCheckFailed, match="requires hardware"):
            list(pool.map([args] * 4))
        for future in before:  # each verified under the old policy or the new one
            assert future.exception() is not None or future.result().hardware_backed
        pool.set_policy(TrustPolicy(enrolled_aks=[vt.ak_public(vt.RSA_AK)]))
        assert pool.verify_quote(*args).hardware_backed


# --- AK certificates, their intermediates and the nonce rules, through the pool --------------

_REAL = Path(__file__).parent / "vectors" / "realworld"
_GCE = json.loads((_REAL / "go-tpm-tools" / "gce-cos-85-no-nonce.json").read_text())
_GOOGLE = _REAL / "go-tpm-tools" / "server" / "ca-certs"


def _gce_args(index: int, intermediates: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import base64

    quote = _GCE["quotes"][index]
    bank = quote["pcrs"]["hash"]
    pcrs = {bank: {int(i): base64.b64decode(v) for i, v in quote["pcrs"]["pcrs"].items()}}
    args = (base64.b64decode(quote["quote"]), base64.b64decode(quote["raw_sig"]),
            base64.b64decode(_GCE["ak_pub"]), b"", pcrs)  # fmt: skip
    certificate = base64.b64decode(_GCE["ak_cert"])
    return args, {"ak_certificate": certificate, "ak_intermediates": intermediates}


@pytest.mark.filterwarnings("ignore:Attribute.s length must be:UserWarning")
def test_the_pool_checks_ak_certificates_and_nonce_rules_as_the_function_does() -> None:
    """Results carry the AK certificate's information and the nonce rules; the policy's CA
    certificates (read ones, non-DER included) and the caller's intermediates, given as bytes,
    certificate objects or read certificates, reach the workers."""
    from entra_keys.attestation.ekcert import read_certificate

    when = datetime(2024, 6, 1, tzinfo=UTC)
    intermediate = (_GOOGLE / "tpm_ek_intermediate_2.crt").read_bytes()
    policy = TrustPolicy(
        ak_ca_certificates=[(_GOOGLE / "tpm_ek_root_1.cer").read_bytes()],
        allow_empty_nonce=True, allow_sha1=True, at=when,
    )  # fmt: skip
    bundled = TrustPolicy.with_tpm_vendor_cas(allow_empty_nonce=True, at=when)
    with VerifierPool(2, policy=policy) as pool:
        for given in (intermediate, x509.load_der_x509_certificate(intermediate),
                      read_certificate(intermediate)):  # fmt: skip
            args, kwargs = _gce_args(1, [given])
            local = verify_quote(*args, policy=policy, **kwargs)
            remote = pool.verify_quote(*args, **kwargs)
            assert remote == local and remote.ak_certificate_info is not None
            assert remote.ak_certificate_info.model == "vTPM" and remote.hardware_backed
            assert remote.nonce_policy.allow_empty
        args, kwargs = _gce_args(1, [])
        assert _refusal(pool.verify_quote, *args, **kwargs)[1] is Check.CERTIFICATE
        pool.set_policy(bundled)  # intermediates from the shipped bundle, pickled to workers
        assert pool.verify_quote(*args, **kwargs) == verify_quote(*args, policy=bundled, **kwargs)
        pool.set_policy(TrustPolicy(ak_ca_certificates=policy.ak_ca_certificates(), at=when))
        args, kwargs = _gce_args(1, [intermediate])
        assert _refusal(pool.verify_quote, *args, **kwargs)[1] is Check.NONCE
        refused = _refusal(pool.verify_quote, *args, **{**kwargs, "ak_intermediates": "x"})
        assert refused[1] is Check.CERTIFICATE


# --- map as Executor.map, the __main__ guard, event logs through the pool ---------------------


def test_map_submits_at_once_and_yields_in_order_as_executor_map(pool_policy: TrustPolicy) -> None:
    """``map`` returns with every item submitted; results come in the items' order; a refusal
    raises when its item is reached, after the results before it; a map called inside the
    ``with`` block is read after it, and one called after the block raises RuntimeError, as
    ``Executor.map`` does after shutdown."""
    provider = open_provider("software")
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    quotes = [provider.quote(ak, [n % 8], NONCE) for n in range(12)]
    args = [(q.attest, q.signature, ak.tpm_public, NONCE, {q.pcr_bank: q.pcr_values})
            for q in quotes]  # fmt: skip
    expected = [verify_quote(*a, policy=pool_policy) for a in args]
    bad = (quotes[0].attest, quotes[0].signature, ak.tpm_public, bytes(16), args[0][4])
    with VerifierPool(2, policy=pool_policy) as pool:
        ordered = pool.map(args, batch=3)
        failing = pool.map([args[0], args[1], bad, args[2]], batch=1)
    assert list(ordered) == expected  # read after the block: all was submitted inside it
    assert [r.pcr_values for r in expected] == [{"sha256": q.pcr_values} for q in quotes]
    assert [next(failing), next(failing)] == expected[:2]  # the results before the refusal
    with pytest.raises(AttestationCheckFailed) as caught:
        next(failing)
    assert caught.value.check == Check.NONCE
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.map(args)


_UNGUARDED = """
import sys, time
from entra_keys.attestation import TrustPolicy, VerifierPool

started = time.monotonic()
pool = VerifierPool(2, policy=TrustPolicy())   # no `if __name__ == "__main__":` guard
pool.warm_up()
print("warmed up in", time.monotonic() - started)
"""


def test_a_script_without_the_main_guard_fails_fast_and_says_why(tmp_path: Path) -> None:
    """Each spawned worker imports the caller's main module: without the guard it made a pool
    of its own. Now the pool refuses to be made there (the workers print why), and the script
    ends at once with an EntraKeysError naming the guard: no hang, no recursion."""
    script = tmp_path / "service.py"
    script.write_text(_UNGUARDED)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(Path(entra_keys.__file__).parents[1])},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert done.returncode == 1 and "warmed up" not in done.stdout
    assert "EntraKeysError: a VerifierPool is being made while a spawned worker" in done.stderr
    assert (
        done.stderr.rstrip()
        .splitlines()[-1]
        .startswith(
            "entra_keys.errors.EntraKeysError: the pool's worker processes ended while starting"
        )
    ), done.stderr[-2000:]
    assert 'if __name__ == "__main__":' in done.stderr
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        "from entra_keys.attestation import TrustPolicy, VerifierPool\n"
        'if __name__ == "__main__":\n'
        "    with VerifierPool(2, policy=TrustPolicy()) as pool:\n"
        "        pool.warm_up()\n"
        '    print("warmed up")\n'
    )
    done = subprocess.run(
        [sys.executable, str(guarded)],
        env={**os.environ, "PYTHONPATH": str(Path(entra_keys.__file__).parents[1])},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "warmed up\n", done.stderr


def test_a_quote_with_its_event_log_and_boot_policy_through_the_pool() -> None:
    """The pool takes ``event_log`` and ``boot_policy`` as verify_quote does; its result, which
    carries the parsed log (read-only mappings that did not pickle), comes back equal, and a
    boot policy's refusal is the same."""
    from entra_keys.attestation import BootPolicy
    from entra_keys.providers.software_attest import software_quote
    from entra_keys.testing.measured_boot import synthetic_boot

    boot = synthetic_boot()
    quoted = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14]
    ak = open_provider("software").create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    values = boot.replay()["sha256"]
    quote = software_quote(ak, quoted, NONCE, "sha256", pcr_values={p: values[p] for p in quoted})
    log = boot.log(["sha256"])
    args = (quote.attest, quote.signature, ak.tpm_public, NONCE, {"sha256": quote.pcr_values})
    policy = TrustPolicy(allow_software=True)
    met, unmet = BootPolicy(secure_boot=True), BootPolicy(secure_boot=False)
    local = verify_quote(*args, policy=policy, event_log=log, boot_policy=met)
    assert pickle.loads(pickle.dumps(local)) == local
    with VerifierPool(2, policy=policy) as pool:
        remote = pool.verify_quote(*args, event_log=bytearray(log), boot_policy=met)
        assert remote == local and remote.boot_facts is not None
        assert remote.boot_facts.secure_boot is True
        assert remote.event_log_events_after_quote == 0
        expected = _refusal(verify_quote, *args, policy=policy, event_log=log, boot_policy=unmet)
        assert _refusal(pool.verify_quote, *args, event_log=log, boot_policy=unmet) == expected
        assert expected[1] is Check.BOOT_POLICY
        with pytest.raises(InvalidData, match="boot_policy is a BootPolicy, not dict"):
            pool.verify_quote(*args, event_log=log, boot_policy={"secure_boot": True})
        with pytest.raises(MalformedAttestation, match="the event log is bytes"):
            pool.verify_quote(*args, event_log="a log")
