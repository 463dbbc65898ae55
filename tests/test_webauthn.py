"""WebAuthn "tpm" attestations: real Windows Hello registrations, and every attack on them.

The real vectors (tests/vectors/realworld/webauthn-tpm, sources in SOURCES.md) are hardware
with certificate evidence when Microsoft's AIK root is trusted, at a time inside their AK
certificates' validity, and refused with the exact check otherwise. Attacks on what the real
vectors cannot show (a credential key that is not the certified one, an AK certificate of
another profile, ECDSA and PSS statements) use statements made here by a stand-in AIK CA.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import pickle
from collections.abc import Callable
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
    TrustPolicy,
    verify_attestation_object,
    verify_tpm_attestation,
)
from entra_keys.attestation.cbor import MAX_CBOR_DEPTH, decode, decode_prefix
from entra_keys.attestation.ekcert import read_certificate
from entra_keys.attestation.webauthn import AuthenticatorData, cose_public_key
from entra_keys.errors import AttestationCheckFailed, Check, EntraKeysError, InvalidData
from entra_keys.tcg.structures import (
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPMA_OBJECT,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSClockInfo,
    TPMTPublic,
)

from .helpers import raises_check

pytestmark = [
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Attribute.s length must be:UserWarning"),
]

REAL = Path(__file__).parent / "vectors" / "realworld"
MICROSOFT_ROOT = (REAL / "tpm-ca-certificates" / "microsoft_tpm_root_ca_2014.pem").read_bytes()
#: The four real Windows Hello attestations whose chain ends at Microsoft's AIK root.
WINDOWS_HELLO = {
    "dell_xps_13": ("py_webauthn-attestation_dell_xps_13.json", "Nuvoton", "NPCT6xx", "id:13"),
    "lenovo_x1": (
        "py_webauthn-attestation_lenovo_carbon_x1.json", "STMicroelectronics", "ST33HTPHAHC0",
        "id:00490008",
    ),
    "surface_pro_4": ("py_webauthn-attestation_surface_pro_4.json", "Intel", "ICL", "id:00020000"),
    "python_fido2": ("python-fido2-windows_hello_sha1.json", "Nuvoton", "NPCT6xx", "id:13"),
}  # fmt: skip


@dataclasses.dataclass
class Vector:
    """A real attestation as the relying party receives it (attStmt decoded from CBOR)."""

    statement: dict[str, Any]
    auth_data: bytes
    client_data_hash: bytes

    @property
    def ak_certificate(self) -> x509.Certificate:
        return read_certificate(self.statement["x5c"][0]).certificate

    def inside_validity(self) -> datetime:
        """A time every certificate of its chain is valid at (the AK certificates' start)."""
        chain = [read_certificate(c).certificate for c in self.statement["x5c"]]
        return max(c.not_valid_before_utc for c in chain) + timedelta(days=1)

    def with_statement(self, **changes: Any) -> Vector:
        return dataclasses.replace(self, statement={**self.statement, **changes})


def load(name: str) -> Vector:
    document = json.loads((REAL / "webauthn-tpm" / name).read_text())
    statement = dict(document["attStmt"])
    for member in ("sig", "certInfo", "pubArea"):
        statement[member] = base64.b64decode(statement[member])
    statement["x5c"] = [base64.b64decode(c) for c in statement["x5c"]]
    return Vector(
        statement,
        base64.b64decode(document["authData"]),
        base64.b64decode(document["clientDataHash"]),
    )


def verify(vector: Vector, policy: TrustPolicy) -> Any:
    return verify_tpm_attestation(
        vector.statement, vector.auth_data, vector.client_data_hash, policy=policy
    )


def microsoft(vector: Vector, **options: Any) -> TrustPolicy:
    """A policy that trusts Microsoft's AIK root at a time inside the vector's validity."""
    settings: dict[str, Any] = {"allow_sha1": True, "at": vector.inside_validity()}
    settings.update(options)
    return TrustPolicy(ak_ca_certificates=[MICROSOFT_ROOT], **settings)


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --- the real attestations ------------------------------------------------------------------------


@pytest.mark.parametrize("which", WINDOWS_HELLO)
def test_real_windows_hello_attestations_are_hardware_with_microsoft_s_root(which: str) -> None:
    name, vendor, model, version = WINDOWS_HELLO[which]
    vector = load(name)
    result = verify(vector, microsoft(vector))
    assert result.hardware_backed and result.ak_evidence is AKEvidence.CERTIFICATE
    info = result.ak_certificate_info
    assert info is not None
    assert (info.vendor, info.model, info.version) == (vendor, model, version)
    assert (
        "Microsoft TPM Root Certificate Authority 2014"
        in read_certificate(info.chain[-1]).certificate.subject.rfc4514_string()
    )
    # The certified key is the credential's, as the authenticator data gives it.
    assert result.credential_public_key.public_numbers() == (
        result.certify.public_key.public_numbers()
    )
    assert result.credential_id and len(result.aaguid) == 16 and result.alg == -65535
    # The bundle shipped with entra_keys trusts the same root: no CA to pass by hand.
    bundled = TrustPolicy.with_tpm_vendor_cas(allow_sha1=True, at=vector.inside_validity())
    assert verify(vector, bundled).hardware_backed
    # Results pickle (a service sends them on), their certificate information with them.
    again = pickle.loads(pickle.dumps(result))
    assert again.certify == result.certify and again.ak_certificate_info == info


@pytest.mark.parametrize("which", WINDOWS_HELLO)
def test_real_attestations_under_another_root_are_refused(which: str) -> None:
    vector = load(WINDOWS_HELLO[which][0])
    google = (REAL / "go-tpm-tools" / "server" / "ca-certs" / "tpm_ek_root_1.cer").read_bytes()
    other = TrustPolicy(ak_ca_certificates=[google], allow_sha1=True, at=vector.inside_validity())
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        verify(vector, other)
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):
        verify(vector, TrustPolicy(allow_sha1=True, at=vector.inside_validity()))


@pytest.mark.parametrize("which", WINDOWS_HELLO)
@pytest.mark.parametrize(
    ("member", "position", "check"),
    [
        ("certInfo", 40, Check.SIGNATURE),  # the signature covers certInfo: any byte
        ("certInfo", 0, Check.SIGNATURE),
        ("sig", 100, Check.SIGNATURE),
        ("pubArea", 100, Check.NAME),  # a byte of the key's modulus: another name
        ("authData", 3, Check.NONCE),  # the rpIdHash: extraData is the hash of authData || ...
        ("clientDataHash", 7, Check.NONCE),
    ],
)
def test_a_flipped_byte_is_refused_at_its_check(
    which: str, member: str, position: int, check: Check
) -> None:
    vector = load(WINDOWS_HELLO[which][0])
    policy = microsoft(vector)
    if member == "authData":
        vector = dataclasses.replace(vector, auth_data=flipped(vector.auth_data, position))
    elif member == "clientDataHash":
        changed = flipped(vector.client_data_hash, position)
        vector = dataclasses.replace(vector, client_data_hash=changed)
    else:
        vector = vector.with_statement(**{member: flipped(vector.statement[member], position)})
    with raises_check(check):
        verify(vector, policy)


def test_another_device_s_pub_area_is_refused_at_the_name() -> None:
    dell, lenovo = load(WINDOWS_HELLO["dell_xps_13"][0]), load(WINDOWS_HELLO["lenovo_x1"][0])
    swapped = dell.with_statement(pubArea=lenovo.statement["pubArea"])
    with raises_check(Check.NAME, match="not the name of the TPMT_PUBLIC"):
        verify(swapped, microsoft(dell))


@pytest.mark.parametrize("which", WINDOWS_HELLO)
def test_sha1_is_refused_unless_the_policy_allows_it(which: str) -> None:
    vector = load(WINDOWS_HELLO[which][0])
    with raises_check(Check.HASH, match="sha1"):
        verify(vector, microsoft(vector, allow_sha1=False))


@pytest.mark.parametrize("which", WINDOWS_HELLO)
def test_expired_ak_certificates_are_refused_naming_the_expiry(which: str) -> None:
    vector = load(WINDOWS_HELLO[which][0])
    leaf = vector.ak_certificate
    after = leaf.not_valid_after_utc + timedelta(days=1)
    with raises_check(Check.CERTIFICATE, match=f"to {leaf.not_valid_after_utc:%Y-%m-%d}"):
        verify(vector, microsoft(vector, at=after))
    now = datetime.now(UTC)
    if leaf.not_valid_after_utc < now:  # most have expired since they were captured
        with raises_check(Check.CERTIFICATE, match="is valid from .* UTC, not at"):
            verify(vector, microsoft(vector, at=now))
    with raises_check(Check.CERTIFICATE, match="is valid from"):  # and before they were issued
        verify(vector, microsoft(vector, at=leaf.not_valid_before_utc - timedelta(days=1)))


def test_the_expired_real_attestations_are_refused_at_today_s_date() -> None:
    """Today (the policy's default time) the py_webauthn vectors' AK certificates have expired."""
    expired = [name for name, *_ in WINDOWS_HELLO.values() if name.startswith("py_webauthn")]
    for name in expired:
        vector = load(name)
        policy = TrustPolicy(ak_ca_certificates=[MICROSOFT_ROOT], allow_sha1=True)
        with raises_check(Check.CERTIFICATE, match="the AK certificate is valid from"):
            verify(vector, policy)


def test_the_fido_fake_root_attestation_is_hardware_only_where_that_ca_is_trusted() -> None:
    """go-webauthn's statement chains to "FIDO Fake TPM Root Certificate Authority 2018": never
    hardware under Microsoft's root, the shipped bundle or no AK CA; hardware only where the
    policy trusts the FIDO conformance CA (here its intermediate, x5c[1], the root not given)."""
    vector = load("go-webauthn-1.json")
    when = vector.inside_validity()
    for policy in (
        microsoft(vector),
        TrustPolicy.with_tpm_vendor_cas(allow_sha1=True, at=when),
        TrustPolicy(allow_sha1=True, at=when),
    ):
        with raises_check(Check.CERTIFICATE):
            verify(vector, policy)
    fido = vector.statement["x5c"][1]
    trusting = TrustPolicy(ak_ca_certificates=[fido], allow_sha1=True, at=when)
    result = verify(vector, trusting)
    assert result.hardware_backed and result.ak_evidence is AKEvidence.CERTIFICATE
    info = result.ak_certificate_info
    assert info is not None and info.model == "NPCT6xx" and info.vendor is None  # id:FFFFF1D0
    # Its certificates are not DER a reader takes as they are: what was done is said.
    assert any("authorityKeyIdentifier" in repair for repair in info.repairs)
    assert any("certificatePolicies" in repair for repair in info.repairs)


# --- the attestation object and its CBOR ------------------------------------------------------


def cbor(value: Any) -> bytes:
    """CBOR of ints, bytes, text, lists and dicts (shortest form), for building test input."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | info]) + n.to_bytes(size, "big")
        raise ValueError(n)

    if isinstance(value, bool) or value is None:
        return bytes([0xF5 if value is True else 0xF4 if value is False else 0xF6])
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        return head(3, len(value.encode())) + value.encode()
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor(v) for v in value)
    return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())


def attestation_object(vector: Vector) -> bytes:
    return cbor({"fmt": "tpm", "attStmt": vector.statement, "authData": vector.auth_data})


def test_a_relying_party_verifies_in_three_lines() -> None:
    """The README's example, as a relying party runs it on what the browser sent."""
    vector = load(WINDOWS_HELLO["surface_pro_4"][0])
    attestation_object_bytes, client_data_hash = attestation_object(vector), vector.client_data_hash
    at = vector.inside_validity()  # (the README's example checks at the time of the call)

    policy = TrustPolicy.with_tpm_vendor_cas(allow_sha1=True, at=at)  # Windows signs with RS1
    result = verify_attestation_object(attestation_object_bytes, client_data_hash, policy=policy)
    assert result.hardware_backed

    assert result.ak_certificate_info is not None
    assert result.ak_certificate_info.vendor == "Intel"


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (b"\xa1\x63fmt\x64none", "not tpm"),
        (b"\xa0", "not tpm"),
        (b"\x80", "not a map"),
        (b"\xbf\xff", "indefinite length"),
        (b"\xa2\x63fmt\x63tpm\x63fmt\x63tpm", "given twice"),
        (b"\xa1\x63fmt\x63tpm\x00", "bytes after"),
        (b"\x5a\xff\xff\xff\xff", "runs past the end"),
        (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", "runs past the end"),
        (b"\xc0\x60", "tags are not taken"),
        (b"\xf9\x3c\x00", "float"),
        (b"\x7f\xff", "indefinite length"),
        (b"\x62\xff\xfe", "not UTF-8"),
        (b"\xa1\xf5\x00", "map key"),
        (b"\x1c", "reserved"),
        (b"\x81" * (MAX_CBOR_DEPTH + 2) + b"\x00", "nested deeper"),
    ],
)
def test_malformed_attestation_objects_are_structure_refusals(document: bytes, match: str) -> None:
    with raises_check(Check.STRUCTURE, match=match):
        verify_attestation_object(document, bytes(32))


def test_the_cbor_reader_reads_what_webauthn_sends() -> None:
    value = {"a": [1, -2, b"\x00", "t", True, False, None], 3: {-1: b"k"}}
    assert decode(cbor(value)) == value
    assert decode(b"\x18\x05") == 5 and decode(b"\x19\x00\x05") == 5  # longer forms: well-formed
    assert decode_prefix(cbor(7) + b"rest") == (7, 1)
    with pytest.raises(InvalidData, match="more than"):
        decode(b"\x99\x20\x00" + b"\x00" * 0x2000)
    with pytest.raises(InvalidData, match="is bytes"):
        decode("text")  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_random_bytes_are_only_ever_typed_refusals_of_the_cbor_reader(data: bytes) -> None:
    with contextlib.suppress(InvalidData):
        decode(data)


@given(
    member=st.sampled_from(["certInfo", "sig", "pubArea", "authData", "clientDataHash"]),
    at=st.integers(min_value=0, max_value=400),
    value=st.integers(min_value=0, max_value=255),
)
def test_damaged_statements_are_never_hardware(member: str, at: int, value: int) -> None:
    vector = load(WINDOWS_HELLO["python_fido2"][0])
    original = {
        "authData": vector.auth_data, "clientDataHash": vector.client_data_hash,
    }.get(member, vector.statement.get(member))  # fmt: skip
    assert isinstance(original, bytes)
    at %= len(original)
    if original[at] == value:
        return
    damaged = original[:at] + bytes([value]) + original[at + 1 :]
    if member == "authData":
        vector = dataclasses.replace(vector, auth_data=damaged)
    elif member == "clientDataHash":
        vector = dataclasses.replace(vector, client_data_hash=damaged)
    else:
        vector = vector.with_statement(**{member: damaged})
    with pytest.raises(EntraKeysError):
        verify(vector, microsoft(load(WINDOWS_HELLO["python_fido2"][0])))


# --- statements made here, for what real ones cannot show ------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else x509.Name([])


TPM_NAMES = x509.DirectoryName(x509.Name([
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:49465800"),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "SLB9670"),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00070055"),
]))  # fmt: skip
AIK_PURPOSE = x509.ObjectIdentifier("2.23.133.8.3")
NOW = datetime.now(UTC)


def _ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(65537, 2048)
    cert = (
        x509.CertificateBuilder().subject_name(_name("Stand-in AIK CA"))
        .issuer_name(_name("Stand-in AIK CA")).public_key(key.public_key())
        .serial_number(1).not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


CA_KEY, CA = _ca()


def ak_certificate(
    ak: Any,
    *,
    subject: str = "",
    purposes: tuple[x509.ObjectIdentifier, ...] = (AIK_PURPOSE,),
    san: bool = True,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(CA.subject)
        .public_key(ak.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )  # fmt: skip
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(purposes)), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([TPM_NAMES]), critical=True)
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(CA_KEY, hashes.SHA256())


WINDOWS_HELLO_ATTRIBUTES = 0x60472


def cose(key: Any) -> dict[int, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {1: 3, 3: -257, -1: numbers.n.to_bytes(256, "big"), -2: b"\x01\x00\x01"}
    point = public.public_numbers()
    return {1: 2, 3: -7, -1: 1, -2: point.x.to_bytes(32, "big"), -3: point.y.to_bytes(32, "big")}


def made_statement(
    *,
    ak: Any = None,
    alg: int = -257,
    credential: Any = None,
    cose_key: dict[int, Any] | None = None,
    attributes: int = WINDOWS_HELLO_ATTRIBUTES,
    certificate: Callable[[Any], x509.Certificate] = ak_certificate,
    aaguid: bytes = bytes(range(16)),
) -> Vector:
    """A "tpm" statement by a stand-in AK and AIK CA, as Windows Hello makes them."""
    ak = ak or rsa.generate_private_key(65537, 2048)
    credential = credential or rsa.generate_private_key(65537, 2048)
    pub_area = TPMTPublic.from_public_key(credential.public_key(), attributes).to_bytes()
    key = cbor(cose_key if cose_key is not None else cose(credential))
    auth_data = (
        hashlib.sha256(b"example.com").digest() + b"\x45" + (0).to_bytes(4, "big") + aaguid
        + (16).to_bytes(2, "big") + bytes(16) + key
    )  # fmt: skip
    client_data_hash = hashlib.sha256(b'{"type":"webauthn.create"}').digest()
    digest = {-257: hashes.SHA256(), -37: hashes.SHA256(), -7: hashes.SHA256()}[alg]
    extra = hashlib.sha256(auth_data + client_data_hash).digest()
    name = TPMTPublic.parse(pub_area).name()
    cert_info = TPMSAttest(
        TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, b"\x00\x0b" + bytes(32), extra,
        TPMSClockInfo(1, 2, 3, True), 0x1234, TPMSCertifyInfo(name, b"\x00\x0b" + bytes(32)),
    ).to_bytes()  # fmt: skip
    if alg == -257:
        sig = ak.sign(cert_info, padding.PKCS1v15(), digest)
    elif alg == -37:
        sig = ak.sign(cert_info, padding.PSS(padding.MGF1(digest), 32), digest)
    else:
        sig = ak.sign(cert_info, ec.ECDSA(digest))
    der = certificate(ak).public_bytes(serialization.Encoding.DER)
    statement = {
        "ver": "2.0", "alg": alg, "x5c": [der], "sig": sig, "certInfo": cert_info,
        "pubArea": pub_area,
    }  # fmt: skip
    return Vector(statement, auth_data, client_data_hash)


STAND_IN = TrustPolicy(ak_ca_certificates=[CA])


@pytest.mark.parametrize(
    ("alg", "ak"),
    [
        (-257, rsa.generate_private_key(65537, 2048)),
        (-37, rsa.generate_private_key(65537, 2048)),
        (-7, ec.generate_private_key(ec.SECP256R1())),
    ],
    ids=["RS256", "PS256", "ES256"],
)
def test_statements_of_each_algorithm_verify(alg: int, ak: Any) -> None:
    for credential in (
        rsa.generate_private_key(65537, 2048),
        ec.generate_private_key(ec.SECP256R1()),
    ):
        result = verify(made_statement(ak=ak, alg=alg, credential=credential), STAND_IN)
        assert result.hardware_backed and result.alg == alg
        assert result.certify.key_public.object_attributes == WINDOWS_HELLO_ATTRIBUTES


def test_a_credential_key_other_than_the_certified_one_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with raises_check(Check.KEY, match="not the expected key"):
        verify(made_statement(cose_key=cose(other)), STAND_IN)


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        (WINDOWS_HELLO_ATTRIBUTES & ~TPMA_OBJECT.FIXEDTPM, "not fixedTPM"),
        (WINDOWS_HELLO_ATTRIBUTES & ~TPMA_OBJECT.SENSITIVEDATAORIGIN, "not fixedTPM"),
        (WINDOWS_HELLO_ATTRIBUTES | TPMA_OBJECT.RESTRICTED, "unrestricted"),
        (WINDOWS_HELLO_ATTRIBUTES & ~TPMA_OBJECT.SIGN_ENCRYPT, "not a signing key"),
    ],
    ids=["could-leave-the-tpm", "imported", "restricted", "no-sign"],
)
def test_a_pub_area_that_is_no_tpm_credential_key_is_refused(attributes: int, match: str) -> None:
    with raises_check(Check.KEY_ATTRIBUTES, match=match):
        verify(made_statement(attributes=attributes), STAND_IN)


@pytest.mark.parametrize(
    ("certificate", "match"),
    [
        (lambda ak: ak_certificate(ak, subject="not empty"), "subject"),
        (lambda ak: ak_certificate(ak, san=False), "no subjectAltName"),
        (lambda ak: ak_certificate(ak, purposes=(x509.ObjectIdentifier("2.23.133.8.1"),)),
         "tcg-kp-AIKCertificate"),
        (lambda ak: ak_certificate(ak, purposes=()), "tcg-kp-AIKCertificate"),
        (lambda ak: ak_certificate(ak, extra=(x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + bytes(16)),)),
         "AAGUID"),
    ],
    ids=["subject", "no-san", "ek-purpose", "no-eku", "aaguid"],
)  # fmt: skip
def test_an_ak_certificate_outside_webauthn_s_profile_is_refused(
    certificate: Callable[[Any], x509.Certificate], match: str
) -> None:
    with raises_check(Check.CERTIFICATE, match=match):
        verify(made_statement(certificate=certificate), STAND_IN)


def test_the_aaguid_extension_that_matches_is_taken() -> None:
    aaguid = bytes(range(16))
    extension = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + aaguid
    )
    vector = made_statement(
        aaguid=aaguid, certificate=lambda ak: ak_certificate(ak, extra=(extension,))
    )
    assert verify(vector, STAND_IN).hardware_backed


def test_an_alg_that_does_not_fit_is_refused() -> None:
    vector = made_statement()
    with raises_check(Check.SIGNATURE, match="not a COSE algorithm"):
        verify(vector.with_statement(alg=-8), STAND_IN)  # EdDSA: no TPM signs with it
    with raises_check(Check.SIGNATURE, match="does not fit"):
        verify(vector.with_statement(alg=-7), STAND_IN)  # ES256 with an RSA AK
    with raises_check(Check.SIGNATURE):
        verify(vector.with_statement(alg=-37), STAND_IN)  # PSS over a PKCS#1 signature
    ecdsa = made_statement(ak=ec.generate_private_key(ec.SECP256R1()), alg=-7)
    with raises_check(Check.SIGNATURE, match="DER ECDSA"):
        verify(ecdsa.with_statement(sig=b"\x30\x02\x01"), STAND_IN)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ver": "1.0"}, "not 2.0"),
        ({"ver": None}, "ver is not str"),
        ({"alg": "RS256"}, "alg is not int"),
        ({"alg": True}, "alg is not int"),
        ({"x5c": []}, "x5c"),
        ({"x5c": ["text"]}, "x5c"),
        ({"sig": "text"}, "sig is not bytes"),
        ({"ecdaaKeyId": b"x"}, "ECDAA"),
    ],
)
def test_statements_of_the_wrong_shape_are_structure_refusals(
    change: dict[str, Any], match: str
) -> None:
    with raises_check(Check.STRUCTURE, match=match):
        verify(made_statement().with_statement(**change), STAND_IN)


def test_authenticator_data_and_cose_keys_are_read_strictly() -> None:
    vector = made_statement()
    parsed = AuthenticatorData.parse(vector.auth_data)
    assert parsed.aaguid == bytes(range(16)) and parsed.extensions is None
    with raises_check(Check.STRUCTURE, match="bytes after"):
        AuthenticatorData.parse(vector.auth_data + b"\x00")
    no_credential = vector.auth_data[:32] + b"\x05" + vector.auth_data[33:]
    with raises_check(Check.STRUCTURE, match="AT flag"):
        AuthenticatorData.parse(no_credential)
    with raises_check(Check.STRUCTURE, match="too short"):
        AuthenticatorData.parse(vector.auth_data[:40])
    with_extensions = vector.auth_data[:32] + b"\xc5" + vector.auth_data[33:] + cbor({"x": 1})
    assert AuthenticatorData.parse(with_extensions).extensions == cbor({"x": 1})
    for key, match in [
        ({1: 1, -1: 6, -2: bytes(32)}, "not RSA"),  # OKP (Ed25519)
        ({1: 2, -1: 8, -2: bytes(32), -3: bytes(32)}, "P-256/384/521"),
        ({1: 2, -1: 1, -2: bytes(31), -3: bytes(32)}, "32 bytes"),
        ({1: 2, -1: 1, -2: bytes(32), -3: bytes(32)}, "not a valid key"),  # not on the curve
        ({1: 3, -1: b"", -2: b"\x03"}, "no n and e"),
    ]:
        with raises_check(Check.STRUCTURE, match=match):
            cose_public_key(cbor(key))
    with raises_check(Check.NONCE, match="32-byte"):
        verify_tpm_attestation(vector.statement, vector.auth_data, b"short", policy=STAND_IN)


def test_results_pickle_with_what_they_say() -> None:
    result = verify(made_statement(), STAND_IN)
    again = pickle.loads(pickle.dumps(result))
    assert again.certify == result.certify and again.credential_id == result.credential_id
    assert again.ak_certificate_info.model == "SLB9670"
    assert again.ak_certificate_info.vendor == "Infineon"
    assert again.certify.nonce_policy == result.certify.nonce_policy


def test_untrusted_by_default() -> None:
    """The default policy trusts no AK CA: nothing verifies as hardware by accident."""
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):
        verify(made_statement(), TrustPolicy())
    with pytest.raises(AttestationCheckFailed):
        verify_tpm_attestation(made_statement().statement, b"", bytes(32))


def test_sha256_statements_need_no_sha1() -> None:
    assert TPM_ALG_SHA256 == 0x000B
    assert verify(made_statement(), TrustPolicy(ak_ca_certificates=[CA])).hardware_backed
