"""EK certificates as chips store them: the swtpm's RSA EK certificate index rewritten (platform
authorization, tpm2-tools) padded, behind the TCG header, as non-strict DER, with a chain index,
or as garbage; read back through the provider and checked against swtpm's local CA (and openssl).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from entra_keys import KeyUsage, open_provider
from entra_keys.attestation import AKEnrollment, TrustPolicy
from entra_keys.attestation.ekcert import verify_ek_certificate
from entra_keys.cli import main
from entra_keys.errors import AttestationCheckFailed, Check, InvalidData
from entra_keys.provider import KeyType
from entra_keys.tcg.nvcert import certificate_lines, nv_certificates
from entra_keys.tcg.records import (
    EndorsementKey,
    endorsement_key_from_json,
    endorsement_key_to_json,
)
from entra_keys.testing.swtpm import Swtpm, swtpm_available

from .helpers import raises_check, transient_handles, unavailable

RSA_INDEX, CHAIN_INDEX = 0x01C00002, 0x01C00100
#: The EK Credential Profile's attributes of a platform-made certificate index.
ATTRIBUTES = "ppwrite|writedefine|ppread|ownerread|authread|no_da|platformcreate"


@pytest.fixture(scope="module")
def own_tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """A swtpm of this module's own: its NV is rewritten, the session swtpm never is."""
    if not swtpm_available() or shutil.which("tpm2_nvdefine") is None:
        unavailable("swtpm or tpm2-tools is not installed")
    tpm = Swtpm(tmp_path_factory.mktemp("ek_nv"))
    tpm.start()
    original = _tools(tpm, "tpm2_nvread", "-C", "o", hex(RSA_INDEX), capture=True)
    tpm.original_cert = original  # type: ignore[attr-defined]
    yield tpm
    tpm.stop()


@pytest.fixture
def tpm(own_tpm: Swtpm) -> Iterator[Swtpm]:
    """The module's swtpm with its original RSA EK certificate back after each test."""
    yield own_tpm
    _write(own_tpm, RSA_INDEX, original(own_tpm))
    _undefine(own_tpm, CHAIN_INDEX)
    assert transient_handles(own_tpm.tcti) == []


def original(tpm: Swtpm) -> bytes:
    data: bytes = tpm.original_cert  # type: ignore[attr-defined]
    return data


def _tools(tpm: Swtpm, *argv: str, capture: bool = False, data: bytes | None = None) -> bytes:
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    done = subprocess.run(
        list(argv), input=data, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout if capture else b""


def _undefine(tpm: Swtpm, index: int) -> None:
    env = {**os.environ, "TPM2TOOLS_TCTI": tpm.tcti}
    subprocess.run(["tpm2_nvundefine", "-C", "p", hex(index)], env=env, capture_output=True,
                   timeout=60, check=False)  # fmt: skip


def _write(tpm: Swtpm, index: int, data: bytes) -> None:
    """The index redefined to the data's size and written, both with platform authorization."""
    _undefine(tpm, index)
    _tools(tpm, "tpm2_nvdefine", "-C", "p", "-s", str(len(data)), "-a", ATTRIBUTES, hex(index))
    _tools(tpm, "tpm2_nvwrite", "-C", "p", "-i", "-", hex(index), data=data)


def _rsa_ek(tpm: Swtpm) -> EndorsementKey:
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        return next(e for e in provider.endorsement_keys() if e.key_type is KeyType.RSA2048)


def _cas(tpm: Swtpm) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.read_bytes()) for p in tpm.ca_certificates]


def _issuer_key(tpm: Swtpm) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((tpm.ca_dir / "signkey.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _openssl_verifies(tpm: Swtpm, tmp_path: Path, der: bytes, *untrusted: bytes) -> bool:
    """openssl's own verdict on the certificate as stored (it checks the TBS as encoded)."""
    leaf = tmp_path / "leaf.der"
    leaf.write_bytes(der)
    pem = tmp_path / "leaf.pem"
    subprocess.run(["openssl", "x509", "-inform", "der", "-in", leaf, "-out", pem], check=True)
    chain = tmp_path / "untrusted.pem"
    pems = [ssl.DER_cert_to_PEM_cert(c) for c in untrusted]
    chain.write_text(tpm.ca_certificates[1].read_text() + "".join(pems))
    argv = ["openssl", "verify", "-attime", "1893456000", "-partial_chain", "-CAfile",
            str(tpm.ca_certificates[0]), "-untrusted", str(chain), str(pem)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _verifies(tpm: Swtpm, ek: EndorsementKey, *, swtpm_made: bool = True) -> None:
    """The EK certificate chains to swtpm's root CA (its issuer CA only an intermediate)."""
    root, issuer = _cas(tpm)
    info = verify_ek_certificate(
        ek.require_certificate(), [root], intermediates=[issuer], ek_public=ek.public
    )
    assert info.chain[1:] == (issuer, root)
    if swtpm_made:
        assert info.manufacturer_id == 0x00001014  # swtpm's "id:00001014"


# --- padding and the TCG header --------------------------------------------------------------


@pytest.mark.parametrize("pad", [b"\xff", b"\x00"], ids=["0xFF", "0x00"])
def test_padding_to_the_index_size_is_removed(tpm: Swtpm, pad: bytes) -> None:
    cert = original(tpm)
    _write(tpm, RSA_INDEX, cert + pad * (1600 - len(cert)))  # as ST33 chips store it
    ek = _rsa_ek(tpm)
    assert ek.certificate == cert and ek.nv_index == RSA_INDEX
    assert ek.certificate_repairs == (
        f"{1600 - len(cert)} bytes of 0x{pad[0]:02X} padding removed",
    )
    assert ek.certificate_error is None
    _verifies(tpm, ek)


def test_tcg_header_in_front_is_removed(tpm: Swtpm) -> None:
    cert = original(tpm)
    _write(tpm, RSA_INDEX, b"\x10\x01\x00" + len(cert).to_bytes(2, "big") + cert + b"\xff" * 40)
    ek = _rsa_ek(tpm)
    assert ek.certificate == cert
    assert ek.certificate_repairs[0] == "TCG stored-certificate header removed"
    _verifies(tpm, ek)
    assert "TCG stored-certificate header removed" in certificate_lines(ek)[0]


#: tcg-kp-EKCertificate, the key purpose an EK certificate names (TCG EK Credential Profile).
EK_KEY_PURPOSE = x509.ObjectIdentifier("2.23.133.8.1")


# --- non-strict DER ----------------------------------------------------------------------------


def _non_strict(tpm: Swtpm, ek_public: object, issuer_key: rsa.RSAPrivateKey) -> bytes:
    """An EK certificate whose subject is a two-attribute RDN with its SET OF out of DER order
    (as Nuvoton certificates have it), signed over exactly those non-canonical TBS bytes."""
    issuer = _cas(tpm)[1]
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "ek")
    rdn = x509.RelativeDistinguishedName(
        [cn, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nuvo")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([rdn]))
        .issuer_name(issuer.subject)
        .public_key(ek_public)  # type: ignore[arg-type]
        .serial_number(4242)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.ExtendedKeyUsage([EK_KEY_PURPOSE]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    tbs = cert.tbs_certificate_bytes
    # The two AttributeTypeAndValue SEQUENCEs of the RDN, in the DER (sorted) order pyca wrote.
    name = asn1_x509.Name.load(x509.Name([rdn]).public_bytes())
    first, second = (attribute.dump() for attribute in name.chosen[0])
    assert first < second and first + second in tbs
    swapped = tbs.replace(first + second, second + first)
    signature = issuer_key.sign(swapped, padding.PKCS1v15(), hashes.SHA256())
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption
    bits = b"\x00" + signature
    body = swapped + algorithm + b"\x03" + _length(len(bits)) + bits
    return b"\x30" + _length(len(body)) + body


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def test_non_strict_der_is_re_encoded_and_verified_over_the_tbs_as_signed(
    tpm: Swtpm, tmp_path: Path
) -> None:
    ek_key = x509.load_der_x509_certificate(original(tpm)).public_key()
    stored = _non_strict(tpm, ek_key, _issuer_key(tpm))
    with pytest.raises(
        ValueError, match="InvalidSetOrdering"
    ):  # the case: cryptography refuses the certificate as stored
        x509.load_der_x509_certificate(stored).subject  # noqa: B018
    _write(tpm, RSA_INDEX, stored + b"\xff" * 100)
    ek = _rsa_ek(tpm)
    assert ek.certificate == stored  # the bytes the CA signed, not the re-encoding
    assert ek.certificate_repairs[0] == "100 bytes of 0xFF padding removed"
    assert ek.certificate_repairs[1].startswith("re-encoded as strict DER")
    _verifies(tpm, ek, swtpm_made=False)
    assert _openssl_verifies(tpm, tmp_path, stored)
    # A control that shows the check can fail: one bit of the signed subject changed.
    tampered = stored.replace(b"nuvo", b"nuvp")
    assert not _openssl_verifies(tpm, tmp_path, tampered)
    with raises_check(Check.CERTIFICATE):
        verify_ek_certificate(tampered, _cas(tpm), ek_public=ek.public)


# --- the chain indices ---------------------------------------------------------------------------


def test_chain_index_gives_the_intermediate(tpm: Swtpm, tmp_path: Path) -> None:
    issuer, issuer_key = _cas(tpm)[1], _issuer_key(tpm)
    middle_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    middle_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EK intermediate CA")])
    middle = (
        x509.CertificateBuilder()
        .subject_name(middle_name)
        .issuer_name(issuer.subject)
        .public_key(middle_key.public_key())
        .serial_number(77)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    ek_key = x509.load_der_x509_certificate(original(tpm)).public_key()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ek")]))
        .issuer_name(middle_name)
        .public_key(ek_key)  # type: ignore[arg-type]
        .serial_number(78)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.ExtendedKeyUsage([EK_KEY_PURPOSE]), critical=False)
        .sign(middle_key, hashes.SHA256())
    )
    der = serialization.Encoding.DER
    _write(tpm, RSA_INDEX, leaf.public_bytes(der))
    _write(tpm, CHAIN_INDEX, middle.public_bytes(der) + b"\xff" * 64)
    ek = _rsa_ek(tpm)
    assert ek.chain == (middle.public_bytes(der),) and ek.chain_errors == ()
    info = verify_ek_certificate(ek.require_certificate(), _cas(tpm), intermediates=ek.chain)
    assert [c.subject for c in info.chain] == [leaf.subject, middle_name, issuer.subject]
    with raises_check(Check.CERTIFICATE):  # without the chain index no CA signed the leaf
        verify_ek_certificate(ek.require_certificate(), _cas(tpm))
    assert "chain certificate 1 from NV" in "\n".join(certificate_lines(ek))
    assert endorsement_key_from_json(endorsement_key_to_json(ek)) == ek


# --- what cannot be read is said, with the reason --------------------------------------------


def test_garbage_is_a_typed_error_and_a_line(
    tpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tpm, RSA_INDEX, b"\x30\x82\x03\xf0" + os.urandom(60))  # a truncated certificate
    _write(tpm, CHAIN_INDEX, b"not a certificate")
    ek = _rsa_ek(tpm)
    assert ek.certificate is None and ek.nv_index == RSA_INDEX
    assert ek.certificate_error is not None and "NV 0x01c00002 (64 bytes)" in ek.certificate_error
    assert "truncated" in ek.certificate_error
    assert ek.chain == () and len(ek.chain_errors) == 1 and "0x01c00100" in ek.chain_errors[0]
    with raises_check(Check.CERTIFICATE) as caught:
        ek.require_certificate()
    assert "NV 0x01c00002" in str(caught.value)
    base = ["--provider", "tpm", "--tcti", tpm.tcti, "--store", str(tmp_path / "s")]
    assert main([*base, "attest", "ek", "--cert"]) == 0
    out = capsys.readouterr().out
    assert "# certificate unreadable: NV 0x01c00002 (64 bytes)" in out
    assert "# chain index unreadable: NV 0x01c00100" in out
    assert out.count("-----BEGIN CERTIFICATE-----") == 1  # the ECC EK's, untouched


def test_the_original_certificate_reads_clean(tpm: Swtpm) -> None:
    ek = _rsa_ek(tpm)
    assert ek.certificate == original(tpm) and ek.certificate_repairs == ()
    assert certificate_lines(ek) == [f"certificate at NV 0x{RSA_INDEX:08x} (clean DER)"]
    _verifies(tpm, ek)


# --- the parser alone (no TPM) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no DER SEQUENCE"),
        (b"\xff" * 32, "no DER SEQUENCE"),
        (b"\x30\x05abc", "truncated"),
        (b"\x30\x03abcXYZ", "3 bytes after the certificate are not padding"),
        (b"\x10\x01\x00\x00\x09\x30\x03abc", "the TCG header says 9 bytes"),
        (b"\x30\x89" + b"\x00" * 9, "not readable"),
    ],
)
def test_nv_contents_that_are_no_certificate(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidData, match=reason):
        nv_certificates(data)


def test_several_certificates_in_one_chain_index() -> None:
    one, two = b"\x30\x03abc", b"\x30\x02de"
    found = nv_certificates(one + two + b"\x00" * 5, many=True)
    assert [c.der for c in found] == [one, two]
    assert found[0].repairs == ("5 bytes of 0x00 padding removed",)


def test_require_certificate_without_one() -> None:
    ek = EndorsementKey(KeyType.RSA2048, b"", None, None, None, True)
    with pytest.raises(AttestationCheckFailed, match="no certificate in NV"):
        ek.require_certificate()


def test_ecc_ek_index_padded_too(own_tpm: Swtpm) -> None:
    """swtpm's ECC EK (P-384) has its certificate in the high range, 0x01C00016."""
    index = 0x01C00016
    cert = _tools(own_tpm, "tpm2_nvread", "-C", "o", hex(index), capture=True)
    try:
        _write(own_tpm, index, cert + b"\xff" * (1600 - len(cert)))
        with open_provider("tpm", tcti=own_tpm.tcti) as provider:
            ek = next(e for e in provider.endorsement_keys() if e.key_type is KeyType.ECC384)
        assert ek.certificate == cert and ek.nv_index == index
        assert ek.certificate_repairs == (f"{1600 - len(cert)} bytes of 0xFF padding removed",)
        _verifies(own_tpm, ek)
    finally:
        _write(own_tpm, index, cert)


def test_enrollment_through_a_non_strict_certificate(tpm: Swtpm) -> None:
    """The whole verifier path: an AK enrolled against an EK whose certificate is stored as
    non-strict DER, chaining to swtpm's root with the issuer CA from a chain index."""
    root, issuer = _cas(tpm)
    ek_key = x509.load_der_x509_certificate(original(tpm)).public_key()
    _write(tpm, RSA_INDEX, _non_strict(tpm, ek_key, _issuer_key(tpm)))
    _write(tpm, CHAIN_INDEX, issuer.public_bytes(serialization.Encoding.DER))
    policy = TrustPolicy(ek_ca_certificates=[root])
    with open_provider("tpm", tcti=tpm.tcti) as provider:
        ek = next(e for e in provider.endorsement_keys() if e.key_type is KeyType.RSA2048)
        ak = provider.create_key(KeyType.RSA2048, KeyUsage.ATTEST)
        enrollment = AKEnrollment(
            ak.tpm_public,  # type: ignore[attr-defined]
            ek.public,
            ek.require_certificate(),
            policy=policy,
            intermediates=ek.chain,
        )
        answer = provider.activate_credential(
            ak, ek, enrollment.credential_blob, enrollment.encrypted_secret
        )
    assert enrollment.finish(answer).hardware_backed


def test_ek_json_of_before_the_new_members_still_reads() -> None:
    repairs = ("5 bytes of 0xFF padding removed",)
    ek = EndorsementKey(KeyType.RSA2048, b"\x00\x01", b"\x30\x00", RSA_INDEX, None, True,
                        repairs, None, (b"\x30\x00",), ("NV x",))  # fmt: skip
    assert endorsement_key_from_json(endorsement_key_to_json(ek)) == ek
    old = json.loads(endorsement_key_to_json(ek))
    for name in ("certificate_repairs", "certificate_error", "chain", "chain_errors"):
        del old[name]
    assert endorsement_key_from_json(old) == EndorsementKey(
        KeyType.RSA2048, b"\x00\x01", b"\x30\x00", RSA_INDEX, None, True
    )
    with pytest.raises(InvalidData, match="'chain_errors' is not a list of strings"):
        endorsement_key_from_json({**json.loads(endorsement_key_to_json(ek)), "chain_errors": 3})


def test_the_demo_says_what_it_read_and_why_it_cannot(
    tpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's EK step names the repair it made, and fails with the index's reason, not as
    a missing certificate, when the index cannot be read."""
    base = ["--provider", "tpm", "--tcti", tpm.tcti]
    ca = [arg for path in tpm.ca_certificates for arg in ("--ek-ca", str(path))]
    _write(tpm, RSA_INDEX, original(tpm) + b"\xff" * (1600 - len(original(tpm))))
    assert main([*base, "--store", str(tmp_path / "a"), "demo", *ca]) == 0
    step = next(line for line in capsys.readouterr().out.splitlines() if "[ 3/" in line)
    assert "PASSED" in step and "certificate at NV 0x01c00002" in step and "0xFF" in step, step
    _write(tpm, RSA_INDEX, b"\x30\x82\x03\xf0" + os.urandom(60))
    assert main([*base, "--store", str(tmp_path / "b"), "demo", *ca]) == 1
    captured = capsys.readouterr()
    assert "NV 0x01c00002 (64 bytes)" in captured.out + captured.err
