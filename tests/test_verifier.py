"""The verifier: every check of a TPM attestation, each failing on its own, and interop.

Quotes and certifications made by tpm2-tools on swtpm (saved vectors, and fresh ones from the
session swtpm) verify; for each check one field is changed (and the attestation re-signed, so
that exactly that check is what fails) and exactly that check's error is expected. Hypothesis
damages valid attestations: nothing damaged is accepted, and only entra_keys errors come out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import assume, given
from hypothesis import strategies as st

from entra_keys import KeyType, KeyUsage, open_provider
from entra_keys.attestation import (
    AKEvidence,
    TrustPolicy,
    ek_certificate_url,
    load_ca_bundle,
    parse_event_log,
    parse_platform_certificate,
    verify_attestation_object,
    verify_certify,
    verify_ek_certificate,
    verify_quote,
)
from entra_keys.errors import (
    AttestationCheckFailed,
    AttestationError,
    Check,
    EntraKeysError,
    InvalidData,
    MalformedAttestation,
)
from entra_keys.providers.software_attest import software_tpmt_public
from entra_keys.tcg import (
    SOFTWARE_FIRMWARE_VERSION,
    SOFTWARE_SIGNER_PREFIX,
    TPMA_OBJECT,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSClockInfo,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
    parse_tpm2_pcrs_file,
    write_checkquote_files,
)
from entra_keys.tcg.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_HMAC,
    TPM_ALG_KEYEDHASH,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMSKeyedHashParms,
    TPMSPCRSelection,
    TPMTScheme,
)
from entra_keys.testing.swtpm import Swtpm

from .helpers import IN_CI, load_vectors, raises_check, transient_handles

VECTORS: dict[str, Any] = load_vectors("swtpm_tpm2_tools.json")
NONCE = bytes(range(20))
PCRS = {0: bytes(32), 7: bytes([7]) * 32, 16: bytes([16]) * 32}
RSA_AK = rsa.generate_private_key(65537, 2048)
# Fixed EC keys, so that Hypothesis' saved examples stay meaningful from run to run.
EC_AK = ec.derive_private_key(0x5EC2E7AC, ec.SECP256R1())
DEVICE = ec.derive_private_key(0xDE71CE, ec.SECP256R1())
AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
VECTOR_TIME = datetime(2027, 1, 1, tzinfo=UTC)  # the vectors' certificates were made in 2026


def vec(name: str, field: str) -> bytes:
    return bytes.fromhex(VECTORS[name][field])


def ak_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, attrs: int = AK_ATTRS) -> bytes:
    """The AK's TPMT_PUBLIC as a TPM would give it (RSASSA-SHA256 or ECDSA-SHA256)."""
    alg = TPM_ALG_RSASSA if isinstance(key, rsa.RSAPrivateKey) else TPM_ALG_ECDSA
    public = TPMTPublic.from_public_key(
        key.public_key(), attrs, scheme=TPMTScheme(alg, TPM_ALG_SHA256)
    )
    return public.to_bytes()


def sign(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    data: bytes,
    hash_alg: int = TPM_ALG_SHA256,
    pss: bool = False,
) -> bytes:
    """TPMT_SIGNATURE over the bytes, as a TPM's AK signs."""
    h = {TPM_ALG_SHA1: hashes.SHA1(), TPM_ALG_SHA256: hashes.SHA256(),
         TPM_ALG_SHA384: hashes.SHA384()}[hash_alg]  # fmt: skip
    if isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH) if pss else padding.PKCS1v15()
        )
        alg = TPM_ALG_RSAPSS if pss else TPM_ALG_RSASSA
        return TPMTSignature(alg, hash_alg, key.sign(data, pad, h)).to_bytes()
    der = key.sign(data, ec.ECDSA(h))
    return TPMTSignature.from_signature(TPM_ALG_ECDSA, hash_alg, der, key.public_key()).to_bytes()


def quote_attest(**changes: Any) -> TPMSAttest:
    """A hardware-looking quote over PCRS with NONCE; fields replaced as asked."""
    digest = hashlib.sha256(b"".join(PCRS[i] for i in sorted(PCRS))).digest()
    attest = TPMSAttest(
        magic=TPM_GENERATED_VALUE,
        type=TPM_ST_ATTEST_QUOTE,
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=NONCE,
        clock_info=TPMSClockInfo(1234, 2, 0, True),
        firmware_version=0x2019102300163636,
        attested=TPMSQuoteInfo(TPMLPCRSelection.of({"sha256": PCRS}), digest),
    )
    return dataclasses.replace(attest, **changes)


def quote_body() -> TPMSQuoteInfo:
    body = quote_attest().attested
    assert isinstance(body, TPMSQuoteInfo)
    return body


def check_quote(
    attest: TPMSAttest | bytes,
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = RSA_AK,
    signature: bytes | None = None,
    ak: Any = None,
    nonce: bytes = NONCE,
    pcrs: dict[str, dict[int, bytes]] | None = None,
    policy: TrustPolicy | None = None,
) -> Any:
    data = attest.to_bytes() if isinstance(attest, TPMSAttest) else attest
    return verify_quote(
        data,
        sign(key, data) if signature is None else signature,
        ak_public(key) if ak is None else ak,
        nonce,
        {"sha256": PCRS} if pcrs is None else pcrs,
        policy=policy,
    )


def device_public(attrs: int | None = None) -> bytes:
    public = TPMTPublic.parse(software_tpmt_public(DEVICE.public_key(), KeyUsage.SIGN))
    if attrs is None:
        return public.to_bytes()
    return dataclasses.replace(public, object_attributes=attrs).to_bytes()


def certify_attest(key_public: bytes, **changes: Any) -> TPMSAttest:
    name = TPMTPublic.parse(key_public).name()
    return quote_attest(type=TPM_ST_ATTEST_CERTIFY, attested=TPMSCertifyInfo(name, name), **changes)


def check_certify(
    key_public: bytes,
    attest: TPMSAttest | None = None,
    *,
    nonce: bytes = NONCE,
    policy: TrustPolicy | None = None,
    expected_key: Any = None,
) -> Any:
    data = (attest or certify_attest(key_public)).to_bytes()
    return verify_certify(
        data, sign(EC_AK, data), ak_public(EC_AK), key_public, nonce,
        policy=policy, expected_key=expected_key,
    )  # fmt: skip


#: The test AKs, as a verifier that enrolled them knows them: evidence that makes hardware.
ENROLLED = TrustPolicy(enrolled_aks=[ak_public(RSA_AK), ak_public(EC_AK)])
#: A verifier that opted in to bare public keys as AKs (never hardware).
BARE = TrustPolicy(allow_unverified_ak=True)
VECTOR_AKS = TrustPolicy(enrolled_aks=[vec("ak_rsa", "public"), vec("ak_ecc", "public")])


# --- what tpm2-tools on swtpm made verifies ------------------------------------------------------


def test_tpm2_quote_vector_verifies_and_says_what_was_checked() -> None:
    _, values = parse_tpm2_pcrs_file(vec("quote_rsa", "pcrs_file"))
    result = verify_quote(
        vec("quote_rsa", "attest"), vec("quote_rsa", "signature"), vec("ak_rsa", "public"),
        vec("quote_rsa", "nonce"), {"sha256": values[TPM_ALG_SHA256]}, policy=VECTOR_AKS,
    )  # fmt: skip
    assert result.hardware_backed and result.ak_evidence is AKEvidence.ENROLLED
    assert sorted(result.pcr_values["sha256"]) == [0, 1, 7, 16]
    assert result.checks[:4] == ("trust", "hash", "signature-scheme", "signature")
    assert result.checks[-2:] == ("pcr-selection", "pcr-digest")
    assert result.attest.firmware_version == 0x2019102300163636
    assert result.signature.sig_alg == TPM_ALG_RSASSA


def test_tpm2_quote_with_a_sha1_bank_needs_allow_sha1() -> None:
    _, values = parse_tpm2_pcrs_file(vec("quote_ecc", "pcrs_file"))
    banks = {"sha256": values[TPM_ALG_SHA256], "sha1": values[TPM_ALG_SHA1]}
    args = (vec("quote_ecc", "attest"), vec("quote_ecc", "signature"), vec("ak_ecc", "public"),
            vec("quote_ecc", "nonce"), banks)  # fmt: skip
    with pytest.raises(AttestationCheckFailed, match="sha1 PCR bank") as caught:
        verify_quote(*args)
    assert caught.value.check == "hash"
    # tpm2_quote was given a 5-byte nonce here: every check before the nonce's passes (the
    # sha1 bank, the signature, magic, type), and the short nonce is refused.
    with pytest.raises(AttestationCheckFailed, match="at least 8") as caught:
        verify_quote(*args, policy=TrustPolicy(allow_sha1=True))
    assert caught.value.check == "nonce"


@pytest.mark.parametrize("which", ["certify_rsa", "certify_ecc"])
def test_tpm2_certify_vectors_pass_every_check_up_to_their_fixed_nonce(which: str) -> None:
    """tpm2_certify 5.4 always sets extraData 00ff55aa: a constant, replayable 4-byte nonce.
    Every check before the nonce (trust, hash, scheme, signature, magic, type, name) passes on
    its output; the nonce is refused for its size, and the same bytes under another AK fail
    at the signature, so the order of the checks is what the refusal proves."""
    ak = VECTORS[which]["ak"]
    key_public = vec(which, "key_public")
    expected = TPMTPublic.parse(key_public).public_key()
    args = (vec(which, "attest"), vec(which, "signature"), vec(ak, "public"), key_public,
            vec(which, "nonce"))  # fmt: skip
    assert vec(which, "nonce") == bytes.fromhex("00ff55aa")
    with pytest.raises(
        AttestationCheckFailed, match="4 bytes; a verifier's nonce is at least 8"
    ) as caught:
        verify_certify(*args, expected_key=expected, policy=VECTOR_AKS)
    assert caught.value.check == "nonce"
    other = "ak_ecc" if ak == "ak_rsa" else "ak_rsa"
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_certify(*args[:2], vec(other, "public"), *args[3:], expected_key=expected)
    assert caught.value.check == "signature"


# --- one check at a time -------------------------------------------------------------------------


def test_a_well_made_quote_passes() -> None:
    for key in (RSA_AK, EC_AK):
        result = check_quote(quote_attest(), key=key, policy=ENROLLED)
        assert result.hardware_backed and result.nonce == NONCE
        assert result.ak_evidence is AKEvidence.ENROLLED
        # The same quote with no evidence for the AK is valid but proves no hardware.
        unverified = check_quote(quote_attest(), key=key)
        assert not unverified.hardware_backed
        assert unverified.ak_evidence is AKEvidence.UNVERIFIED


def test_trust_ak_not_trusted() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with raises_check(Check.TRUST, match="does not trust") as caught:
        check_quote(quote_attest(), policy=TrustPolicy(trusted_aks=[other.public_key()]))
    assert caught.value.check == "trust"
    check_quote(quote_attest(), policy=TrustPolicy(trusted_aks=[ak_public(RSA_AK)]))

    class NoOne(TrustPolicy):
        def trust_ak(self, ak_public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bool:
            return False

    with raises_check(Check.TRUST):
        check_quote(quote_attest(), policy=NoOne())


def test_trust_ak_that_is_not_a_restricted_signing_key() -> None:
    unrestricted = ak_public(RSA_AK, AK_ATTRS & ~TPMA_OBJECT.RESTRICTED)
    with raises_check(Check.TRUST, match="not a restricted signing key"):
        check_quote(quote_attest(), ak=unrestricted)


def test_hash_sha1_signature_is_refused_unless_allowed() -> None:
    data = quote_attest().to_bytes()
    sha1_signature = sign(RSA_AK, data, TPM_ALG_SHA1)
    with pytest.raises(AttestationCheckFailed, match="sha1 is refused") as caught:
        check_quote(data, signature=sha1_signature, ak=RSA_AK.public_key(), policy=BARE)
    assert caught.value.check == "hash"
    # The quoted PCR digest is made with the signing hash: SHA-1 here.
    digest = hashlib.sha1(b"".join(PCRS[i] for i in sorted(PCRS))).digest()
    sha1_quote = quote_attest(attested=dataclasses.replace(quote_body(), pcr_digest=digest))
    data = sha1_quote.to_bytes()
    check_quote(data, signature=sign(RSA_AK, data, TPM_ALG_SHA1), ak=RSA_AK.public_key(),
                policy=TrustPolicy(allow_sha1=True, allow_unverified_ak=True))  # fmt: skip


def test_signature_scheme_must_fit_the_key() -> None:
    data = quote_attest().to_bytes()
    with pytest.raises(AttestationCheckFailed, match="does not fit an RSA") as caught:
        check_quote(data, signature=sign(EC_AK, data))
    assert caught.value.check == "signature"
    # The AK's public area fixes RSASSA-SHA256; an RSA-PSS signature by the same key is refused.
    pss = sign(RSA_AK, data, pss=True)
    with pytest.raises(AttestationCheckFailed, match="the AK signs with scheme 0x0014") as caught:
        check_quote(data, signature=pss)
    assert caught.value.check == "signature"
    # A bare key (opted in) fixes no scheme: PSS verifies, and the AK stays unverified.
    result = check_quote(data, signature=pss, ak=RSA_AK.public_key(), policy=BARE)
    assert result.ak_evidence is AKEvidence.UNVERIFIED and not result.hardware_backed


def test_signature_over_other_bytes_fails() -> None:
    data = quote_attest().to_bytes()
    signature = sign(RSA_AK, data)
    changed = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(AttestationCheckFailed, match="does not verify") as caught:
        check_quote(changed, signature=signature)
    assert caught.value.check == "signature"
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(AttestationCheckFailed) as caught:
        check_quote(data, signature=sign(other, data))
    assert caught.value.check == "signature"


def test_ecdsa_coordinates_longer_than_the_curve_are_refused() -> None:
    data = quote_attest().to_bytes()
    good = TPMTSignature.parse(sign(EC_AK, data))
    padded = dataclasses.replace(good, signature_r=b"\0" + good.signature_r)
    with pytest.raises(AttestationCheckFailed, match="longer than 32 bytes") as caught:
        check_quote(data, key=EC_AK, signature=padded.to_bytes())
    assert caught.value.check == "signature"


def test_trailing_bytes_are_refused_even_when_signed() -> None:
    with pytest.raises(MalformedAttestation, match="1 trailing bytes") as caught:
        check_quote(quote_attest().to_bytes() + b"\0")
    assert isinstance(caught.value, InvalidData) and caught.value.check == "structure"


@pytest.mark.parametrize(
    "changes",
    [
        {"firmware_version": SOFTWARE_FIRMWARE_VERSION},
        {"qualified_signer": SOFTWARE_SIGNER_PREFIX + b"\x00\x0b" + bytes(32)},
    ],
    ids=["firmware-mark", "signer-mark"],
)
def test_software_marks_are_refused_unless_allowed(changes: dict[str, Any]) -> None:
    with pytest.raises(AttestationCheckFailed) as caught:
        check_quote(quote_attest(**changes))
    assert caught.value.check == "software"
    result = check_quote(quote_attest(**changes), policy=TrustPolicy(allow_software=True))
    assert result.hardware_backed is False


def test_magic_other_than_tpm_generated() -> None:
    with pytest.raises(AttestationCheckFailed, match="not TPM_GENERATED_VALUE") as caught:
        check_quote(quote_attest(magic=TPM_GENERATED_VALUE + 1))
    assert caught.value.check == "magic"


def test_type_a_certification_is_no_quote_and_back() -> None:
    certification = certify_attest(device_public())
    with pytest.raises(AttestationCheckFailed, match="not a quote") as caught:
        check_quote(certification)
    assert caught.value.check == "type"
    data = quote_attest().to_bytes()
    with pytest.raises(AttestationCheckFailed, match="not a certification") as caught:
        verify_certify(data, sign(EC_AK, data), ak_public(EC_AK), device_public(), NONCE)
    assert caught.value.check == "type"


@pytest.mark.parametrize("nonce", [bytes(20), NONCE[:-1], NONCE + b"\0", NONCE[:8]])
def test_nonce_other_than_the_verifiers(nonce: bytes) -> None:
    with pytest.raises(AttestationCheckFailed, match="extraData is not the nonce") as caught:
        check_quote(quote_attest(), nonce=nonce)
    assert caught.value.check == "nonce"


@pytest.mark.parametrize(
    "expected",
    [
        {"sha256": {0: PCRS[0], 7: PCRS[7]}},  # the quote covers one PCR more
        {"sha256": {**PCRS, 1: bytes(32)}},  # the quote covers one PCR less
        {"sha384": {i: bytes(48) for i in PCRS}},  # another bank
        {"sha256": PCRS, "sha384": {0: bytes(48)}},  # a bank more
    ],
    ids=["more-pcrs", "fewer-pcrs", "other-bank", "more-banks"],
)
def test_pcr_selection_other_than_expected(expected: dict[str, dict[int, bytes]]) -> None:
    with pytest.raises(AttestationCheckFailed, match="the quote covers PCRs sha256:") as caught:
        check_quote(quote_attest(), pcrs=expected)
    assert caught.value.check == "pcr-selection"


def test_pcr_selection_with_a_bank_twice() -> None:
    twice = TPMLPCRSelection(
        (
            TPMSPCRSelection(TPM_ALG_SHA256, frozenset(PCRS)),
            TPMSPCRSelection(TPM_ALG_SHA256, frozenset({1})),
        )
    )
    body = dataclasses.replace(quote_body(), pcr_select=twice)
    with pytest.raises(AttestationCheckFailed) as caught:
        check_quote(quote_attest(attested=body))
    assert caught.value.check == "pcr-selection"


def test_pcr_digest_of_other_values() -> None:
    with pytest.raises(AttestationCheckFailed, match="not the sha256 of the expected") as caught:
        check_quote(quote_attest(), pcrs={"sha256": {**PCRS, 7: bytes(32)}})
    assert caught.value.check == "pcr-digest"
    body = dataclasses.replace(quote_body(), pcr_digest=bytes(32))
    with pytest.raises(AttestationCheckFailed) as caught:
        check_quote(quote_attest(attested=body))
    assert caught.value.check == "pcr-digest"


def test_expected_pcr_values_of_the_wrong_size_are_invalid_data() -> None:
    with pytest.raises(InvalidData, match="expected PCR sha256:0 is 20 bytes, not 32"):
        check_quote(quote_attest(), pcrs={"sha256": {**PCRS, 0: bytes(20)}})
    with pytest.raises(AttestationCheckFailed, match="'md5'") as caught:
        check_quote(quote_attest(), pcrs={"md5": {0: bytes(16)}})
    assert caught.value.check == "hash"


def test_a_well_made_certification_passes() -> None:
    result = check_certify(device_public(), expected_key=DEVICE.public_key(), policy=ENROLLED)
    assert result.public_key == DEVICE.public_key() and result.hardware_backed
    assert result.ak_evidence is AKEvidence.ENROLLED
    assert result.key_public.attributes & TPMA_OBJECT.SIGN_ENCRYPT


def test_name_of_another_key() -> None:
    other = software_tpmt_public(
        ec.generate_private_key(ec.SECP256R1()).public_key(), KeyUsage.SIGN
    )
    with pytest.raises(AttestationCheckFailed, match="not the name of the TPMT_PUBLIC") as caught:
        check_certify(device_public(), certify_attest(other))
    assert caught.value.check == "name"


def test_certify_nonce() -> None:
    with pytest.raises(AttestationCheckFailed) as caught:
        check_certify(device_public(), nonce=b"other")
    assert caught.value.check == "nonce"


@pytest.mark.parametrize(
    "drop",
    [TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.FIXEDPARENT, TPMA_OBJECT.SENSITIVEDATAORIGIN],
    ids=lambda f: f.name,
)
def test_key_attributes_missing(drop: TPMA_OBJECT) -> None:
    attrs = TPMTPublic.parse(device_public()).object_attributes & ~drop
    with pytest.raises(AttestationCheckFailed, match="are not fixedTPM") as caught:
        check_certify(device_public(attrs))
    assert caught.value.check == "key-attributes"


def test_key_attributes_restricted() -> None:
    attrs = TPMTPublic.parse(device_public()).object_attributes | TPMA_OBJECT.RESTRICTED
    with pytest.raises(AttestationCheckFailed, match="unrestricted") as caught:
        check_certify(device_public(attrs))
    assert caught.value.check == "key-attributes"


def test_key_strength() -> None:
    attrs = TPMTPublic.parse(device_public()).object_attributes
    weak_rsa = TPMTPublic.from_public_key(rsa.generate_private_key(65537, 1024).public_key(), attrs)
    with pytest.raises(AttestationCheckFailed, match="RSA-1024 is weaker") as caught:
        check_certify(weak_rsa.to_bytes())
    assert caught.value.check == "key-strength"
    p192 = TPMTPublic.from_public_key(ec.generate_private_key(ec.SECP192R1()).public_key(), attrs)
    with pytest.raises(AttestationCheckFailed, match="curve 0x0001 is not P-256") as caught:
        check_certify(p192.to_bytes())
    assert caught.value.check == "key-strength"
    hmac_scheme = TPMSKeyedHashParms(TPMTScheme(TPM_ALG_HMAC, TPM_ALG_SHA256))
    hmac_key = TPMTPublic(TPM_ALG_KEYEDHASH, TPM_ALG_SHA256, attrs, b"", hmac_scheme, bytes(32))
    with pytest.raises(AttestationCheckFailed, match="not an RSA or ECC key") as caught:
        check_certify(hmac_key.to_bytes())
    assert caught.value.check == "key-strength"


def test_expected_key_mismatch() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(AttestationCheckFailed) as caught:
        check_certify(device_public(), expected_key=other)
    assert caught.value.check == "key"


def test_certified_key_with_a_sha1_name_needs_allow_sha1() -> None:
    sha1_public = dataclasses.replace(TPMTPublic.parse(device_public()), name_alg=TPM_ALG_SHA1)
    with pytest.raises(AttestationCheckFailed, match="nameAlg 0x0004") as caught:
        check_certify(sha1_public.to_bytes())
    assert caught.value.check == "hash"
    check_certify(sha1_public.to_bytes(), policy=TrustPolicy(allow_sha1=True))


def test_every_failure_is_an_attestation_error_naming_its_check() -> None:
    """Each check's failure carries its Check (equal to its name), survives pickling, and the
    subclasses fix theirs; a failure that names no check cannot be made."""
    import pickle

    from entra_keys.errors import Check

    assert len({c.value for c in Check}) == len(Check)  # one name per check
    for check in Check:
        error = pickle.loads(pickle.dumps(AttestationCheckFailed("failed", check)))
        assert isinstance(error, AttestationError) and error.check is check
        assert error.check == check.value and str(error) == "failed"
    assert MalformedAttestation("x").check is Check.STRUCTURE
    assert isinstance(MalformedAttestation("x"), InvalidData)
    with pytest.raises(TypeError):
        AttestationCheckFailed("no check named")


# --- one parse, then the checks: results, expected values, signature forms ---------------------


def test_a_verified_quote_carries_its_parsed_attestation_and_pickles() -> None:
    for key in (RSA_AK, EC_AK):
        result = check_quote(quote_attest(), key=key, policy=ENROLLED)
        assert result.hardware_backed and result.attest == TPMSAttest.parse(result.raw_attest)
        assert result.attest.extra_data == NONCE
        again = pickle.loads(pickle.dumps(result))
        assert again == result and again.attest == result.attest


def test_a_quote_with_a_4_byte_pcr_select_verifies() -> None:
    """A 4-byte pcrSelect (a TPM with more than 24 PCRs) selecting the expected PCRs is right."""
    selection = TPMLPCRSelection((TPMSPCRSelection(TPM_ALG_SHA256, frozenset(PCRS), 4),))
    body = dataclasses.replace(quote_body(), pcr_select=selection)
    assert check_quote(quote_attest(attested=body), policy=ENROLLED).hardware_backed


def test_a_verified_certification_carries_its_attestation_and_pickles() -> None:
    data = certify_attest(device_public()).to_bytes()
    result = verify_certify(
        data, sign(EC_AK, data), ak_public(EC_AK), device_public(), NONCE,
        policy=ENROLLED, expected_key=DEVICE.public_key(),
    )  # fmt: skip
    assert result.hardware_backed and result.attest == TPMSAttest.parse(data)
    again = pickle.loads(pickle.dumps(result))
    assert again == result and again.attest == result.attest
    assert again.public_key == DEVICE.public_key()


def test_a_result_s_pcr_values_cannot_be_changed_by_its_holder() -> None:
    result = check_quote(quote_attest())
    with pytest.raises(TypeError):
        result.pcr_values["sha256"][7] = bytes(32)  # type: ignore[index]
    with pytest.raises(TypeError):
        result.pcr_values["sha1"] = {}  # type: ignore[index]
    assert check_quote(quote_attest()).pcr_values == {"sha256": PCRS}
    assert pickle.loads(pickle.dumps(result)).pcr_values == {"sha256": PCRS}


def test_expected_values_changed_in_place_are_checked_as_they_are_now() -> None:
    expected = {"sha256": dict(PCRS)}
    assert check_quote(quote_attest(), pcrs=expected, policy=ENROLLED).hardware_backed
    expected["sha256"][7] = bytes(32)
    with raises_check(Check.PCR_DIGEST):
        check_quote(quote_attest(), pcrs=expected)


@pytest.mark.parametrize("index", [True, 1.0], ids=["True", "1.0"])
def test_what_python_takes_for_1_is_no_pcr_index(index: Any) -> None:
    one = {1: bytes(32)}
    selection = TPMLPCRSelection.of({"sha256": [1]})
    body = TPMSQuoteInfo(selection, hashlib.sha256(bytes(32)).digest())
    assert check_quote(quote_attest(attested=body), pcrs={"sha256": one}) is not None
    with pytest.raises(InvalidData, match=r"is not 0\.\.31"):
        check_quote(quote_attest(attested=body), pcrs={"sha256": {index: bytes(32)}})


def test_a_bank_named_by_a_float_is_refused() -> None:
    assert check_quote(quote_attest(), pcrs={TPM_ALG_SHA256: PCRS}) is not None
    with raises_check(Check.HASH):
        check_quote(quote_attest(), pcrs={float(TPM_ALG_SHA256): PCRS})  # type: ignore[dict-item]


def test_a_sha1_bank_is_refused_by_a_policy_without_allow_sha1() -> None:
    body = TPMSQuoteInfo(TPMLPCRSelection.of({"sha1": [0]}), hashlib.sha256(bytes(20)).digest())
    data = quote_attest(attested=body).to_bytes()
    args = (data, sign(RSA_AK, data), ak_public(RSA_AK), NONCE, {"sha1": {0: bytes(20)}})
    assert not verify_quote(*args, policy=TrustPolicy(allow_sha1=True)).hardware_backed
    with raises_check(Check.HASH, match="sha1 PCR bank is refused"):
        verify_quote(*args)


def test_trust_is_checked_before_the_expected_banks() -> None:
    """The documented order: trust first. An AK the policy does not trust, signing nothing it
    made, with a SHA-1 bank expected, is refused as TRUST, not HASH; a bad boot policy's type
    is refused with the inputs, before any check."""
    body = TPMSQuoteInfo(TPMLPCRSelection.of({"sha1": [0]}), hashlib.sha256(bytes(20)).digest())
    data = quote_attest(attested=body).to_bytes()
    untrusted = TrustPolicy(trusted_aks=[EC_AK.public_key()])
    args = (data, sign(EC_AK, data), ak_public(RSA_AK), NONCE, {"sha1": {0: bytes(20)}})
    with raises_check(Check.TRUST):
        verify_quote(*args, policy=untrusted)
    with pytest.raises(InvalidData, match="boot_policy is a BootPolicy"):
        verify_quote(*args, policy=untrusted, boot_policy={"secure_boot": True})  # type: ignore[arg-type]


def test_bytearray_pcr_values_are_taken_as_they_are_at_the_call() -> None:
    values = {i: bytearray(v) for i, v in PCRS.items()}
    assert check_quote(quote_attest(), pcrs={"sha256": values}).pcr_values == {"sha256": PCRS}
    values[7] = bytearray(32)
    with raises_check(Check.PCR_DIGEST):
        check_quote(quote_attest(), pcrs={"sha256": values})


def test_rsa_signatures_of_another_scheme_hash_or_size_are_refused() -> None:
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


def test_an_ecdsa_r_without_its_leading_zero_verifies() -> None:
    """A TPM may give r without its leading zero byte: right; r longer than the curve is
    refused."""
    data = quote_attest().to_bytes()
    sig = TPMTSignature.parse(sign(EC_AK, data))
    while sig.signature_r[0] != 0:  # ECDSA is randomized: 1 signature in 256 has one
        sig = TPMTSignature.parse(sign(EC_AK, data))
    short = dataclasses.replace(sig, signature_r=sig.signature_r[1:]).to_bytes()
    result = verify_quote(data, short, ak_public(EC_AK), NONCE, {"sha256": PCRS}, policy=ENROLLED)
    assert result.hardware_backed and result.signature.signature_r == sig.signature_r[1:]
    long = dataclasses.replace(sig, signature_r=b"\0" + sig.signature_r).to_bytes()
    with raises_check(Check.SIGNATURE, match="longer than 32 bytes"):
        verify_quote(data, long, ak_public(EC_AK), NONCE, {"sha256": PCRS}, policy=ENROLLED)


# --- software attestations -----------------------------------------------------------------------


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value)
def test_software_provider_attestations_are_never_taken_for_hardware(key_type: KeyType) -> None:
    provider = open_provider("software")
    ak = provider.create_key(key_type, KeyUsage.ATTEST)
    ak_tpmt = software_tpmt_public(ak.public_key(), KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 7], NONCE)
    args = (quote.attest, quote.signature, ak_tpmt, NONCE, {quote.pcr_bank: quote.pcr_values})
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_quote(*args)
    assert caught.value.check == "software"
    assert verify_quote(*args, policy=TrustPolicy(allow_software=True)).hardware_backed is False
    key = provider.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    cert = provider.certify(key, ak, NONCE)
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_certify(cert.attest, cert.signature, ak_tpmt, cert.key_public, NONCE)
    assert caught.value.check == "software"
    allowed = TrustPolicy(allow_software=True)
    result = verify_certify(cert.attest, cert.signature, ak_tpmt, cert.key_public, NONCE,
                            policy=allowed, expected_key=key.public_key())  # fmt: skip
    assert result.hardware_backed is False
    with pytest.raises(AttestationError, match="at most 32"):
        provider.quote(ak, [0], bytes(33))


# --- Hypothesis: damaged attestations are never accepted -----------------------------------------

VALID = quote_attest().to_bytes()
VALID_SIGNATURE = sign(EC_AK, VALID)
EC_AK_PUBLIC = ak_public(EC_AK)


@st.composite
def damaged_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "cut", "append", "delete"]))
        where = draw(st.integers(0, len(data) - 1)) if data else 0
        if action == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[where:]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[where]
    return bytes(data)


@given(attest=damaged_bytes(VALID) | st.binary(max_size=200), resign=st.booleans())
def test_damaged_quotes_are_never_accepted(attest: bytes, resign: bool) -> None:
    signature = sign(EC_AK, attest) if resign else VALID_SIGNATURE
    try:
        result = verify_quote(attest, signature, EC_AK_PUBLIC, NONCE, {"sha256": PCRS})
    except EntraKeysError:
        return
    # Accepted only when what the checks cover is unchanged (a re-signed clock change passes).
    assert resign or attest == VALID
    original, got = quote_attest(), result.attest
    assert (got.magic, got.type, got.extra_data, got.attested) == (
        original.magic, original.type, original.extra_data, original.attested,
    )  # fmt: skip


@given(signature=damaged_bytes(VALID_SIGNATURE) | st.binary(max_size=100))
def test_damaged_signatures_are_never_accepted(signature: bytes) -> None:
    assume(signature != VALID_SIGNATURE)  # two flips of one bit undo each other
    with pytest.raises(EntraKeysError):
        verify_quote(VALID, signature, EC_AK_PUBLIC, NONCE, {"sha256": PCRS})


def _swap_signer_and_nonce(attest: TPMSAttest) -> TPMSAttest:
    return dataclasses.replace(
        attest, qualified_signer=attest.extra_data, extra_data=attest.qualified_signer
    )


def _swap_names(attest: TPMSAttest) -> TPMSAttest:
    body = attest.attested
    assert isinstance(body, TPMSCertifyInfo)
    return dataclasses.replace(attest, attested=TPMSCertifyInfo(body.qualified_name, body.name))


def _swap_nonce_and_digest(attest: TPMSAttest) -> TPMSAttest:
    body = attest.attested
    assert isinstance(body, TPMSQuoteInfo)
    swapped = TPMSQuoteInfo(body.pcr_select, attest.extra_data)
    return dataclasses.replace(attest, extra_data=body.pcr_digest, attested=swapped)


def _swap_type(attest: TPMSAttest) -> TPMSAttest:
    kind = TPM_ST_ATTEST_CERTIFY if attest.type == TPM_ST_ATTEST_QUOTE else TPM_ST_ATTEST_QUOTE
    return dataclasses.replace(attest, type=kind)


@given(
    swap=st.sampled_from([_swap_signer_and_nonce, _swap_names, _swap_nonce_and_digest, _swap_type]),
    certify=st.booleans(),
)
def test_swapped_fields_are_never_accepted(swap: Any, certify: bool) -> None:
    device = device_public()
    name = TPMTPublic.parse(device).name()
    attest = dataclasses.replace(
        certify_attest(device) if certify else quote_attest(),
        qualified_signer=b"\x00\x0b" + bytes(range(32)),
    )
    if certify:
        attest = dataclasses.replace(attest, attested=TPMSCertifyInfo(name, name[:2] + bytes(32)))
    try:
        data = swap(attest).to_bytes()
    except AssertionError:  # that swap does not apply to this kind of attestation
        return
    signature = sign(EC_AK, data)
    if certify:
        with pytest.raises(EntraKeysError):
            verify_certify(data, signature, EC_AK_PUBLIC, device, NONCE)
    else:
        with pytest.raises(EntraKeysError):
            verify_quote(data, signature, EC_AK_PUBLIC, NONCE, {"sha256": PCRS})


@given(
    attest=st.binary(max_size=150),
    signature=st.binary(max_size=80),
    key=st.binary(max_size=80) | st.just(EC_AK_PUBLIC),
)
def test_random_bytes_raise_only_entra_keys_errors(
    attest: bytes, signature: bytes, key: bytes
) -> None:
    with pytest.raises(EntraKeysError):
        verify_quote(attest, signature, key, NONCE, {"sha256": PCRS})
    with pytest.raises(EntraKeysError):
        verify_certify(attest, signature, key, attest, NONCE)


# --- EK and platform certificates ----------------------------------------------------------------

CA = [VECTORS["ca"]["root"].encode(), VECTORS["ca"]["issuer"].encode()]


@pytest.mark.parametrize("which", ["ek_rsa", "ek_ecc"])
def test_ek_certificates_chain_to_the_swtpm_ca_and_name_the_tpm(which: str) -> None:
    info = verify_ek_certificate(
        vec(which, "certificate"), CA, ek_public=vec(which, "public"), at=VECTOR_TIME
    )
    assert (info.manufacturer, info.model, info.version) == ("id:00001014", "swtpm", "id:20191023")
    assert info.manufacturer_id == 0x1014 and info.tpm_specification == ("2.0", 0, 164)
    assert len(info.chain) == 2
    # With only the root trusted, the issuer comes in as an untrusted intermediate.
    chained = verify_ek_certificate(
        vec(which, "certificate"), CA[:1], intermediates=CA[1:], at=VECTOR_TIME
    )
    assert len(chained.chain) == 3


def test_ek_certificate_refusals() -> None:
    cert = vec("ek_rsa", "certificate")
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed") as caught:
        verify_ek_certificate(cert, CA[:1], at=VECTOR_TIME)  # the issuer is missing
    assert caught.value.check == "certificate"
    with raises_check(Check.CERTIFICATE, match="is valid from"):
        verify_ek_certificate(cert, CA, at=datetime(2000, 1, 1, tzinfo=UTC))
    with raises_check(Check.CERTIFICATE, match="for another key"):
        verify_ek_certificate(cert, CA, ek_public=vec("ek_ecc", "public"), at=VECTOR_TIME)
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):
        verify_ek_certificate(cert, [], at=VECTOR_TIME)
    with raises_check(Check.CERTIFICATE, match=r"not an X\.509 certificate"):
        verify_ek_certificate(cert[:-3], CA, at=VECTOR_TIME)
    policy = TrustPolicy(ek_ca_certificates=CA)
    assert verify_ek_certificate(cert, policy=policy, at=VECTOR_TIME).model == "swtpm"


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


#: tcg-kp-EKCertificate, the key purpose an EK certificate names (TCG EK Credential Profile).
EK_KEY_PURPOSE = x509.ObjectIdentifier("2.23.133.8.1")


def _leaf(
    issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, *extensions: tuple[Any, bool]
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key()).serial_number(2)
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(hours=1))
    )  # fmt: skip
    if not any(isinstance(e, x509.ExtendedKeyUsage) for e, _ in extensions):  # as EK profile
        extensions = (*extensions, (x509.ExtendedKeyUsage([EK_KEY_PURPOSE]), False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def test_ek_certificate_critical_extensions_are_handled_deliberately() -> None:
    key, ca = _ca("test EK CA")
    tpm = x509.DirectoryName(x509.Name([
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:49465800"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "SLB9670"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00070055"),
    ]))  # fmt: skip
    # The EK profile's shape: empty subject, critical subjectAltName: accepted.
    ok = _leaf(key, ca, (x509.SubjectAlternativeName([tpm]), True))
    info = verify_ek_certificate(ok.public_bytes(serialization.Encoding.DER), [ca])
    assert (info.manufacturer_id, info.model) == (0x49465800, "SLB9670")
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")
    bad = _leaf(key, ca, (unknown, True))
    with raises_check(Check.CERTIFICATE, match=r"critical extension 1\.2\.3\.4"):
        verify_ek_certificate(bad.public_bytes(serialization.Encoding.DER), [ca])
    server = _leaf(
        key, ca, (x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.5.5.7.3.1")]), False)
    )
    with raises_check(Check.CERTIFICATE, match="do not include EK"):
        verify_ek_certificate(server.public_bytes(serialization.Encoding.DER), [ca])
    # A certificate that is not a CA cannot issue EK certificates.
    now = datetime.now(UTC)
    not_ca = (
        x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(3)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    with raises_check(Check.CERTIFICATE, match="is not a CA"):
        verify_ek_certificate(ok.public_bytes(serialization.Encoding.DER), [not_ca])


def test_platform_certificate_of_swtpm() -> None:
    info = parse_platform_certificate(bytes.fromhex(VECTORS["platform_certificate"]))
    assert (info.form, info.manufacturer, info.model, info.version) == (
        "x509", "entra_keys", "swtpm", "2.1",
    )  # fmt: skip
    with pytest.raises(InvalidData, match="not a TCG platform certificate"):
        parse_platform_certificate(b"\x30\x03\x02\x01\x01")


def test_platform_attribute_certificate() -> None:
    """An RFC 5755 attribute certificate as the IWG Platform Certificate Profile has it."""
    from asn1crypto import cms, core
    from asn1crypto import x509 as asn1_x509

    def oid_value(oid: str, text: str) -> dict[str, Any]:
        return {"type": oid, "value": core.UTF8String(text)}

    directory = asn1_x509.Name.build({"common_name": "Platform CA"})
    platform = asn1_x509.Name(
        name="", value=asn1_x509.RDNSequence([
            asn1_x509.RelativeDistinguishedName([oid_value("2.23.133.5.1.1", "Contoso")]),
            asn1_x509.RelativeDistinguishedName([oid_value("2.23.133.5.1.4", "Laptop 9")]),
            asn1_x509.RelativeDistinguishedName([oid_value("2.23.133.5.1.5", "1.0")]),
            asn1_x509.RelativeDistinguishedName([oid_value("2.23.133.5.1.6", "SN-42")]),
        ]),
    )  # fmt: skip
    info = cms.AttributeCertificateInfoV2({
        "version": "v2",
        "holder": {"base_certificate_id": {
            "issuer": [asn1_x509.GeneralName(name="directory_name", value=directory)],
            "serial": 7,
        }},
        "issuer": cms.AttCertIssuer(name="v2_form", value={
            "issuer_name": [asn1_x509.GeneralName(name="directory_name", value=directory)],
        }),
        "signature": {"algorithm": "sha256_ecdsa"},
        "serial_number": 99,
        "att_cert_validity_period": {
            "not_before_time": datetime(2024, 1, 1, tzinfo=UTC),
            "not_after_time": datetime(2034, 1, 1, tzinfo=UTC),
        },
        "attributes": [],
        "extensions": [{
            "extn_id": "subject_alt_name", "critical": False,
            "extn_value": [asn1_x509.GeneralName(name="directory_name", value=platform)],
        }],
    })  # fmt: skip
    signature = EC_AK.sign(info.dump(), ec.ECDSA(hashes.SHA256()))
    der = cms.AttributeCertificateV2({
        "ac_info": info, "signature_algorithm": {"algorithm": "sha256_ecdsa"},
        "signature": signature,
    }).dump()  # fmt: skip
    parsed = parse_platform_certificate(der)
    assert (parsed.form, parsed.manufacturer, parsed.model, parsed.version, parsed.serial) == (
        "attribute", "Contoso", "Laptop 9", "1.0", "SN-42",
    )  # fmt: skip
    assert parsed.serial_number == 99 and parsed.holder_serial_number == 7


# --- interop with tpm2-tools on the session swtpm ------------------------------------------------


def tools(swtpm: Swtpm, *args: str, cwd: Path) -> str:
    """Runs a tpm2-tools command on the session swtpm and flushes what it left loaded."""
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti}
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, capture_output=True, check=False)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done.stdout


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        if IN_CI:
            pytest.fail(f"CI=true and {tool} is not installed", pytrace=False)
        pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module")
def tool_aks(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An RSA and an ECC AK made by tpm2_createak under the swtpm's RSA EK (contexts saved)."""
    need("tpm2_createak")
    folder = tmp_path_factory.mktemp("tool-aks")
    for alg, scheme in (("rsa", "rsassa"), ("ecc", "ecdsa")):
        tools(swtpm, "tpm2_createak", "-C", "0x81010001", "-c", f"ak_{alg}.ctx", "-G", alg,
              "-g", "sha256", "-s", scheme, "-u", f"ak_{alg}.pub", "-f", "tpmt",
              "-n", f"ak_{alg}.name", cwd=folder)  # fmt: skip
    yield folder
    assert transient_handles(swtpm.tcti) == []


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_fresh_tpm2_quote_verifies(swtpm: Swtpm, tool_aks: Path, alg: str) -> None:
    nonce = os.urandom(16)
    tools(swtpm, "tpm2_quote", "-c", f"ak_{alg}.ctx", "-l", "sha256:0,1,7,16", "-q", nonce.hex(),
          "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs", "-g", "sha256", cwd=tool_aks)  # fmt: skip
    _, values = parse_tpm2_pcrs_file((tool_aks / "q.pcrs").read_bytes())
    args = ((tool_aks / "q.msg").read_bytes(), (tool_aks / "q.sig").read_bytes(),
            (tool_aks / f"ak_{alg}.pub").read_bytes())  # fmt: skip
    enrolled = TrustPolicy(enrolled_aks=[args[2]])  # tpm2-tools' TPM2B_PUBLIC of the AK
    result = verify_quote(*args, nonce, {"sha256": values[TPM_ALG_SHA256]}, policy=enrolled)
    assert result.hardware_backed and result.ak_evidence is AKEvidence.ENROLLED
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_quote(*args, os.urandom(16), {"sha256": values[TPM_ALG_SHA256]})
    assert caught.value.check == "nonce"
    assert transient_handles(swtpm.tcti) == []


def test_fresh_tpm2_certify_verifies(swtpm: Swtpm, tool_aks: Path) -> None:
    cwd = tool_aks
    tools(
        swtpm,
        "tpm2_createprimary",
        "-C",
        "o",
        "-G",
        "ecc256:null:aes128cfb",
        "-c",
        "srk.ctx",
        cwd=cwd,
    )
    tools(swtpm, "tpm2_create", "-C", "srk.ctx", "-G", "ecc256:null:null", "-u", "key.pub",
          "-r", "key.priv", "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|sign",
          cwd=cwd)  # fmt: skip
    tools(
        swtpm,
        "tpm2_load",
        "-C",
        "srk.ctx",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        "-c",
        "key.ctx",
        cwd=cwd,
    )
    tools(swtpm, "tpm2_readpublic", "-c", "key.ctx", "-f", "tpmt", "-o", "key.tpmt", cwd=cwd)
    tools(swtpm, "tpm2_certify", "-c", "key.ctx", "-C", "ak_ecc.ctx", "-g", "sha256",
          "-o", "c.attest", "-s", "c.sig", cwd=cwd)  # fmt: skip
    key_public = (cwd / "key.tpmt").read_bytes()
    args = ((cwd / "c.attest").read_bytes(), (cwd / "c.sig").read_bytes(),
            (cwd / "ak_ecc.pub").read_bytes(), key_public)  # fmt: skip
    # tpm2_certify 5.4 takes no nonce and always sets 00ff55aa: every check before the nonce's
    # passes on its output (signature, magic, type, name), then the 4-byte nonce is refused.
    with pytest.raises(AttestationCheckFailed, match="4 bytes") as caught:
        verify_certify(*args, bytes.fromhex("00ff55aa"))
    assert caught.value.check == "nonce"
    # the name check ran: another key's public fails it
    with pytest.raises(AttestationCheckFailed) as caught:
        verify_certify(*args[:3], device_public(), bytes.fromhex("00ff55aa"))
    assert caught.value.check == "name"
    assert transient_handles(swtpm.tcti) == []


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.ECC256], ids=lambda t: t.value)
def test_tpm2_checkquote_accepts_a_software_quote(tmp_path: Path, key_type: KeyType) -> None:
    need("tpm2_checkquote")
    provider = open_provider("software")
    ak = provider.create_key(key_type, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 1, 7, 16], NONCE)
    files = write_checkquote_files(quote, tmp_path)
    (tmp_path / "ak.pem").write_bytes(ak.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    command = ["tpm2_checkquote", "-u", "ak.pem", "-m", files.message.name, "-s",
               files.signature.name, "-f", files.pcrs.name, "-g", "sha256"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TPM2TOOLS_TCTI"}
    good = subprocess.run(
        [*command, "-q", NONCE.hex()], cwd=tmp_path, env=env, capture_output=True, check=False
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [*command, "-q", bytes(20).hex()], cwd=tmp_path, env=env, capture_output=True, check=False
    )
    assert bad.returncode != 0


def test_swtpm_ek_and_platform_certificates_from_nv(swtpm: Swtpm, tmp_path: Path) -> None:
    for index, handle in (("0x01c00002", "0x81010001"), ("0x01c00016", "0x81010016")):
        tools(swtpm, "tpm2_nvread", index, "-o", "ek.crt", cwd=tmp_path)
        tools(swtpm, "tpm2_readpublic", "-c", handle, "-f", "tpmt", "-o", "ek.pub", cwd=tmp_path)
        info = verify_ek_certificate(
            (tmp_path / "ek.crt").read_bytes(),
            [p.read_bytes() for p in swtpm.ca_certificates],
            ek_public=(tmp_path / "ek.pub").read_bytes(),
        )
        assert info.model == "swtpm"
    tools(swtpm, "tpm2_nvread", "0x01c08000", "-o", "platform.crt", cwd=tmp_path)
    platform = parse_platform_certificate((tmp_path / "platform.crt").read_bytes())
    assert (platform.manufacturer, platform.model, platform.version) == (
        "entra_keys",
        "swtpm",
        "2.1",
    )
    assert transient_handles(swtpm.tcti) == []


def test_the_verifier_works_without_tpm2_pytss() -> None:
    """A service imports the verifier where libtss2 is absent: tpm2_pytss is made unimportable."""
    code = (
        "import sys, json; sys.modules['tpm2_pytss'] = None\n"
        "from entra_keys.attestation import verify_certify\n"
        "v = json.load(open(sys.argv[1]))\n"
        "h = lambda n, f: bytes.fromhex(v[n][f])\n"
        "from entra_keys.attestation import TrustPolicy, verify_quote\n"
        "from entra_keys.tcg import parse_tpm2_pcrs_file\n"
        "_, pcrs = parse_tpm2_pcrs_file(h('quote_rsa', 'pcrs_file'))\n"
        "policy = TrustPolicy(enrolled_aks=[h('ak_rsa', 'public')])\n"
        "r = verify_quote(h('quote_rsa', 'attest'), h('quote_rsa', 'signature'),"
        " h('ak_rsa', 'public'), h('quote_rsa', 'nonce'), {'sha256': pcrs[0x000B]},"
        " policy=policy)\n"
        "loaded = [m for m in sys.modules if sys.modules[m] is not None]\n"
        "assert r.hardware_backed and not [m for m in loaded if m.startswith('tpm2_pytss')]\n"
    )
    vectors = Path(__file__).parent / "vectors" / "swtpm_tpm2_tools.json"
    src = str(Path(__file__).parent.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code, str(vectors)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@given(
    certificate=damaged_bytes(vec("ek_rsa", "certificate"))
    | damaged_bytes(bytes.fromhex(VECTORS["platform_certificate"]))
    | st.binary(max_size=64)
)
def test_damaged_certificates_raise_only_entra_keys_errors(certificate: bytes) -> None:
    try:
        info = verify_ek_certificate(certificate, CA, at=VECTOR_TIME)
    except EntraKeysError:
        pass
    else:  # only a change the signature does not cover (the outer signature's encoding) passes
        assert (
            info.certificate.tbs_certificate_bytes
            == x509.load_der_x509_certificate(vec("ek_rsa", "certificate")).tbs_certificate_bytes
        )
    with contextlib.suppress(InvalidData):  # InvalidData is the one error it may raise
        parse_platform_certificate(certificate)


# --- Every refusal typed: buffers, structures and switches that are not what they claim --------


def _released() -> memoryview:
    """A memoryview its owner released: bytes() and len() raise ValueError on it."""
    view = memoryview(bytearray(64))
    view.release()
    return view


def test_a_released_buffer_is_a_typed_refusal() -> None:
    """Every function that takes buffers refuses a released memoryview with the library's own
    error naming it, not the ValueError of reading it."""
    data = quote_attest().to_bytes()
    signature, ak = sign(RSA_AK, data), ak_public(RSA_AK)
    expected = {"sha256": PCRS}
    calls: dict[str, Any] = {
        "attest": lambda: verify_quote(_released(), signature, ak, NONCE, expected),
        "signature": lambda: verify_quote(data, _released(), ak, NONCE, expected),
        "AK": lambda: verify_quote(data, signature, _released(), NONCE, expected),
        "nonce": lambda: verify_quote(data, signature, ak, _released(), expected),
        "event log": lambda: verify_quote(
            data, signature, ak, NONCE, expected, event_log=_released()
        ),
        "AK certificate": lambda: verify_quote(
            data, signature, ak, NONCE, expected, ak_certificate=_released()
        ),
        "enrolled AK": lambda: TrustPolicy(enrolled_aks=[_released()]),
        "certified key": lambda: verify_certify(data, signature, ak, _released(), NONCE),
        "attestation object": lambda: verify_attestation_object(_released(), bytes(32)),
        "parse_event_log": lambda: parse_event_log(_released()),
        "load_ca_bundle": lambda: load_ca_bundle(_released(), "bundle"),
        "EK certificate": lambda: verify_ek_certificate(_released(), []),
        "platform certificate": lambda: parse_platform_certificate(_released()),
    }
    for name, call in calls.items():
        with pytest.raises(EntraKeysError, match="released memoryview"):
            call()
        assert name


def test_an_ak_structure_that_does_not_marshal_is_a_typed_refusal() -> None:
    """A TPMTPublic object whose fields are out of their wire ranges (a nameAlg over 16 bits,
    negative attributes) is MalformedAttestation as an AK and as an enrolled AK, not the
    struct.error of marshalling it."""
    public = TPMTPublic.parse(ak_public(RSA_AK))
    data = quote_attest().to_bytes()
    for bad in (
        dataclasses.replace(public, name_alg=0x10000),
        dataclasses.replace(public, object_attributes=-1),
    ):
        with pytest.raises(MalformedAttestation, match="does not marshal"):
            verify_quote(data, sign(RSA_AK, data), bad, NONCE, {"sha256": PCRS})
        with pytest.raises(MalformedAttestation, match="does not marshal"):
            TrustPolicy(enrolled_aks=[bad])


def test_an_rsa_ek_exponent_over_32_bits_has_no_amd_url() -> None:
    """AMD's EK URL holds the exponent in 4 bytes, as a TPM's TPMS_RSA_PARMS does: a key pyca
    loads with a larger one is a CERTIFICATE failure, not an OverflowError."""
    modulus = RSA_AK.public_key().public_numbers().n
    key = rsa.RSAPublicNumbers(2**40 + 1, modulus).public_key()
    with raises_check(Check.CERTIFICATE, match="32 bits"):
        ek_certificate_url(key, "AMD")
    assert ek_certificate_url(RSA_AK.public_key(), "AMD").startswith("https://")


@pytest.mark.parametrize(
    "switch",
    ["allow_software", "allow_sha1", "allow_unverified_ak", "require_hardware",
     "allow_ek_without_eku", "allow_empty_nonce"],
)  # fmt: skip
def test_a_policy_switch_is_a_bool(switch: str) -> None:
    """A switch read from a config file or the environment as "false", "0" or "no" is truthy:
    taken, it would turn the check off. Only True and False are switches; a software quote
    stays refused by a policy that was never made."""
    data = quote_attest(magic=0).to_bytes()  # no TPM made it
    for value in ("false", "0", "no", 0, 1, [], "True"):
        with pytest.raises(TypeError, match=f"{switch} is True or False"):
            TrustPolicy(**{switch: value})
    assert getattr(TrustPolicy(**{switch: True}), switch) is True
    assert getattr(TrustPolicy(**{switch: False}), switch) is False
    with pytest.raises(AttestationCheckFailed):
        verify_quote(data, sign(RSA_AK, data), ak_public(RSA_AK), NONCE, {"sha256": PCRS},
                     policy=TrustPolicy(allow_software=False))  # fmt: skip
