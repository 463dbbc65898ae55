"""The verifier's fused path and its caches: what they accept is exactly what the full path does.

An attestation that is exactly the one expected is accepted by comparing its bytes in place, and
checked expected PCR values and certified keys are kept by their contents. Here Hypothesis builds
attestations of every shape (each one signed, so that the structure is what is checked), and each
is verified twice: as the verifier does, and with the fused path turned off, which leaves only the
full parse and the checks in their order. The two must agree on the result, field by field, or on
the error, its check and its message. The caches are attacked with what Python takes for equal
(True and 1.0 for 1, a dict changed in place, a result's values changed by its holder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pickle
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from hypothesis import given, settings
from hypothesis import strategies as st

from entra_keys.attestation import TrustPolicy, verify_certify, verify_quote
from entra_keys.attestation import _expected as expected_module
from entra_keys.attestation import verifier as verifier_module
from entra_keys.errors import AttestationCheckFailed, EntraKeysError, InvalidData
from entra_keys.providers.software_attest import software_tpmt_public
from entra_keys.tcg import (
    SOFTWARE_FIRMWARE_VERSION,
    SOFTWARE_SIGNER_PREFIX,
    TPMA_OBJECT,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
)
from entra_keys.tcg.model import KeyUsage
from entra_keys.tcg.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMSPCRSelection,
)

from .test_verifier import (
    DEVICE,
    EC_AK,
    ENROLLED,
    NONCE,
    PCRS,
    RSA_AK,
    ak_public,
    certify_attest,
    device_public,
    quote_attest,
    sign,
)

SHA384_PCRS = {1: bytes([1]) * 48, 4: bytes([4]) * 48}
EXPECTED = {
    "sha256": {"sha256": PCRS},
    "by id": {TPM_ALG_SHA256: PCRS},
    "two banks": {"sha256": PCRS, "sha384": SHA384_PCRS},
    "sha1": {"sha1": {0: bytes(20)}},
}
POLICIES = {
    "enrolled": ENROLLED,
    "software allowed": TrustPolicy(
        allow_software=True, enrolled_aks=[ak_public(RSA_AK), ak_public(EC_AK)]
    ),
    "hardware required": TrustPolicy(
        require_hardware=True, enrolled_aks=[ak_public(RSA_AK), ak_public(EC_AK)]
    ),
    "sha1 allowed": TrustPolicy(allow_sha1=True, enrolled_aks=[ak_public(RSA_AK)]),
}
OTHER_KEY = ec.derive_private_key(0x07E4, ec.SECP256R1()).public_key()


@contextlib.contextmanager
def full_path_only() -> Iterator[None]:
    """The verifier with its fused path off: every attestation is parsed and checked in order."""
    with mock.patch.object(verifier_module, "_fused_head", return_value=None):
        yield


def outcome(verify: Callable[[], Any]) -> tuple[Any, ...]:
    """What a caller sees: the result's fields, or the error's type, check and message."""
    try:
        result = verify()
    except EntraKeysError as exc:
        return type(exc), getattr(exc, "check", None), str(exc)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if "pcr_values" in fields:
        fields["pcr_values"] = {bank: dict(v) for bank, v in fields["pcr_values"].items()}
    if "public_key" in fields:
        fields["public_key"] = result.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return "verified", fields, result.attest


def selection(banks: dict[int, frozenset[int]], size: int = 3) -> TPMLPCRSelection:
    return TPMLPCRSelection(tuple(TPMSPCRSelection(a, p, size) for a, p in banks.items()))


#: The PCR selections a quote may carry: the expected one, and each way to differ from it.
SELECTIONS = {
    "sha256": selection({TPM_ALG_SHA256: frozenset(PCRS)}),
    "sha256, 4-byte select": selection({TPM_ALG_SHA256: frozenset(PCRS)}, 4),
    "sha256 and an empty sha1": TPMLPCRSelection(
        (TPMSPCRSelection(TPM_ALG_SHA256, frozenset(PCRS)), TPMSPCRSelection(TPM_ALG_SHA1, {}))
    ),
    "sha256 missing one": selection({TPM_ALG_SHA256: frozenset(PCRS) - {7}}),
    "sha256 and one more": selection({TPM_ALG_SHA256: frozenset(PCRS) | {3}}),
    "two banks": selection(
        {TPM_ALG_SHA256: frozenset(PCRS), TPM_ALG_SHA384: frozenset(SHA384_PCRS)}
    ),
    "two banks, the other order": selection(
        {TPM_ALG_SHA384: frozenset(SHA384_PCRS), TPM_ALG_SHA256: frozenset(PCRS)}
    ),
    "sha1": selection({TPM_ALG_SHA1: frozenset({0})}),
    "none": TPMLPCRSelection(()),
}
DIGESTS = {
    "sha256 of sha256": hashlib.sha256(b"".join(PCRS[i] for i in sorted(PCRS))).digest(),
    "sha256 of both": hashlib.sha256(
        b"".join(PCRS[i] for i in sorted(PCRS))
        + b"".join(SHA384_PCRS[i] for i in sorted(SHA384_PCRS))
    ).digest(),
    "sha256 of both, the other order": hashlib.sha256(
        b"".join(SHA384_PCRS[i] for i in sorted(SHA384_PCRS))
        + b"".join(PCRS[i] for i in sorted(PCRS))
    ).digest(),
    "sha256 of sha1": hashlib.sha256(bytes(20)).digest(),
    "zero": bytes(32),
    "short": bytes(20),
}
#: Each field of an attestation and its signature as a TPM makes them, then the wrong values
#: it may take instead. An example changes at most two fields, so that many are right but one.
RIGHT: dict[str, Any] = {
    "magic": TPM_GENERATED_VALUE,
    "qualified_signer": b"\x00\x0b" + bytes(32),
    "extra_data": NONCE,
    "firmware_version": 0x2019102300163636,
    "safe": None,
    "trailing": b"",
    "cut": 0,
    "pss": False,
    "signature_tail": b"",
    "nonce": NONCE,
}
WRONG: dict[str, list[Any]] = {
    "magic": [TPM_GENERATED_VALUE ^ 1],
    "qualified_signer": [b"", SOFTWARE_SIGNER_PREFIX + bytes(8), bytes(66), bytes(67)],
    "extra_data": [NONCE[:-1], NONCE + b"\0", bytes(20), b"", NONCE * 4, NONCE[:7]],
    "firmware_version": [SOFTWARE_FIRMWARE_VERSION],
    "safe": [0, 2],
    "trailing": [b"\0"],
    "cut": [1, 2],
    "pss": [True],
    "signature_tail": [b"\0"],
    "nonce": [NONCE[:7], bytearray(NONCE), NONCE * 4, NONCE[:-1]],
}


def damage(data: bytes, safe: int | None, trailing: bytes, cut: int) -> bytes:
    """The marshaled attestation with clockInfo.safe set, bytes added, or its end cut off."""
    if safe is not None:  # clockInfo.safe: after magic, type, qualifiedSigner, extraData, 16
        pos = 6
        for _ in range(2):
            pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
        data = data[: pos + 16] + bytes([safe]) + data[pos + 17 :]
    return (data + trailing)[: len(data) + len(trailing) - cut]


@st.composite
def shapes(draw: st.DrawFn, right: dict[str, Any], wrong: dict[str, list[Any]]) -> dict[str, Any]:
    """The fields of one example: each right, but at most two (and the AK and the policy)."""
    shape = {**RIGHT, **right}
    choices = {**WRONG, **wrong}
    for field in draw(st.lists(st.sampled_from(sorted(choices)), max_size=2, unique=True)):
        shape[field] = draw(st.sampled_from(choices[field]))
    shape["key"] = draw(st.sampled_from([RSA_AK, EC_AK]))
    shape["policy"] = draw(st.sampled_from(sorted(POLICIES)))
    return shape


def signed(attest: TPMSAttest, shape: dict[str, Any]) -> tuple[bytes, bytes]:
    """The attestation's bytes as the shape damages them, and a signature over exactly them."""
    data = damage(attest.to_bytes(), shape["safe"], shape["trailing"], shape["cut"])
    key = shape["key"]
    return data, sign(key, data, pss=shape["pss"] and key is RSA_AK) + shape["signature_tail"]


def header(shape: dict[str, Any]) -> dict[str, Any]:
    return {k: shape[k] for k in ("magic", "qualified_signer", "extra_data", "firmware_version")}


#: The expected values, and the selection and digest of the quote a TPM makes of them.
QUOTED = {
    "sha256": ("sha256", "sha256 of sha256"),
    "by id": ("sha256", "sha256 of sha256"),
    "two banks": ("two banks", "sha256 of both"),
    "sha1": ("sha1", "sha256 of sha1"),
}


@st.composite
def quotes(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    expected = draw(st.sampled_from(sorted(EXPECTED)))
    select, digest = QUOTED[expected]
    right = {"kind": TPM_ST_ATTEST_QUOTE, "select": select, "digest": digest}
    wrong = {
        "kind": [TPM_ST_ATTEST_CERTIFY],
        "select": sorted(SELECTIONS),
        "digest": sorted(DIGESTS),
    }
    return expected, draw(shapes(right, wrong))


@settings(max_examples=600, deadline=None)
@given(example=quotes())
def test_the_fused_quote_path_agrees_with_the_full_one(example: tuple[str, Any]) -> None:
    expected, shape = example
    body = TPMSQuoteInfo(SELECTIONS[shape["select"]], DIGESTS[shape["digest"]])
    data, signature = signed(
        quote_attest(type=shape["kind"], attested=body, **header(shape)), shape
    )
    key = shape["key"]

    def verify() -> Any:
        return verify_quote(
            data, signature, ak_public(key), shape["nonce"], EXPECTED[expected],
            policy=POLICIES[shape["policy"]],
        )  # fmt: skip

    fused = outcome(verify)
    with full_path_only():
        assert outcome(verify) == fused


def name_of(public: bytes) -> bytes:
    """The name of a TPMT_PUBLIC's bytes: its nameAlg and their digest under it."""
    hashes = {TPM_ALG_SHA1: "sha1", TPM_ALG_SHA256: "sha256", TPM_ALG_SHA384: "sha384"}
    return public[2:4] + hashlib.new(hashes[int.from_bytes(public[2:4], "big")], public).digest()


def _name_alg(public: bytes, alg: int) -> bytes:
    return dataclasses.replace(TPMTPublic.parse(public), name_alg=alg).to_bytes()


DEVICE_PUBLIC = device_public()
ATTRS = TPMTPublic.parse(DEVICE_PUBLIC).object_attributes
#: Keys a TPM may certify, right or refused for what they are.
KEYS = {
    "device": DEVICE_PUBLIC,
    "not fixedTPM": device_public(ATTRS & ~TPMA_OBJECT.FIXEDTPM),
    "restricted": device_public(ATTRS | TPMA_OBJECT.RESTRICTED),
    "sha1 name": _name_alg(DEVICE_PUBLIC, TPM_ALG_SHA1),
    "sha384 name": _name_alg(DEVICE_PUBLIC, TPM_ALG_SHA384),
    "P-192": TPMTPublic.from_public_key(
        ec.derive_private_key(0x192, ec.SECP192R1()).public_key(), ATTRS
    ).to_bytes(),
    "trailing byte": DEVICE_PUBLIC + b"\0",
}
OTHER_NAME = TPMTPublic.parse(software_tpmt_public(OTHER_KEY, KeyUsage.SIGN)).name()


@st.composite
def certifications(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(sorted(KEYS)))  # the key certified, and given (its name right)
    right = {
        "kind": TPM_ST_ATTEST_CERTIFY,
        "given_key": key,
        "name": name_of(KEYS[key]),
        "qualified": b"\x00\x0b" + bytes(32),
        "expected_key": draw(st.sampled_from([None, DEVICE.public_key()])),
    }
    wrong = {
        "kind": [TPM_ST_ATTEST_QUOTE],
        "given_key": sorted(KEYS),
        "name": [OTHER_NAME, b"", bytes(67), name_of(DEVICE_PUBLIC)],
        "qualified": [b"", bytes(66), bytes(67)],
        "expected_key": [OTHER_KEY],
    }
    return draw(shapes(right, wrong))


@settings(max_examples=600, deadline=None)
@given(shape=certifications())
def test_the_fused_certify_path_agrees_with_the_full_one(shape: dict[str, Any]) -> None:
    body = TPMSCertifyInfo(shape["name"], shape["qualified"])
    data, signature = signed(
        quote_attest(type=shape["kind"], attested=body, **header(shape)), shape
    )
    key = shape["key"]

    def verify() -> Any:
        return verify_certify(
            data, signature, ak_public(key), KEYS[shape["given_key"]], shape["nonce"],
            policy=POLICIES[shape["policy"]], expected_key=shape["expected_key"],
        )  # fmt: skip

    fused = outcome(verify)
    with full_path_only():
        assert outcome(verify) == fused


# --- the fused path is the one taken, where it should be ---------------------------------------


def _quote(attest: TPMSAttest, key: Any = RSA_AK, pcrs: Any = None) -> Any:
    data = attest.to_bytes()
    return verify_quote(
        data, sign(key, data), ak_public(key), NONCE, pcrs or {"sha256": PCRS}, policy=ENROLLED
    )


@pytest.mark.parametrize("key", [RSA_AK, EC_AK], ids=["rsa", "ecc"])
def test_a_quote_as_expected_takes_the_fused_path_and_parses_when_asked(key: Any) -> None:
    result = _quote(quote_attest(), key)
    assert "attest" not in vars(result)  # accepted without a parse
    assert result.hardware_backed and result.attest == TPMSAttest.parse(result.raw_attest)
    assert result.attest.extra_data == NONCE


def test_a_quote_of_another_shape_that_is_right_takes_the_full_path() -> None:
    """A 4-byte pcrSelect (a TPM with more than 24 PCRs) is right, and not the bytes the
    verifier expects: the full path accepts it."""
    body = TPMSQuoteInfo(SELECTIONS["sha256, 4-byte select"], DIGESTS["sha256 of sha256"])
    result = _quote(quote_attest(attested=body))
    assert "attest" in vars(result) and result.hardware_backed


def test_a_certification_as_expected_takes_the_fused_path() -> None:
    data = certify_attest(DEVICE_PUBLIC).to_bytes()
    result = verify_certify(
        data, sign(EC_AK, data), ak_public(EC_AK), DEVICE_PUBLIC, NONCE,
        policy=ENROLLED, expected_key=DEVICE.public_key(),
    )  # fmt: skip
    assert "attest" not in vars(result) and result.hardware_backed
    assert result.attest == TPMSAttest.parse(data)
    again = pickle.loads(pickle.dumps(result))
    assert again == result and again.attest == result.attest


# --- the cache of expected PCR values ------------------------------------------------------------


def test_a_result_s_pcr_values_cannot_be_changed_by_its_holder() -> None:
    """The checked values are shared by every result made against them: read-only, so that no
    holder can change what the next verification compares with."""
    result = _quote(quote_attest())
    with pytest.raises(TypeError):
        result.pcr_values["sha256"][7] = bytes(32)  # type: ignore[index]
    with pytest.raises(TypeError):
        result.pcr_values["sha1"] = {}  # type: ignore[index]
    assert _quote(quote_attest()).pcr_values == {"sha256": PCRS}
    assert pickle.loads(pickle.dumps(result)).pcr_values == {"sha256": PCRS}


def test_expected_values_changed_in_place_are_checked_as_they_are_now() -> None:
    expected = {"sha256": dict(PCRS)}
    assert _quote(quote_attest(), pcrs=expected).hardware_backed
    expected["sha256"][7] = bytes(32)
    with pytest.raises(AttestationCheckFailed) as caught:
        _quote(quote_attest(), pcrs=expected)
    assert caught.value.check == "pcr-digest"


@pytest.mark.parametrize("index", [True, 1.0], ids=["True", "1.0"])
def test_what_python_takes_for_1_is_no_pcr_index_even_after_1_was_checked(index: Any) -> None:
    one = {1: bytes(32)}
    body = TPMSQuoteInfo(
        selection({TPM_ALG_SHA256: frozenset({1})}), hashlib.sha256(bytes(32)).digest()
    )
    assert _quote(quote_attest(attested=body), pcrs={"sha256": one}).hardware_backed
    with pytest.raises(InvalidData, match=r"is not 0\.\.31"):
        _quote(quote_attest(attested=body), pcrs={"sha256": {index: bytes(32)}})


def test_a_bank_named_by_a_float_is_refused_even_after_its_id_was_checked() -> None:
    assert _quote(quote_attest(), pcrs={TPM_ALG_SHA256: PCRS}).hardware_backed
    with pytest.raises(AttestationCheckFailed) as caught:
        _quote(quote_attest(), pcrs={float(TPM_ALG_SHA256): PCRS})
    assert caught.value.check == "hash"


def test_a_sha1_bank_checked_under_allow_sha1_is_refused_by_a_policy_without_it() -> None:
    data = quote_attest(
        attested=TPMSQuoteInfo(SELECTIONS["sha1"], DIGESTS["sha256 of sha1"])
    ).to_bytes()
    args = (data, sign(RSA_AK, data), ak_public(RSA_AK), NONCE, {"sha1": {0: bytes(20)}})
    assert not verify_quote(*args, policy=TrustPolicy(allow_sha1=True)).hardware_backed
    with pytest.raises(AttestationCheckFailed, match="sha1 PCR bank is refused") as caught:
        verify_quote(*args)
    assert caught.value.check == "hash"


def test_values_that_cannot_be_kept_are_checked_each_time() -> None:
    """A bytearray cannot be a key of the cache; its values are checked, and right."""
    values = {i: bytearray(v) for i, v in PCRS.items()}
    assert _quote(quote_attest(), pcrs={"sha256": values}).pcr_values == {"sha256": PCRS}
    values[7] = bytearray(32)
    with pytest.raises(AttestationCheckFailed) as caught:
        _quote(quote_attest(), pcrs={"sha256": values})
    assert caught.value.check == "pcr-digest"


def test_the_cache_is_bounded_and_right_once_full() -> None:
    for n in range(expected_module._EXPECTED_MAX + 8):
        pcrs = {"sha256": {**PCRS, 23: n.to_bytes(32, "big")}}
        with pytest.raises(AttestationCheckFailed):  # the quote does not cover PCR 23
            _quote(quote_attest(), pcrs=pcrs)
    assert len(expected_module._EXPECTED) <= expected_module._EXPECTED_MAX
    assert _quote(quote_attest()).hardware_backed


# --- the RSA AK's one signature form, and ECDSA's DER ---------------------------------------------


def test_an_rsa_signature_not_of_the_ak_s_form_takes_the_full_checks() -> None:
    data = quote_attest().to_bytes()
    right = sign(RSA_AK, data)
    for signature, check in [
        (sign(RSA_AK, data, pss=True), "signature"),  # another scheme
        (sign(RSA_AK, data, hash_alg=TPM_ALG_SHA384), "signature"),  # another hash
        (right[:4] + (len(right) - 7).to_bytes(2, "big") + right[6:-1], "signature"),  # short
        (right[:-1], "structure"),  # its size says one byte more
        (right + b"\0", "structure"),  # one byte after it
    ]:
        with pytest.raises(AttestationCheckFailed) as caught:
            verify_quote(data, signature, ak_public(RSA_AK), NONCE, {"sha256": PCRS})
        assert caught.value.check == check


@given(r=st.binary(max_size=67), s=st.binary(max_size=67))
def test_ecdsa_der_is_what_cryptography_encodes(r: bytes, s: bytes) -> None:
    der = TPMTSignature(TPM_ALG_ECDSA, TPM_ALG_SHA256, b"", r, s).to_der()
    expected = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert der == expected


def test_an_ecdsa_signature_of_another_form_takes_the_full_checks() -> None:
    """A TPM may give r without its leading zero byte: not the AK's form, and right; r longer
    than the curve is refused as before."""
    data = quote_attest().to_bytes()
    sig = TPMTSignature.parse(sign(EC_AK, data))
    while sig.signature_r[0] != 0:  # ECDSA is randomized: 1 signature in 256 has one
        sig = TPMTSignature.parse(sign(EC_AK, data))
    short = dataclasses.replace(sig, signature_r=sig.signature_r[1:]).to_bytes()
    result = verify_quote(data, short, ak_public(EC_AK), NONCE, {"sha256": PCRS}, policy=ENROLLED)
    assert result.hardware_backed and result.signature.signature_r == sig.signature_r[1:]
    long = dataclasses.replace(sig, signature_r=b"\0" + sig.signature_r).to_bytes()
    with pytest.raises(AttestationCheckFailed, match="longer than 32 bytes") as caught:
        verify_quote(data, long, ak_public(EC_AK), NONCE, {"sha256": PCRS}, policy=ENROLLED)
    assert caught.value.check == "signature"
