"""Attacks on the verifier and the stand-in registration service, each expecting a refusal.

Every test plays the attacker: it forges what a device without a TPM (or with a TPM key that is
no AK) can forge, and expects the library's own typed error, or a result that claims no hardware.
Behaviours run over both providers where a provider is involved.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from entra_keys import EntraKeysError, KeyStore, KeyType, KeyUsage, Provider, formats
from entra_keys._json import b64url_encode
from entra_keys.attestation import (
    AKEnrollment,
    AKEvidence,
    TrustPolicy,
    verify_ak_certificate,
    verify_certify,
    verify_ek_certificate,
    verify_quote,
)
from entra_keys.cli import main
from entra_keys.errors import (
    AttestationCheckFailed,
    AttestationError,
    Check,
    InvalidData,
    InvalidSignature,
    MalformedAttestation,
)
from entra_keys.providers.software_attest import software_endorsement_key, software_tpmt_public
from entra_keys.tcg import (
    TPMA_OBJECT,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSClockInfo,
    TPMSPCRSelection,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
    certification_to_json,
)
from entra_keys.tcg.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMTScheme,
)
from entra_keys.testing.registration import RegistrationService
from entra_keys.testing.swtpm import Swtpm

from .helpers import raises_check

NONCE = bytes(range(16))
PCRS = {0: bytes(32), 7: bytes([7]) * 32}
AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
ATTACKER = ec.generate_private_key(ec.SECP256R1())


def forged_quote(nonce: bytes = NONCE) -> bytes:
    """A TPMS_ATTEST whose every field the attacker chose to look like a TPM's quote."""
    digest = hashlib.sha256(b"".join(PCRS[i] for i in sorted(PCRS))).digest()
    return TPMSAttest(
        magic=TPM_GENERATED_VALUE,
        type=TPM_ST_ATTEST_QUOTE,
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=nonce,
        clock_info=TPMSClockInfo(1234, 2, 0, True),
        firmware_version=0x2019102300163636,
        attested=TPMSQuoteInfo(TPMLPCRSelection.of({"sha256": PCRS}), digest),
    ).to_bytes()


def tpm_signature(key: Any, data: bytes) -> bytes:
    """TPMT_SIGNATURE (RSASSA/ECDSA-SHA256) by any signing key, the way a TPM's AK signs."""
    if isinstance(key.public_key(), rsa.RSAPublicKey):
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return TPMTSignature(TPM_ALG_RSASSA, TPM_ALG_SHA256, raw).to_bytes()
    der = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return TPMTSignature.from_signature(
        TPM_ALG_ECDSA, TPM_ALG_SHA256, der, key.public_key()
    ).to_bytes()


def fabricated_ak(key: Any, attrs: int = AK_ATTRS, **changes: Any) -> bytes:
    """A TPMT_PUBLIC that claims to be a TPM's AK, written around the attacker's own key."""
    alg = TPM_ALG_RSASSA if isinstance(key.public_key(), rsa.RSAPublicKey) else TPM_ALG_ECDSA
    public = TPMTPublic.from_public_key(
        key.public_key(), attrs, scheme=TPMTScheme(alg, TPM_ALG_SHA256)
    )
    return dataclasses.replace(public, **changes).to_bytes()


def check(attest: bytes, key: Any, ak: Any, pcrs: Any = None, **kwargs: Any) -> Any:
    expected = {"sha256": PCRS} if pcrs is None else pcrs
    return verify_quote(attest, tpm_signature(key, attest), ak, NONCE, expected, **kwargs)


# --- the AK: a bare key, a key that is no AK, a fabricated public area ----------------------------


def test_bare_public_key_as_ak_is_refused_and_opted_in_it_is_never_hardware() -> None:
    attest = forged_quote()
    with raises_check(Check.TRUST, match="bare public key") as caught:
        check(attest, ATTACKER, ATTACKER.public_key())
    assert caught.value.check == "trust"
    result = check(attest, ATTACKER, ATTACKER.public_key(),
                   policy=TrustPolicy(allow_unverified_ak=True))  # fmt: skip
    assert result.hardware_backed is False and result.ak_evidence is AKEvidence.UNVERIFIED
    # Opted in and even listed as trusted, a bare key still proves no hardware.
    listed = TrustPolicy(allow_unverified_ak=True, trusted_aks=[ATTACKER.public_key()])
    assert check(attest, ATTACKER, ATTACKER.public_key(), policy=listed).hardware_backed is False


def test_device_key_of_either_provider_cannot_sign_quotes(provider: Provider) -> None:
    """A device key (TPM or software) signs any bytes: as the AK, bare or with its own public
    area, its forged quote is refused."""
    device = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
    attest = forged_quote()
    with raises_check(Check.TRUST, match="bare public key"):
        check(attest, device, device.public_key())
    with raises_check(Check.TRUST, match="not a restricted signing key"):
        check(attest, device, device.tpm_public)
    with raises_check(Check.TRUST, match="not a restricted signing key"):
        check(attest, device, device.tpm_public, policy=TrustPolicy(allow_unverified_ak=True))


def test_fabricated_ak_public_area_verifies_only_as_unverified() -> None:
    """Any key can be wrapped in a TPMT_PUBLIC that claims fixedTPM: attributes alone prove
    nothing, so without enrollment or a certificate the result is never hardware."""
    ak = fabricated_ak(ATTACKER)
    result = check(forged_quote(), ATTACKER, ak)
    assert result.hardware_backed is False and result.ak_evidence is AKEvidence.UNVERIFIED
    with raises_check(Check.TRUST, match="requires hardware"):
        check(forged_quote(), ATTACKER, ak, policy=TrustPolicy(require_hardware=True))
    enrolled = TrustPolicy(enrolled_aks=[fabricated_ak(ec.generate_private_key(ec.SECP256R1()))])
    assert check(forged_quote(), ATTACKER, ak, policy=enrolled).hardware_backed is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attrs": AK_ATTRS & ~TPMA_OBJECT.RESTRICTED}, "not a restricted signing key"),
        ({"attrs": AK_ATTRS & ~TPMA_OBJECT.FIXEDTPM}, "not a restricted signing key"),
        ({"attrs": AK_ATTRS & ~TPMA_OBJECT.SENSITIVEDATAORIGIN}, "not a restricted signing key"),
        ({"attrs": AK_ATTRS | TPMA_OBJECT.DECRYPT}, "not a restricted signing key"),
        ({"parameters": "no-scheme"}, "no signing scheme"),
        ({"name_alg": 0x0099}, "not a known hash"),
    ],
    ids=["unrestricted", "not-fixedTPM", "imported", "decrypt", "no-scheme", "unknown-nameAlg"],
)
def test_ak_public_areas_that_are_no_ak_are_refused(changes: dict[str, Any], message: str) -> None:
    attrs = changes.pop("attrs", AK_ATTRS)
    if changes.get("parameters") == "no-scheme":
        public = TPMTPublic.parse(fabricated_ak(ATTACKER, attrs))
        changes["parameters"] = dataclasses.replace(public.parameters, scheme=TPMTScheme())
    ak = fabricated_ak(ATTACKER, attrs, **changes)
    with pytest.raises((AttestationCheckFailed, InvalidData), match=message):
        check(forged_quote(), ATTACKER, ak, policy=TrustPolicy(allow_unverified_ak=True))


def test_weak_and_sha1_aks_are_refused() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with raises_check(Check.TRUST, match="too weak"):
        check(forged_quote(), weak, fabricated_ak(weak))
    sha1_named = fabricated_ak(ATTACKER, name_alg=TPM_ALG_SHA1)
    with pytest.raises(AttestationCheckFailed, match="nameAlg SHA-1") as caught:
        check(forged_quote(), ATTACKER, sha1_named)
    assert caught.value.check == "hash"


def test_software_quote_of_either_provider_is_never_hardware(provider: Provider) -> None:
    """A genuine AK of the provider: the TPM's is unverified until enrolled; the software one's
    quote is refused, and allowed it still says no hardware, enrolled or not."""
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 7], NONCE)
    args = (quote.attest, quote.signature, ak.tpm_public, NONCE, {quote.pcr_bank: quote.pcr_values})
    enrolled = TrustPolicy(enrolled_aks=[ak.tpm_public], allow_software=True)
    if provider.hardware_backed:
        assert verify_quote(*args).ak_evidence is AKEvidence.UNVERIFIED
        assert verify_quote(*args, policy=enrolled).hardware_backed is True
    else:
        with pytest.raises(AttestationCheckFailed) as caught:
            verify_quote(*args)
        assert caught.value.check == "software"
        assert verify_quote(*args, policy=enrolled).hardware_backed is False
        strict = TrustPolicy(enrolled_aks=[ak.tpm_public], allow_software=True,
                             require_hardware=True)  # fmt: skip
        with pytest.raises(AttestationCheckFailed, match="requires hardware") as caught:
            verify_quote(*args, policy=strict)
        assert caught.value.check == "software"


# --- nonces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonce", [b"", b"\x00", bytes(7)], ids=["empty", "1", "7"])
def test_short_nonces_are_refused_by_the_verifier(nonce: bytes) -> None:
    """extraData the attacker left empty (or short) matches an empty nonce: refused anyway."""
    attest = forged_quote(nonce)
    ak = fabricated_ak(ATTACKER)
    with pytest.raises(AttestationCheckFailed, match="at least 8") as caught:
        verify_quote(attest, tpm_signature(ATTACKER, attest), ak, nonce, {"sha256": PCRS})
    assert caught.value.check == "nonce"
    device = software_tpmt_public(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                  KeyUsage.SIGN)  # fmt: skip
    name = TPMTPublic.parse(device).name()
    certify = dataclasses.replace(
        TPMSAttest.parse(attest), type=TPM_ST_ATTEST_CERTIFY, attested=TPMSCertifyInfo(name, name)
    ).to_bytes()
    with pytest.raises(AttestationCheckFailed, match="at least 8") as caught:
        verify_certify(certify, tpm_signature(ATTACKER, certify), ak, device, nonce)
    assert caught.value.check == "nonce"


@pytest.mark.parametrize("nonce", [b"", bytes(7)], ids=["empty", "7"])
def test_short_nonces_are_refused_by_both_providers(provider: Provider, nonce: bytes) -> None:
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    key = provider.create_key(KeyType.ECC256, KeyUsage.SIGN)
    with pytest.raises(AttestationError, match="at least 8"):
        provider.quote(ak, [0], nonce)
    with pytest.raises(AttestationError, match="at least 8"):
        provider.certify(key, ak, nonce)
    assert provider.quote(ak, [0], bytes(8)).nonce == bytes(8)


# --- EK certificates ------------------------------------------------------------------------------


#: tcg-kp-EKCertificate, the key purpose an EK certificate names (TCG EK Credential Profile).
EK_KEY_PURPOSE = x509.ObjectIdentifier("2.23.133.8.1")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    subject_key: Any,
    issuer_key: Any,
    issuer: str,
    *,
    ca: bool = False,
    key_cert_sign: bool = False,
    subject: str = "",
    ek_purpose: bool = True,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject or "ek"))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca or key_cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca and ek_purpose:  # an EK certificate names the EK key purpose (tcg-kp-EKCertificate)
        builder = builder.add_extension(x509.ExtendedKeyUsage([EK_KEY_PURPOSE]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA = _certificate(CA_KEY, CA_KEY, "Test TPM maker CA", ca=True, subject="Test TPM maker CA")


def test_a_ca_certificate_is_no_ek_certificate() -> None:
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub_ca = _certificate(sub_key, CA_KEY, "Test TPM maker CA", ca=True, subject="sub")
    with raises_check(Check.CERTIFICATE, match="a CA certificate"):
        verify_ek_certificate(sub_ca, [CA])
    signer = _certificate(sub_key, CA_KEY, "Test TPM maker CA", key_cert_sign=True)
    with raises_check(Check.CERTIFICATE, match="may sign certificates"):
        verify_ek_certificate(signer, [CA])
    good = _certificate(rsa.generate_private_key(65537, 2048), CA_KEY, "Test TPM maker CA")
    assert verify_ek_certificate(good, [CA]).chain[-1] == CA


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(65537, 1024), "RSA-1024, below RSA-2048"),
        (ec.generate_private_key(ec.SECP192R1()), "secp192r1, not P-256"),
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1, not P-256"),
    ],
    ids=["rsa1024", "p192", "secp256k1"],
)
def test_ek_certificates_for_weak_keys_are_refused(key: Any, message: str) -> None:
    with raises_check(Check.CERTIFICATE, match=message):
        verify_ek_certificate(_certificate(key, CA_KEY, "Test TPM maker CA"), [CA])


def test_a_genuine_ek_certificate_beside_another_ek_public_is_refused(swtpm: Swtpm) -> None:
    """EK certificates are public: with one of a real TPM and the attacker's software EK public,
    no credential is made (the EK public must be the certificate's key)."""
    from entra_keys import open_provider

    with open_provider("tpm", tcti=swtpm.tcti) as tpm:
        genuine = next(e for e in tpm.endorsement_keys() if e.key_type is KeyType.RSA2048)
        ak = tpm.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
    assert genuine.certificate is not None
    policy = TrustPolicy(ek_ca_certificates=[p.read_bytes() for p in swtpm.ca_certificates])
    fake_ek = software_endorsement_key(rsa.generate_private_key(65537, 2048))
    with raises_check(Check.CERTIFICATE, match="another key than this EK"):
        AKEnrollment(ak.tpm_public, fake_ek.public, genuine.certificate, policy=policy)
    enrollment = AKEnrollment(ak.tpm_public, genuine.public, genuine.certificate, policy=policy)
    assert enrollment.hardware_backed


def test_a_key_without_the_ek_templates_attributes_is_refused_as_the_ek() -> None:
    """Every EK template (EK Credential Profile) sets fixedTPM, fixedParent,
    sensitiveDataOrigin, adminWithPolicy, restricted and decrypt: a storage key, or an EK public
    without adminWithPolicy, does not stand in for an EK."""
    policy = TrustPolicy(allow_software=True)
    ak = fabricated_ak(rsa.generate_private_key(65537, 2048))
    ek = TPMTPublic.parse(software_endorsement_key(rsa.generate_private_key(65537, 2048)).public)
    assert not AKEnrollment(ak, ek, None, policy=policy).hardware_backed  # the control
    srk = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
    )
    for attributes in (srk, ek.object_attributes & ~TPMA_OBJECT.ADMINWITHPOLICY):
        with raises_check(Check.TRUST, match="adminWithPolicy"):
            AKEnrollment(ak, dataclasses.replace(ek, object_attributes=int(attributes)), None,
                         policy=policy)  # fmt: skip


# --- EK certificates without the EK key purpose ------------------------------------------------


def test_an_ek_certificate_without_extended_key_usage_is_refused_unless_legacy_is_allowed() -> None:
    """A leaf under the maker's CA with no extendedKeyUsage is no EK certificate by default
    (real chips' name tcg-kp-EKCertificate); a policy may accept legacy ones, and says so."""
    ek_key = rsa.generate_private_key(65537, 2048)
    legacy = _certificate(ek_key, CA_KEY, "Test TPM maker CA", ek_purpose=False)
    with raises_check(Check.CERTIFICATE, match="no extendedKeyUsage"):
        verify_ek_certificate(legacy, [CA])
    with raises_check(Check.CERTIFICATE, match="no extendedKeyUsage"):
        verify_ek_certificate(legacy, policy=TrustPolicy(ek_ca_certificates=[CA]))
    allowed = TrustPolicy(ek_ca_certificates=[CA], allow_ek_without_eku=True)
    assert verify_ek_certificate(legacy, policy=allowed).ek_key_purpose is False
    assert verify_ek_certificate(legacy, [CA], allow_without_eku=True).ek_key_purpose is False
    with raises_check(Check.CERTIFICATE, match="no extendedKeyUsage"):  # the parameter decides
        verify_ek_certificate(legacy, policy=allowed, allow_without_eku=False)
    good = _certificate(ek_key, CA_KEY, "Test TPM maker CA")
    assert verify_ek_certificate(good, [CA]).ek_key_purpose is True
    # AK enrollment against that EK: refused by default, made (and said) under the flag.
    ek = software_endorsement_key(ek_key)
    ak = fabricated_ak(ATTACKER)
    with raises_check(Check.CERTIFICATE, match="no extendedKeyUsage"):
        AKEnrollment(ak, ek.public, legacy, policy=TrustPolicy(ek_ca_certificates=[CA]))
    enrollment = AKEnrollment(ak, ek.public, legacy, policy=allowed)
    assert enrollment.ek_certificate is not None
    assert enrollment.ek_certificate.ek_key_purpose is False


def test_swtpm_ek_certificates_name_the_ek_key_purpose(swtpm: Swtpm) -> None:
    """The default holds for the EK certificates swtpm_setup makes (the test swtpm's)."""
    from entra_keys import open_provider

    with open_provider("tpm", tcti=swtpm.tcti) as tpm:
        eks = tpm.endorsement_keys()
    cas = [p.read_bytes() for p in swtpm.ca_certificates]
    for ek in eks:
        info = verify_ek_certificate(ek.require_certificate(), cas, ek_public=ek.public)
        assert info.ek_key_purpose is True


# --- the verifier's inputs: banks named twice, caller buffers -----------------------------------

HARDWARE = TrustPolicy(enrolled_aks=[fabricated_ak(ATTACKER)])
V0, V7 = PCRS[0], PCRS[7]


class Alg(enum.IntEnum):
    """A TPM_ALG id as an int subclass (tpm2-pytss' constants are)."""

    SHA256 = TPM_ALG_SHA256


def _quote_of(selections: tuple[TPMSPCRSelection, ...], values: bytes) -> bytes:
    """A quote (signed by the enrolled AK) of this PCR selection and the digest of ``values``."""
    body = TPMSQuoteInfo(TPMLPCRSelection(selections), hashlib.sha256(values).digest())
    return dataclasses.replace(TPMSAttest.parse(forged_quote()), attested=body).to_bytes()


@pytest.mark.parametrize(
    ("first", "second"),
    [("sha256", TPM_ALG_SHA256), ("SHA256", "sha256"), (TPM_ALG_SHA256, "Sha256"),
     ("sha256", Alg.SHA256)],
    ids=["name-and-id", "two-cases", "id-and-name", "name-and-int-subclass"],
)  # fmt: skip
def test_a_pcr_bank_named_twice_in_the_expected_values_is_invalid_data(
    first: Any, second: Any
) -> None:
    """The later entry replaced the earlier, so a quote of PCR 7 alone passed against an
    expectation of PCRs 0 and 7: a bank named twice is refused, whatever the order."""
    pcr7_only = _quote_of((TPMSPCRSelection(TPM_ALG_SHA256, frozenset({7})),), V7)
    expected = {first: {0: V0, 7: V7}, second: {7: V7}}
    with pytest.raises(InvalidData, match="named twice"):
        check(pcr7_only, ATTACKER, fabricated_ak(ATTACKER), pcrs=expected, policy=HARDWARE)
    with pytest.raises(InvalidData, match="named twice"):
        check(pcr7_only, ATTACKER, fabricated_ak(ATTACKER), pcrs=dict(reversed(expected.items())))
    with raises_check(Check.PCR_SELECTION):  # named once, the quote does not cover PCR 0
        check(pcr7_only, ATTACKER, fabricated_ak(ATTACKER), pcrs={first: {0: V0, 7: V7}})


class Twice(Mapping[Any, Any]):
    """A mapping that yields a key twice (any Mapping of the caller's may)."""

    def __init__(self, *pairs: tuple[Any, Any]) -> None:
        self.pairs = pairs

    def __getitem__(self, key: Any) -> Any:
        return dict(self.pairs)[key]

    def __iter__(self) -> Iterator[Any]:
        return iter([key for key, _ in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)


def test_a_bank_or_pcr_a_mapping_yields_twice_is_invalid_data() -> None:
    pcr7_only = _quote_of((TPMSPCRSelection(TPM_ALG_SHA256, frozenset({7})),), V7)
    banks = Twice(("sha256", {0: V0, 7: V7}), ("sha256", {7: V7}))
    with pytest.raises(InvalidData, match="named twice"):
        check(pcr7_only, ATTACKER, fabricated_ak(ATTACKER), pcrs=banks, policy=HARDWARE)
    pcrs = Twice((7, V7), (7, V7))
    with pytest.raises(InvalidData, match="given twice"):
        check(pcr7_only, ATTACKER, fabricated_ak(ATTACKER), pcrs={"sha256": pcrs})


@pytest.mark.parametrize(
    "selections",
    [
        (TPMSPCRSelection(TPM_ALG_SHA256, frozenset({0, 7})),
         TPMSPCRSelection(TPM_ALG_SHA256, frozenset())),
        (TPMSPCRSelection(TPM_ALG_SHA256, frozenset()),
         TPMSPCRSelection(TPM_ALG_SHA256, frozenset({0, 7}))),
        (TPMSPCRSelection(TPM_ALG_SHA256, frozenset({0})),
         TPMSPCRSelection(TPM_ALG_SHA256, frozenset({7}))),
    ],
    ids=["then-empty", "empty-first", "split"],
)  # fmt: skip
def test_a_quote_that_selects_a_bank_twice_is_refused(
    selections: tuple[TPMSPCRSelection, ...],
) -> None:
    attest = _quote_of(selections, V0 + V7)
    with raises_check(Check.PCR_SELECTION, match="selected twice"):
        check(attest, ATTACKER, fabricated_ak(ATTACKER), policy=HARDWARE)
    once = _quote_of((TPMSPCRSelection(TPM_ALG_SHA256, frozenset({0, 7})),), V0 + V7)
    assert check(once, ATTACKER, fabricated_ak(ATTACKER), policy=HARDWARE).hardware_backed


def _certification(device: bytes) -> bytes:
    name = TPMTPublic.parse(device).name()
    return dataclasses.replace(
        TPMSAttest.parse(forged_quote()), type=TPM_ST_ATTEST_CERTIFY,
        attested=TPMSCertifyInfo(name, name),
    ).to_bytes()  # fmt: skip


DEVICE_KEY = ec.generate_private_key(ec.SECP256R1())
DEVICE = software_tpmt_public(DEVICE_KEY.public_key(), KeyUsage.SIGN)


@pytest.mark.parametrize("kind", [memoryview, bytearray, lambda b: memoryview(bytearray(b))],
                         ids=["memoryview", "bytearray", "writable-memoryview"])  # fmt: skip
def test_bytes_like_inputs_verify_as_bytes_do(kind: Any) -> None:
    """A writable memoryview crashed the verifier; every bytes-like input is taken as bytes."""
    attest = forged_quote()
    pcrs = {"sha256": {i: kind(v) for i, v in PCRS.items()}}
    result = verify_quote(
        kind(attest), kind(tpm_signature(ATTACKER, attest)), kind(fabricated_ak(ATTACKER)),
        kind(NONCE), pcrs, policy=HARDWARE,
    )  # fmt: skip
    assert result.hardware_backed and result.pcr_values == {"sha256": PCRS}
    assert type(result.raw_attest) is bytes and type(result.nonce) is bytes
    certification = _certification(DEVICE)
    certified = verify_certify(
        kind(certification), kind(tpm_signature(ATTACKER, certification)),
        kind(fabricated_ak(ATTACKER)), kind(DEVICE), kind(NONCE), policy=HARDWARE,
        expected_key=DEVICE_KEY.public_key(),
    )  # fmt: skip
    assert certified.hardware_backed and certified.public_key == DEVICE_KEY.public_key()


def test_a_buffer_changed_after_the_call_changes_no_result() -> None:
    """A bytearray changed after the call changed a result's pcr_values: results own copies."""
    attest, nonce = bytearray(forged_quote()), bytearray(NONCE)
    values = {i: bytearray(v) for i, v in PCRS.items()}
    result = verify_quote(
        attest, tpm_signature(ATTACKER, bytes(attest)), fabricated_ak(ATTACKER), nonce,
        {"sha256": values}, policy=HARDWARE,
    )  # fmt: skip
    attest[:] = bytes(len(attest))
    nonce[:] = bytes(len(nonce))
    for value in values.values():
        value[:] = b"\xee" * 32
    assert result.pcr_values == {"sha256": PCRS}
    assert result.raw_attest == forged_quote() and result.nonce == NONCE
    with pytest.raises(TypeError):
        result.pcr_values["sha256"][0] = bytes(32)  # type: ignore[index]


@pytest.mark.parametrize(
    ("position", "value", "error", "check"),
    [
        ("attest", "text", MalformedAttestation, Check.STRUCTURE),
        ("signature", 5, MalformedAttestation, Check.STRUCTURE),
        ("ak", 5, AttestationCheckFailed, Check.TRUST),
        ("nonce", "0123456789abcdef", AttestationCheckFailed, Check.NONCE),
        ("nonce", [1, 2, 3, 4, 5, 6, 7, 8], AttestationCheckFailed, Check.NONCE),
        ("pcrs", [("sha256", PCRS)], InvalidData, None),
        ("pcrs", {"sha256": [V0]}, InvalidData, None),
        ("pcrs", {"sha256": {0: V0.hex()}}, InvalidData, None),
        ("ak_certificate", 5, AttestationCheckFailed, Check.CERTIFICATE),
    ],
)  # fmt: skip
def test_inputs_of_other_types_are_typed_refusals(
    position: str, value: Any, error: type[Exception], check: Check | None
) -> None:
    attest = forged_quote()
    args: dict[str, Any] = {
        "attest": attest, "signature": tpm_signature(ATTACKER, attest),
        "ak": fabricated_ak(ATTACKER), "nonce": NONCE, "pcrs": {"sha256": PCRS},
    }  # fmt: skip
    extra: dict[str, Any] = {}
    if position == "ak_certificate":
        extra["ak_certificate"] = value
    else:
        args[position] = value
    with pytest.raises(error) as caught:
        verify_quote(*args.values(), policy=HARDWARE, **extra)
    assert getattr(caught.value, "check", None) == check


def test_certify_inputs_of_other_types_are_typed_refusals() -> None:
    certification = _certification(DEVICE)
    args = (certification, tpm_signature(ATTACKER, certification), fabricated_ak(ATTACKER))
    with pytest.raises(MalformedAttestation, match="certified key's TPMT_PUBLIC is bytes"):
        verify_certify(*args, DEVICE.hex(), NONCE)  # type: ignore[arg-type]
    with raises_check(Check.KEY, match="expected key"):
        verify_certify(*args, DEVICE, NONCE, expected_key=DEVICE)  # type: ignore[arg-type]


def test_policy_and_enrollment_inputs_are_copied() -> None:
    """Buffers given to a TrustPolicy or an AKEnrollment and changed after are not seen."""
    ak = bytearray(fabricated_ak(ATTACKER))
    policy = TrustPolicy(enrolled_aks=[memoryview(ak)], trusted_aks=[ak])
    ak[-1] ^= 1
    assert check(forged_quote(), ATTACKER, fabricated_ak(ATTACKER), policy=policy).hardware_backed
    with pytest.raises(AttestationCheckFailed):
        TrustPolicy(enrolled_aks=["not a public area"])
    with raises_check(Check.CERTIFICATE):
        TrustPolicy(ek_ca_certificates=[5])  # type: ignore[list-item]
    ca_der = bytearray(CA.public_bytes(serialization.Encoding.DER))
    policy = TrustPolicy(ek_ca_certificates=[memoryview(ca_der)])
    ca_der[:] = bytes(len(ca_der))
    assert list(policy.ek_ca_certificates()) == [CA]
    ek_key = rsa.generate_private_key(65537, 2048)
    ek, ek_cert = (
        software_endorsement_key(ek_key),
        _certificate(ek_key, CA_KEY, "Test TPM maker CA"),
    )
    enrolling = bytearray(fabricated_ak(ATTACKER))
    enrollment = AKEnrollment(
        memoryview(enrolling), bytearray(ek.public),
        memoryview(bytearray(ek_cert.public_bytes(serialization.Encoding.DER))),
        policy=TrustPolicy(ek_ca_certificates=[CA]),
    )  # fmt: skip
    enrolling[:] = bytes(len(enrolling))
    assert enrollment.ak.to_bytes() == fabricated_ak(ATTACKER)


# --- AK certificates ------------------------------------------------------------------------------


def test_ak_certificate_evidence() -> None:
    ak_key = ec.generate_private_key(ec.SECP256R1())
    ak = fabricated_ak(ak_key)
    ak_cert = _certificate(ak_key, CA_KEY, "Test TPM maker CA", subject="ak")
    policy = TrustPolicy(ak_ca_certificates=[CA])
    result = check(forged_quote(), ak_key, ak, policy=policy, ak_certificate=ak_cert)
    assert result.hardware_backed and result.ak_evidence is AKEvidence.CERTIFICATE
    # A certificate for another key, one from an untrusted CA, a CA certificate: refused.
    other = _certificate(ATTACKER, CA_KEY, "Test TPM maker CA", subject="ak")
    with raises_check(Check.CERTIFICATE, match="another key than this AK"):
        check(forged_quote(), ak_key, ak, policy=policy, ak_certificate=other)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate(ak_key, rogue_key, "Test TPM maker CA", subject="ak")
    with raises_check(Check.CERTIFICATE, match="no trusted CA"):
        check(forged_quote(), ak_key, ak, policy=policy, ak_certificate=rogue)
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):
        check(forged_quote(), ak_key, ak, ak_certificate=ak_cert)
    as_ca = _certificate(ak_key, CA_KEY, "Test TPM maker CA", ca=True, subject="ak")
    with raises_check(Check.CERTIFICATE, match="a CA certificate"):
        verify_ak_certificate(as_ca, ak_key.public_key(), [CA])
    # The AK known by its certificate alone (as WebAuthn and cloud vTPMs give it): the bare key
    # with a certificate that verifies is certified, no opt-in needed; without it, refused.
    bare = check(forged_quote(), ak_key, ak_key.public_key(), ak_certificate=ak_cert,
                 policy=policy)  # fmt: skip
    assert bare.ak_evidence is AKEvidence.CERTIFICATE and bare.hardware_backed
    assert bare.ak_certificate_info is not None and bare.ak_certificate_info.subject == "CN=ak"
    with raises_check(Check.TRUST, match="bare public key"):
        check(forged_quote(), ak_key, ak_key.public_key(), policy=policy)
    with raises_check(Check.CERTIFICATE, match="another key than this AK"):
        check(forged_quote(), ATTACKER, ATTACKER.public_key(), policy=policy,
              ak_certificate=ak_cert)  # fmt: skip


# --- the CLI --------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_refuses_a_pem_ak_and_a_key_that_is_no_ak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_cli_environment: None
) -> None:
    attest = forged_quote()
    quote = {"kind": "quote", "version": 1, "attest": base64.b64encode(attest).decode(),
             "signature": base64.b64encode(tpm_signature(ATTACKER, attest)).decode(),
             "pcr_bank": "sha256", "nonce": base64.b64encode(NONCE).decode(),
             "pcr_values": {str(i): base64.b64encode(v).decode() for i, v in PCRS.items()},
             "hardware_backed": True}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(quote))
    (tmp_path / "ak.pem").write_bytes(formats.public_pem(ATTACKER.public_key()))
    unrestricted = fabricated_ak(ATTACKER, AK_ATTRS & ~TPMA_OBJECT.RESTRICTED)
    (tmp_path / "device.tpm").write_bytes(len(unrestricted).to_bytes(2, "big") + unrestricted)
    (tmp_path / "ak.tpm").write_bytes(len(fabricated_ak(ATTACKER)).to_bytes(2, "big")
                                      + fabricated_ak(ATTACKER))  # fmt: skip
    verify = ["verify", "quote", str(tmp_path / "q.json"), "--nonce", NONCE.hex()]
    code, _, err = run(capsys, *verify, "--ak-public", str(tmp_path / "ak.pem"))
    assert code == 1 and "bare public key" in err and "--allow-unverified-ak" in err
    code, out, err = run(capsys, "--json", *verify, "--ak-public", str(tmp_path / "ak.pem"),
                         "--allow-unverified-ak")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["ak_evidence"] == "unverified"
    assert json.loads(out)["hardware_backed"] is False
    code, _, err = run(capsys, *verify, "--ak-public", str(tmp_path / "device.tpm"))
    assert code == 1 and "not a restricted signing key" in err
    code, out, err = run(capsys, *verify, "--ak-public", str(tmp_path / "ak.tpm"))
    assert code == 0 and "Quote: VALID (AK unverified)" in out and "AK: unverified" in out, err
    empty = ["verify", "quote", str(tmp_path / "q.json"), "--ak-public", str(tmp_path / "ak.tpm")]
    code, _, err = run(capsys, *empty, "--nonce", "")
    assert code == 1 and "at least 8" in err


def test_cli_ak_certificate_is_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_cli_environment: None
) -> None:
    ak_key = ec.generate_private_key(ec.SECP256R1())
    ak = fabricated_ak(ak_key)
    attest = forged_quote()
    quote = {"kind": "quote", "version": 1, "attest": base64.b64encode(attest).decode(),
             "signature": base64.b64encode(tpm_signature(ak_key, attest)).decode(),
             "pcr_bank": "sha256", "nonce": base64.b64encode(NONCE).decode(),
             "pcr_values": {str(i): base64.b64encode(v).decode() for i, v in PCRS.items()},
             "hardware_backed": True}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(quote))
    (tmp_path / "ak.tpm").write_bytes(len(ak).to_bytes(2, "big") + ak)
    pem = serialization.Encoding.PEM
    ak_cert = _certificate(ak_key, CA_KEY, "Test TPM maker CA", subject="ak")
    (tmp_path / "ak.crt").write_bytes(ak_cert.public_bytes(pem))
    (tmp_path / "ca.crt").write_bytes(CA.public_bytes(pem))
    verify = ["--json", "verify", "quote", str(tmp_path / "q.json"), "--nonce", NONCE.hex(),
              "--ak-public", str(tmp_path / "ak.tpm"),
              "--ak-cert", str(tmp_path / "ak.crt")]  # fmt: skip
    code, _, err = run(capsys, *verify)
    assert code == 1 and "--ak-ca" in err
    code, out, err = run(capsys, *verify, "--ak-ca", str(tmp_path / "ca.crt"))
    assert code == 0, err
    assert json.loads(out)["ak_evidence"] == "certificate" and json.loads(out)["hardware_backed"]


def test_keys_export_tpm_is_a_tpm2b_public_tpm2_tools_reads(
    provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    clean_cli_environment: None,
) -> None:  # fmt: skip
    store = KeyStore(provider, tmp_path / "store")
    key = store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    base = ["--store", str(tmp_path / "store"), "--provider", provider.kind]
    if provider.kind == "tpm":
        base += ["--tcti", provider.tcti]  # type: ignore[attr-defined]
    code, out, err = run(capsys, *base, "--json", "keys", "export", "ak", "--format", "tpm")
    assert code == 0, err
    data = base64.b64decode(json.loads(out)["data"])
    assert data[:2] == len(key.tpm_public).to_bytes(2, "big") and data[2:] == key.tpm_public
    (tmp_path / "ak.tpm").write_bytes(data)
    printed = subprocess.run(["tpm2_print", "-t", "TPM2B_PUBLIC", str(tmp_path / "ak.tpm")],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert "restricted" in printed.stdout and "fixedtpm" in printed.stdout


# --- the stand-in registration service ------------------------------------------------------------


def _service(swtpm: Swtpm | None = None, **kwargs: Any) -> RegistrationService:
    paths = swtpm.ca_certificates if swtpm else []
    cas = [x509.load_pem_x509_certificate(p.read_bytes()) for p in paths]
    return RegistrationService(ek_ca_certificates=cas, **kwargs)


def test_service_ignores_the_clients_hardware_claim(tmp_path: Path) -> None:
    """A software EK that says hardware_backed=True: refused unless software is allowed, and
    then enrolled (and registered) as software."""
    from entra_keys import open_provider

    software = open_provider("software")
    ek = dataclasses.replace(software.endorsement_keys()[0], hardware_backed=True)
    ak = software.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    with raises_check(Check.CERTIFICATE, match="no certificate"):
        _service().enrollment_challenge(ek, ak.tpm_public)
    service = _service(allow_software=True)
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)
    service.finish_enrollment(ak.tpm_public, software.activate_credential(ak, ek, blob, secret))
    record = service.enrolled_ak(ak.tpm_public)
    assert record is not None and record.hardware_backed is False


def test_service_refuses_a_tpm_signing_key_as_the_ak(swtpm: Swtpm) -> None:
    """An unrestricted TPM signing key could certify software keys: it is no AK."""
    from entra_keys import open_provider

    with open_provider("tpm", tcti=swtpm.tcti) as tpm:
        ek = next(e for e in tpm.endorsement_keys() if e.key_type is KeyType.RSA2048)
        device = tpm.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    with raises_check(Check.TRUST, match="not a restricted signing key"):
        _service(swtpm).enrollment_challenge(ek, device.tpm_public)
    rsa3072 = fabricated_ak(rsa.generate_private_key(65537, 3072))
    with raises_check(Check.TRUST, match="enrollment takes RSA-2048"):
        _service(swtpm).enrollment_challenge(ek, rsa3072)


def _join(provider: Provider, store: KeyStore, service: RegistrationService) -> tuple[Any, Any]:
    ek = next(e for e in provider.endorsement_keys() if e.key_type is KeyType.RSA2048)
    ak = store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST)
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)
    service.finish_enrollment(ak.tpm_public, provider.activate_credential(ak, ek, blob, secret))
    return ek, ak


def _registration(provider: Provider, store: KeyStore, service: RegistrationService,
                  ak: Any, signer: Any = None) -> dict[str, Any]:  # fmt: skip
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN, replace=True)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT, replace=True)
    proofs = {}
    for name, key in (("DeviceKey", device), ("TransportKey", transport)):
        certification = provider.certify(key, signer or ak, service.issue_nonce())
        proofs[name] = json.loads(certification_to_json(certification))
    csr = formats.build_csr(device)
    return {
        "CertificateRequest": {"Type": "pkcs10",
                               "Data": base64.b64encode(formats.csr_der(csr)).decode()},
        "TransportKey": base64.b64encode(formats.bcrypt_rsakey_blob(transport)).decode(),
        "JoinType": 0,
        "Attestation": {"AkPublic": base64.b64encode(ak.tpm_public).decode(), **proofs},
    }  # fmt: skip


def test_service_verifies_certifications_against_the_enrolled_ak(
    provider: Provider, store: KeyStore, request: pytest.FixtureRequest
) -> None:
    swtpm = request.getfixturevalue("swtpm") if provider.hardware_backed else None
    service = _service(swtpm, allow_software=not provider.hardware_backed)
    _, ak = _join(provider, store, service)
    reply = service.register(_registration(provider, store, service, ak))
    assert reply["Attested"] is provider.hardware_backed
    # Certifications by another AK of the same TPM, sent under the enrolled AK's name: refused.
    other = store.create("other-ak", KeyType.RSA2048, KeyUsage.ATTEST)
    with pytest.raises(AttestationCheckFailed) as caught:
        service.register(_registration(provider, store, service, ak, signer=other))
    assert caught.value.check == "signature"


def test_service_keeps_an_ak_bound_to_its_ek(provider: Provider, store: KeyStore,
                                             request: pytest.FixtureRequest) -> None:  # fmt: skip
    swtpm = request.getfixturevalue("swtpm") if provider.hardware_backed else None
    service = _service(swtpm, allow_software=True)
    ek, ak = _join(provider, store, service)
    other_ek = software_endorsement_key(rsa.generate_private_key(65537, 2048))
    with pytest.raises(AttestationError, match="already enrolled with another EK"):
        service.enrollment_challenge(other_ek, ak.tpm_public)
    if provider.hardware_backed:  # the same EK without its certificate: a downgrade
        with pytest.raises(AttestationError, match="cannot replace"):
            service.enrollment_challenge(dataclasses.replace(ek, certificate=None), ak.tpm_public)
        record = service.enrolled_ak(ak.tpm_public)
        assert record is not None and record.hardware_backed
    # A wrong answer spends the open challenge.
    blob, secret = service.enrollment_challenge(ek, ak.tpm_public)
    with pytest.raises(AttestationError, match="answer is wrong"):
        service.finish_enrollment(ak.tpm_public, bytes(32))
    answer = provider.activate_credential(ak, ek, blob, secret)
    with pytest.raises(AttestationError, match="answer is wrong"):
        service.finish_enrollment(ak.tpm_public, answer)


def test_prt_request_nonce_is_exact_and_spent_once(tmp_path: Path) -> None:
    from entra_keys import open_provider

    provider = open_provider("software")
    store = KeyStore(provider, tmp_path / "store")
    service = _service(allow_software=True, require_attestation=False)
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    csr = formats.build_csr(device)
    reply = service.register({
        "CertificateRequest": {"Type": "pkcs10",
                               "Data": base64.b64encode(formats.csr_der(csr)).decode()},
        "TransportKey": base64.b64encode(formats.bcrypt_rsakey_blob(transport)).decode(),
        "JoinType": 0,
    })  # fmt: skip
    x5c = reply["Certificate"]["RawBody"]

    def request(claims: dict[str, Any]) -> str:
        return formats.jws_sign(device, claims, "RS256", {"typ": "JWT", "x5c": x5c, "kdf_ver": 2})

    nonce = service.issue_prt_nonce()
    with pytest.raises(InvalidData, match="request_nonce was not issued"):
        service.issue_prt(request({"request_nonce": "x", "note": nonce}))  # a substring
    with pytest.raises(InvalidData, match="request_nonce was not issued"):
        service.issue_prt(request({"request_nonce": nonce + "x"}))
    with pytest.raises(InvalidData, match="no request_nonce"):
        service.issue_prt(request({"note": f"request_nonce {nonce}"}))
    token = request({"request_nonce": nonce})
    assert "session_key_jwe" in service.issue_prt(token)
    with pytest.raises(InvalidData, match="already used"):
        service.issue_prt(token)  # a replay
    forged = token.rsplit(".", 1)[0] + "." + b64url_encode(bytes(256))
    with pytest.raises(InvalidSignature):
        service.issue_prt(forged)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
_MEMBERS = {"CertificateRequest", "TransportKey", "JoinType", "Attestation", "Type", "Data",
            "AkPublic", "DeviceKey"}  # fmt: skip
SERVICE = _service(allow_software=True)


@given(
    body=st.dictionaries(st.sampled_from(sorted(_MEMBERS)), _JSON, max_size=5)
    | _JSON
    | st.fixed_dictionaries(
        {"CertificateRequest": st.fixed_dictionaries({"Type": _JSON, "Data": _JSON}),
         "TransportKey": _JSON, "JoinType": _JSON,
         "Attestation": st.dictionaries(st.sampled_from(["AkPublic", "DeviceKey",
                                                         "TransportKey"]), _JSON)}
    ),
)  # fmt: skip
def test_malformed_join_requests_raise_only_typed_errors(body: Any) -> None:
    with pytest.raises(EntraKeysError):
        SERVICE.register(body)


@pytest.mark.parametrize(
    "token",
    [
        None, 5, "", "a.b.c", "e30.e30.", b64url_encode(b"[]") + ".e30.",
        b64url_encode(b'{"x5c": 5}') + ".e30.",
        b64url_encode(b'{"x5c": []}') + ".e30.",
        b64url_encode(b'{"x5c": [5]}') + ".e30.",
        b64url_encode(b'{"x5c": "not base64!"}') + ".e30.",
        b64url_encode(b'{"x5c": "AAAA"}') + ".e30.",
    ],
)  # fmt: skip
def test_malformed_prt_requests_raise_only_typed_errors(token: Any) -> None:
    with pytest.raises(InvalidData):
        SERVICE.issue_prt(token)


def test_prt_request_whose_certificate_has_no_cn_is_a_typed_error() -> None:
    key = rsa.generate_private_key(65537, 2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([]))
        .issuer_name(_name("x")).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    header = b64url_encode(json.dumps({"alg": "RS256", "x5c": [x5c]}).encode())
    with pytest.raises(InvalidData, match="no subject CN"):
        SERVICE.issue_prt(header + ".e30.")


def test_enrollment_requests_of_the_wrong_shape_are_typed_errors() -> None:
    with pytest.raises(InvalidData):
        SERVICE.enrollment_challenge(object(), b"")
    ek = software_endorsement_key(rsa.generate_private_key(65537, 2048))
    for bad in (b"", b"\x00", "text", None):
        with pytest.raises(InvalidData):
            SERVICE.enrollment_challenge(ek, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidData):
            SERVICE.finish_enrollment(bad, b"")  # type: ignore[arg-type]


def test_an_ek_asked_for_by_type_is_the_one_the_whole_list_holds(provider: Provider) -> None:
    """``endorsement_keys(key_type)`` reads one EK alone: the same key, certificate and chain
    as the whole list's; a type the provider has no EK of gives none (software: RSA only)."""
    everything = provider.endorsement_keys()
    for key_type in (KeyType.RSA2048, KeyType.ECC256):
        alone = provider.endorsement_keys(key_type)
        expected = [ek for ek in everything if ek.key_type is key_type]
        assert [(e.public, e.certificate, e.chain) for e in alone] == [
            (e.public, e.certificate, e.chain) for e in expected
        ]
    assert provider.endorsement_keys(KeyType.RSA2048), "every provider has an RSA EK"
    if not provider.hardware_backed:
        assert provider.endorsement_keys(KeyType.ECC256) == []
