"""Evidence from real machines no one here made: cloud vTPM quotes with AK certificates (GCE),
a Windows AK's creation attestation and SHA-1 quote (go-attestation's GCE Windows VM), quotes
with short or empty nonces; and every attack on AK certificates and on the nonce rules.

The vectors are in tests/vectors/realworld (sources and licences in SOURCES.md).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
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

from entra_keys.attestation import (
    AKEvidence,
    NoncePolicy,
    TrustPolicy,
    verify_ak_certificate,
    verify_certify,
    verify_creation,
    verify_quote,
)
from entra_keys.errors import AttestationCheckFailed, Check, EntraKeysError, MalformedAttestation
from entra_keys.tcg.structures import (
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CREATION,
    TPM_ST_ATTEST_QUOTE,
    TPMA_OBJECT,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSClockInfo,
    TPMSCreationData,
    TPMSCreationInfo,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTScheme,
    TPMTSignature,
)

from .helpers import raises_check

pytestmark = pytest.mark.filterwarnings("ignore:Attribute.s length must be:UserWarning")

REAL = Path(__file__).parent / "vectors" / "realworld"
GOOGLE = REAL / "go-tpm-tools" / "server" / "ca-certs"
GOOGLE_ROOT = (GOOGLE / "tpm_ek_root_1.cer").read_bytes()
GOOGLE_INTERMEDIATE = (GOOGLE / "tpm_ek_intermediate_2.crt").read_bytes()


#: The real vectors the hardware tests read (test_webauthn, test_ca_bundle, test_ek_url and this
#: module), relative to tests/vectors/realworld: test_eventlog's inventory counts them as used.
REAL_HARDWARE_VECTORS = frozenset(
    {
        *(f"webauthn-tpm/{p.name}" for p in (REAL / "webauthn-tpm").glob("*.json")),
        *(f"tpm-ca-certificates/{p.name}" for p in (REAL / "tpm-ca-certificates").glob("*.pem")),
        *(f"go-tpm-tools/server/ca-certs/{p.name}" for p in GOOGLE.iterdir()),
        *(f"keylime/test_certs/{p.name}" for p in (REAL / "keylime" / "test_certs").iterdir()),
        "go-attestation/intel_ptt_ek_pub.pem",
        "go-attestation/amd_ftpm_ek_pub.pem",
    }
)


def test_every_hardware_vector_is_there_and_has_its_source() -> None:
    sources = (REAL / "SOURCES.md").read_text()
    assert len(REAL_HARDWARE_VECTORS) == 18  # 5 + 3 + 5 + 3 + 2
    for name in REAL_HARDWARE_VECTORS:
        assert (REAL / name).is_file() and f"`{name}`" in sources, name


def b64(text: str) -> bytes:
    return base64.b64decode(text)


# --- GCE: quotes with no nonce, the AK known by Google's certificate -------------------------

GCE = json.loads((REAL / "go-tpm-tools" / "gce-cos-85-no-nonce.json").read_text())


def gce_quote(index: int, policy: TrustPolicy, **kwargs: Any) -> Any:
    quote = GCE["quotes"][index]
    bank = quote["pcrs"]["hash"]
    pcrs = {bank: {int(i): b64(v) for i, v in quote["pcrs"]["pcrs"].items()}}
    options: dict[str, Any] = {
        "ak_certificate": b64(GCE["ak_cert"]), "ak_intermediates": [GCE_INTERMEDIATE_DER],
    }  # fmt: skip
    options.update(kwargs)
    return verify_quote(
        b64(quote["quote"]), b64(quote["raw_sig"]), b64(GCE["ak_pub"]), b"", pcrs,
        policy=policy, **options,
    )  # fmt: skip


GCE_INTERMEDIATE_DER = GOOGLE_INTERMEDIATE
#: GCE's quotes carry no nonce: the policy must allow that, and says so in the result.
NO_NONCE = TrustPolicy(ak_ca_certificates=[GOOGLE_ROOT], allow_empty_nonce=True, allow_sha1=True)


@pytest.mark.parametrize(("index", "bank"), [(0, "sha1"), (1, "sha256"), (2, "sha384")])
def test_gce_quotes_verify_with_only_google_s_root_trusted(index: int, bank: str) -> None:
    result = gce_quote(index, NO_NONCE)
    assert result.hardware_backed and result.ak_evidence is AKEvidence.CERTIFICATE
    assert set(result.pcr_values) == {bank} and len(result.pcr_values[bank]) == 24
    info = result.ak_certificate_info
    assert info is not None
    assert (info.vendor, info.model, info.version) == ("Google", "vTPM", "id:20160511")
    assert info.key_purposes == ("2.23.133.8.1",)  # Google's CA writes the EK purpose
    assert len(info.chain) == 3  # the AK certificate, the intermediate, the root
    assert result.nonce_policy == NoncePolicy(min_nonce=8, allow_empty=True)
    assert "no freshness" in str(result.nonce_policy)


def test_gce_quotes_are_refused_at_the_nonce_by_the_default_nonce_rules() -> None:
    strict = TrustPolicy(ak_ca_certificates=[GOOGLE_ROOT], allow_sha1=True)
    for index in range(3):
        with raises_check(Check.NONCE, match="nonce is empty"):
            gce_quote(index, strict)
    for index in (1, 2):  # the default policy itself, the AK given by its TPMT_PUBLIC alone
        with raises_check(Check.NONCE, match="nonce is empty"):
            gce_quote(index, TrustPolicy(), ak_certificate=None, ak_intermediates=[])
    # Nor does lowering the minimum allow an empty nonce.
    with raises_check(Check.NONCE, match="allow_empty_nonce"):
        gce_quote(1, TrustPolicy(ak_ca_certificates=[GOOGLE_ROOT], min_nonce=1))
    with raises_check(Check.HASH, match="sha1"):  # and the SHA-1 bank needs allow_sha1
        gce_quote(0, TrustPolicy(ak_ca_certificates=[GOOGLE_ROOT], allow_empty_nonce=True))


def test_the_gce_ak_certificate_needs_its_intermediate_and_the_root() -> None:
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        gce_quote(1, NO_NONCE, ak_intermediates=[])
    only_intermediate = TrustPolicy(
        ak_ca_certificates=[GOOGLE_INTERMEDIATE], allow_empty_nonce=True
    )
    assert gce_quote(1, only_intermediate).hardware_backed  # the policy's choice of anchor
    # The intermediate may also come from the policy (as the shipped bundle gives it).
    bundled = TrustPolicy.with_tpm_vendor_cas(allow_empty_nonce=True)
    assert gce_quote(1, bundled, ak_intermediates=[]).hardware_backed
    # An AK certificate is evidence only of its own key.
    other_ak = fabricated_ak(rsa.generate_private_key(65537, 2048))
    quote = GCE["quotes"][1]
    with raises_check(Check.CERTIFICATE, match="another key than this AK"):
        verify_quote(
            b64(quote["quote"]), b64(quote["raw_sig"]), other_ak, b"", {"sha256": {0: bytes(32)}},
            policy=NO_NONCE, ak_certificate=b64(GCE["ak_cert"]),
            ak_intermediates=[GOOGLE_INTERMEDIATE],
        )  # fmt: skip


def test_a_policy_may_take_only_microsoft_s_ak_purpose() -> None:
    aik_only = TrustPolicy(
        ak_ca_certificates=[GOOGLE_ROOT], allow_empty_nonce=True, ak_key_purposes=["2.23.133.8.3"]
    )
    with raises_check(Check.CERTIFICATE, match="include none the policy takes"):
        gce_quote(1, aik_only)


# --- go-attestation's Windows VM: a SHA-1 quote without a nonce, the AK's creation ------------

WINDOWS = json.loads((REAL / "go-attestation" / "windows_gcp_shielded_vm.json").read_text())
AK = {name: b64(WINDOWS["AK"][name]) for name in ("Public", "CreateData", "CreateAttestation")}
AK_SIGNATURE = b64(WINDOWS["AK"]["CreateSignature"])
WINDOWS_PCRS = {"sha1": {p["Index"]: b64(p["Digest"]) for p in WINDOWS["Log"]["PCRs"]}}


def windows_quote(policy: TrustPolicy) -> Any:
    quote = WINDOWS["Quote"]
    return verify_quote(
        b64(quote["Quote"]), b64(quote["Signature"]), AK["Public"], b64(quote["Nonce"]),
        WINDOWS_PCRS, policy=policy,
    )  # fmt: skip


def test_the_windows_sha1_quote_without_a_nonce_reaches_the_pcr_checks() -> None:
    result = windows_quote(TrustPolicy(allow_sha1=True, allow_empty_nonce=True))
    assert len(result.pcr_values["sha1"]) == 24 and result.nonce == b""
    assert result.ak_evidence is AKEvidence.UNVERIFIED and not result.hardware_backed
    with raises_check(Check.NONCE, match="nonce is empty"):
        windows_quote(TrustPolicy(allow_sha1=True))
    with raises_check(Check.HASH):
        windows_quote(TrustPolicy(allow_empty_nonce=True))
    changed = {"sha1": {**WINDOWS_PCRS["sha1"], 7: bytes(20)}}
    with raises_check(Check.PCR_DIGEST):  # the checks after the nonce do run
        verify_quote(
            b64(WINDOWS["Quote"]["Quote"]), b64(WINDOWS["Quote"]["Signature"]), AK["Public"], b"",
            changed, policy=TrustPolicy(allow_sha1=True, allow_empty_nonce=True),
        )  # fmt: skip


WINDOWS_POLICY = TrustPolicy(allow_sha1=True, allow_empty_nonce=True)


def creation(policy: TrustPolicy = WINDOWS_POLICY, **changes: Any) -> Any:
    args: dict[str, Any] = {
        "attest": AK["CreateAttestation"], "signature": AK_SIGNATURE, "ak_public": AK["Public"],
        "object_public": AK["Public"], "creation_data": AK["CreateData"], "nonce": b"",
    }  # fmt: skip
    args.update(changes)
    return verify_creation(**args, policy=policy)


def test_the_windows_ak_certifies_its_own_creation() -> None:
    result = creation()
    assert result.self_certified and result.object_name == TPMTPublic.parse(AK["Public"]).name()
    data = result.creation_data
    assert data.locality == 1 and data.parent_name_alg == TPM_ALG_SHA256
    assert data.parent_name.startswith(b"\x00\x0b") and not data.pcr_select.selections
    assert data.to_bytes() == AK["CreateData"]
    assert result.checks[-2:] == ("creation", "nonce")
    # Alone it proves nothing about hardware; with the AK enrolled (credential activation,
    # as go-attestation does next), it is the TPM's word on how the AK was made.
    assert result.ak_evidence is AKEvidence.UNVERIFIED and not result.hardware_backed
    enrolled = TrustPolicy(allow_sha1=True, allow_empty_nonce=True, enrolled_aks=[AK["Public"]])
    assert creation(enrolled).hardware_backed
    assert creation(enrolled).ak_evidence is AKEvidence.ENROLLED
    # The creation data in its TPM2B (as TPM2_Create returns it) is read too.
    sized = len(AK["CreateData"]).to_bytes(2, "big") + AK["CreateData"]
    assert creation(creation_data=sized).creation_data == data


def test_a_creation_attestation_s_attacks_are_refused_at_their_checks() -> None:
    data = AK["CreateData"]
    with raises_check(Check.CREATION, match="creationHash"):
        creation(creation_data=data[:-2] + b"\x00\x01\x07")  # another outsideInfo
    with raises_check(Check.CREATION):
        creation(creation_data=data[:6] + bytes([data[6] ^ 1]) + data[7:])
    other = TPMTPublic.from_public_key(
        rsa.generate_private_key(65537, 2048).public_key(), 0x00050472
    ).to_bytes()
    with raises_check(Check.NAME, match="objectName"):
        creation(object_public=other)
    with raises_check(Check.HASH):
        creation(TrustPolicy(allow_empty_nonce=True))
    with raises_check(Check.NONCE, match="nonce is empty"):
        creation(TrustPolicy(allow_sha1=True))
    with raises_check(Check.NONCE, match="not the nonce"):
        creation(nonce=b"a fresh nonce")
    with raises_check(Check.SIGNATURE):
        creation(signature=AK_SIGNATURE[:-1] + bytes([AK_SIGNATURE[-1] ^ 1]))
    quote = WINDOWS["Quote"]
    with raises_check(Check.TYPE, match="not a creation"):
        creation(attest=b64(quote["Quote"]), signature=b64(quote["Signature"]))
    with pytest.raises(MalformedAttestation):
        creation(creation_data=data + b"\x00")


# --- nonces from other tools -----------------------------------------------------------------

AK_KEY = rsa.generate_private_key(65537, 2048)
AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
PCRS = {0: bytes(32)}


def fabricated_ak(key: Any) -> bytes:
    scheme = TPMTScheme(TPM_ALG_RSASSA, TPM_ALG_SHA256)
    return TPMTPublic.from_public_key(key.public_key(), AK_ATTRIBUTES, scheme=scheme).to_bytes()


def quote_with(nonce: bytes, key: Any = AK_KEY) -> tuple[bytes, bytes]:
    attest = TPMSAttest(
        TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, b"\x00\x0b" + bytes(32), nonce,
        TPMSClockInfo(1, 2, 3, True), 0x20191023,
        TPMSQuoteInfo(TPMLPCRSelection.of({"sha256": PCRS}), hashlib.sha256(bytes(32)).digest()),
    ).to_bytes()  # fmt: skip
    signature = key.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    return attest, TPMTSignature(TPM_ALG_RSASSA, TPM_ALG_SHA256, signature).to_bytes()


@pytest.mark.parametrize(("nonce", "tool"), [(b"\x01\x02", "go-tpm-tools"), (b"abc", "safeboot")])
def test_short_nonces_need_a_lowered_minimum(nonce: bytes, tool: str) -> None:
    attest, signature = quote_with(nonce)
    ak = fabricated_ak(AK_KEY)
    with raises_check(Check.NONCE, match=f"{len(nonce)} bytes; .* at least 8"):
        verify_quote(attest, signature, ak, nonce, {"sha256": PCRS})
    lowered = TrustPolicy(min_nonce=len(nonce))
    result = verify_quote(attest, signature, ak, nonce, {"sha256": PCRS}, policy=lowered)
    assert result.nonce_policy == NoncePolicy(min_nonce=len(nonce))
    assert "lowered by the policy" in str(result.nonce_policy), tool
    with raises_check(Check.NONCE, match="not the nonce"):
        verify_quote(attest, signature, ak, b"\x00" * len(nonce), {"sha256": PCRS}, policy=lowered)
    with raises_check(Check.NONCE, match="at least"):  # one byte shorter than allowed
        verify_quote(attest, signature, ak, nonce[:-1], {"sha256": PCRS}, policy=lowered)


def test_an_empty_nonce_is_taken_only_where_the_policy_says_so() -> None:
    attest, signature = quote_with(b"")
    ak = fabricated_ak(AK_KEY)
    for policy in (TrustPolicy(), TrustPolicy(min_nonce=1)):
        with raises_check(Check.NONCE, match="nonce is empty"):
            verify_quote(attest, signature, ak, b"", {"sha256": PCRS}, policy=policy)
    allowed = TrustPolicy(allow_empty_nonce=True)
    result = verify_quote(attest, signature, ak, b"", {"sha256": PCRS}, policy=allowed)
    assert result.nonce_policy.allow_empty
    # Allowing an empty nonce does not let a quote of a nonce pass without it, nor back.
    with raises_check(Check.NONCE, match="not the nonce"):
        verify_quote(*quote_with(b"12345678"), ak, b"", {"sha256": PCRS}, policy=allowed)
    with raises_check(Check.NONCE, match="not the nonce"):
        verify_quote(attest, signature, ak, b"12345678", {"sha256": PCRS}, policy=allowed)
    # Certifications follow the same rules.
    assert str(NoncePolicy()) == "nonces of at least 8 bytes"


@pytest.mark.parametrize("value", [0, -1, 65, 2.0, "8", True])
def test_a_minimum_nonce_out_of_range_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="min_nonce"):
        TrustPolicy(min_nonce=value)


def test_the_policy_s_time_is_an_aware_datetime() -> None:
    with pytest.raises(TypeError, match="aware datetime"):
        TrustPolicy(at=datetime(2024, 1, 1))  # a naive time: in which zone?
    with pytest.raises(ValueError, match="ak_key_purposes"):
        TrustPolicy(ak_key_purposes=[])


# --- AK certificates: the profile, attacked ----------------------------------------------------

NOW = datetime.now(UTC)
CA_KEY = ec.generate_private_key(ec.SECP256R1())
TPM_NAMES = x509.DirectoryName(x509.Name([
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:4E544300"),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "NPCT75x"),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00070002"),
]))  # fmt: skip


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(
    key: Any,
    issuer_key: Any = CA_KEY,
    *,
    subject: str = "ak",
    issuer: str = "AK CA",
    ca: bool | None = False,
    purposes: tuple[str, ...] | None = ("2.23.133.8.3",),
    names: x509.DirectoryName | None = TPM_NAMES,
    start: datetime = NOW - timedelta(hours=1),
    end: datetime = NOW + timedelta(days=1),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
    )  # fmt: skip
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if purposes is not None:
        oids = [x509.ObjectIdentifier(p) for p in purposes]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([names]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


CA = certificate(CA_KEY, subject="AK CA", ca=True, purposes=None, names=None)
AK_CERT = certificate(AK_KEY)


def test_an_ak_certificate_names_its_tpm() -> None:
    info = verify_ak_certificate(AK_CERT, AK_KEY.public_key(), [CA])
    assert (info.vendor, info.model, info.version) == ("Nuvoton", "NPCT75x", "id:00070002")
    assert info.manufacturer_id == 0x4E544300 and info.subject == "CN=ak"
    assert info.certificate == AK_CERT.public_bytes(serialization.Encoding.DER)
    attest, signature = quote_with(b"12345678")
    result = verify_quote(
        attest, signature, AK_KEY.public_key(), b"12345678", {"sha256": PCRS},
        policy=TrustPolicy(ak_ca_certificates=[CA]), ak_certificate=AK_CERT,
    )  # fmt: skip
    assert result.hardware_backed and result.ak_certificate_info == info.__class__(
        **{**dataclasses.asdict(info), "checked_at": result.ak_certificate_info.checked_at}
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: certificate(AK_KEY, ca=True), "a CA certificate"),
        (lambda: certificate(AK_KEY, purposes=("1.3.6.1.5.5.7.3.1",)), "include none"),
        (lambda: certificate(AK_KEY, purposes=None), r"\(none\) include none"),
        (lambda: certificate(AK_KEY, names=x509.DirectoryName(_name("tpm"))), "lacks the TPM"),
        (lambda: certificate(rsa.generate_private_key(65537, 1024)), "RSA-1024"),
        (lambda: certificate(ec.generate_private_key(ec.SECP256K1())), "secp256k1"),
        (lambda: certificate(AK_KEY, start=NOW - timedelta(days=9), end=NOW - timedelta(days=1)),
         "is valid from"),
        (lambda: certificate(AK_KEY, start=NOW + timedelta(days=1)), "is valid from"),
        (lambda: certificate(AK_KEY, ec.generate_private_key(ec.SECP256R1())), "no trusted CA"),
    ],
    ids=["ca", "server-purpose", "no-eku", "no-tpm-names", "rsa-1024", "not-nist", "expired",
         "not-yet", "forged-issuer"],
)  # fmt: skip
def test_ak_certificates_outside_the_profile_are_refused(make: Any, match: str) -> None:
    cert = make()
    with raises_check(Check.CERTIFICATE, match=match):
        verify_ak_certificate(cert, cert.public_key(), [CA])


def test_an_ak_certificate_of_version_1_is_refused() -> None:
    """X.509 v1 (no extensions): what an AK certificate must say cannot be said."""
    der = bytearray(AK_CERT.public_bytes(serialization.Encoding.DER))
    tbs = AK_CERT.tbs_certificate_bytes
    assert der.find(b"\xa0\x03\x02\x01\x02") > 0  # [0] EXPLICIT version v3
    v1_tbs = tbs.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x00", 1)
    signed = CA_KEY.sign(v1_tbs, ec.ECDSA(hashes.SHA256()))
    with raises_check(Check.CERTIFICATE):
        verify_ak_certificate(_certificate_der(v1_tbs, signed), AK_KEY.public_key(), [CA])


def _certificate_der(tbs: bytes, signature: bytes) -> bytes:
    algorithm = bytes.fromhex("300a06082a8648ce3d040302")  # ecdsa-with-SHA256
    bits = b"\x00" + signature

    def tlv(tag: int, body: bytes) -> bytes:
        size = len(body)
        head = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
        return bytes([tag]) + head + body

    return tlv(0x30, tbs + algorithm + tlv(0x03, bits))


@given(version=st.integers(min_value=3, max_value=255))
def test_fuzz_an_ak_certificate_of_an_unknown_version_is_a_certificate_refusal(
    version: int,
) -> None:
    """A version pyca does not know (x509.InvalidVersion) is refused as CERTIFICATE, never an
    escaping exception (issue 20: verify_ak_certificate let InvalidVersion out)."""
    tbs = AK_CERT.tbs_certificate_bytes.replace(
        b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01" + bytes([version]), 1
    )
    der = _certificate_der(tbs, CA_KEY.sign(tbs, ec.ECDSA(hashes.SHA256())))
    with raises_check(Check.CERTIFICATE):
        verify_ak_certificate(der, AK_KEY.public_key(), [CA])


@given(data=st.binary(max_size=300), at=st.integers(min_value=0, max_value=2000))
def test_fuzz_damaged_ak_certificates_raise_only_entra_keys_errors(data: bytes, at: int) -> None:
    der = AK_CERT.public_bytes(serialization.Encoding.DER)
    at %= len(der)
    damaged = der[:at] + data + der[at + len(data) :]
    try:
        info = verify_ak_certificate(damaged, AK_KEY.public_key(), [CA])
    except EntraKeysError:
        return
    assert x509.load_der_x509_certificate(info.certificate).tbs_certificate_bytes == (
        AK_CERT.tbs_certificate_bytes
    )


def test_ak_intermediates_are_checked_as_cas() -> None:
    middle_key = ec.generate_private_key(ec.SECP256R1())
    middle = certificate(middle_key, subject="AK CA 2", ca=True, purposes=None, names=None)
    leaf = certificate(AK_KEY, middle_key, issuer="AK CA 2")
    info = verify_ak_certificate(leaf, AK_KEY.public_key(), [CA], intermediates=[middle])
    assert len(info.chain) == 3
    not_ca = certificate(middle_key, subject="AK CA 2", ca=None, purposes=None, names=None)
    with raises_check(Check.CERTIFICATE, match="not a CA"):
        verify_ak_certificate(leaf, AK_KEY.public_key(), [CA], intermediates=[not_ca])
    with raises_check(Check.CERTIFICATE):  # an intermediate that is not one is a typed refusal
        verify_quote(
            *quote_with(b"12345678"), AK_KEY.public_key(), b"12345678", {"sha256": PCRS},
            policy=TrustPolicy(ak_ca_certificates=[CA]), ak_certificate=leaf,
            ak_intermediates="not a list",  # type: ignore[arg-type]
        )  # fmt: skip


def test_certifications_take_the_ak_certificate_and_intermediates_too() -> None:
    device = rsa.generate_private_key(65537, 2048)
    attributes = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    public = TPMTPublic.from_public_key(device.public_key(), attributes | TPMA_OBJECT.SIGN_ENCRYPT)
    from entra_keys.tcg.structures import TPM_ST_ATTEST_CERTIFY, TPMSCertifyInfo

    attest = TPMSAttest(
        TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, b"\x00\x0b" + bytes(32), b"12345678",
        TPMSClockInfo(1, 2, 3, True), 1, TPMSCertifyInfo(public.name(), b"\x00\x0b" + bytes(32)),
    ).to_bytes()  # fmt: skip
    signature = TPMTSignature(
        TPM_ALG_RSASSA, TPM_ALG_SHA256, AK_KEY.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    ).to_bytes()
    result = verify_certify(
        attest, signature, AK_KEY.public_key(), public.to_bytes(), b"12345678",
        policy=TrustPolicy(ak_ca_certificates=[CA]), ak_certificate=AK_CERT,
    )  # fmt: skip
    assert result.hardware_backed and result.ak_certificate_info is not None
    with raises_check(Check.TRUST, match="bare public key"):
        verify_certify(attest, signature, AK_KEY.public_key(), public.to_bytes(), b"12345678")


def test_creation_structures_marshal_back() -> None:
    data = TPMSCreationData.parse(AK["CreateData"])
    assert data.to_bytes() == AK["CreateData"]
    attest = TPMSAttest.parse(AK["CreateAttestation"])
    assert attest.type == TPM_ST_ATTEST_CREATION and isinstance(attest.attested, TPMSCreationInfo)
    assert attest.to_bytes() == AK["CreateAttestation"]


def test_refusals_are_attestation_errors() -> None:
    with pytest.raises(AttestationCheckFailed):
        gce_quote(1, TrustPolicy())
