"""CA certificates as TPM makers publish them, and the bundle entra_keys ships.

Every CA file of the real vectors loads through the library or is reported by name; certificates
that are not DER (Nuvoton's SET OF out of order, Intel's OnDie root with a NULL ECDSA parameter,
long-form and indefinite lengths) are read through a DER reading copy while signatures are
checked over the bytes as signed; a certificate that cannot be read never makes the rest of a
bundle or a policy unusable; the shipped bundle matches its manifest and makes real chips' EK
certificates (Nuvoton NPCT75x, STMicro ECC) chain out of the box.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from entra_keys.attestation import (
    TrustPolicy,
    load_ca_bundle,
    tpm_vendor_cas,
    verify_ek_certificate,
)
from entra_keys.attestation.cabundle import BUNDLE_USES, MAX_BUNDLE_SIZE
from entra_keys.attestation.ekcert import read_certificate
from entra_keys.errors import Check, InvalidData
from entra_keys.tcg.nvcert import (
    MAX_DER_DEPTH,
    TLV,
    der_encode,
    read_tlv,
    strict_der,
    verify_signed_by,
)

from .helpers import raises_check

pytestmark = [
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Attribute.s length must be:UserWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(__file__).parent / "vectors" / "realworld"
#: Every CA certificate file of the real vectors (PEM bundles, DER files).
CA_FILES = sorted(
    [
        *(REAL / "tpm-ca-certificates").glob("*.pem"),
        *(REAL / "go-tpm-tools" / "server" / "ca-certs").iterdir(),
        *(REAL / "keylime" / "test_certs").glob("*.der"),
    ]
)
NPCT75X = (REAL / "keylime" / "test_certs" / "nuvoton_ek_npct75x_malformed.der").read_bytes()
ST_ECC_EK = (REAL / "keylime" / "test_certs" / "st_ecc_ek.der").read_bytes()
ROOTS = (REAL / "tpm-ca-certificates" / "tpm-ca-certificates.pem").read_bytes()


def _bundle_certificate(subject_cn: str) -> Any:
    certificates, _ = load_ca_bundle(ROOTS, "tpm-ca-certificates.pem")
    return next(
        c for c in certificates
        if c.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == subject_cn
    )  # fmt: skip


# --- every CA file loads, or is reported by name ---------------------------------------------


@pytest.mark.parametrize("path", CA_FILES, ids=[p.name for p in CA_FILES])
def test_every_ca_file_loads_or_is_reported_by_name(path: Path) -> None:
    data = path.read_bytes()
    certificates, problems = load_ca_bundle(data, path.name)
    blocks = data.count(b"-----BEGIN CERTIFICATE-----") or 1
    assert len(certificates) + len(problems) == blocks
    for problem in problems:  # none here, but each would name its file, place and reason
        assert str(problem).startswith(f"{path.name}: certificate {problem.number}")
    assert not problems, [str(p) for p in problems]
    for certificate in certificates:  # each readable by cryptography, names and extensions
        assert certificate.certificate.subject is not None
        list(certificate.certificate.extensions)


def test_the_non_der_roots_are_read_through_a_reading_copy_signed_as_published() -> None:
    certificates, _ = load_ca_bundle(ROOTS, "tpm-ca-certificates.pem")
    repaired = {c.name: c.repairs for c in certificates if c.repairs}
    nuvoton = [name for name in repaired if "Nuvoton TPM Root CA" in name]
    assert len(nuvoton) == 4  # 1110, 1111, 2111, 2112
    for name in nuvoton:
        assert "SET OF members put in DER order" in repaired[name]
        assert repaired[name][0].startswith("re-encoded as strict DER (")
    ondie = next(c for c in certificates if "OnDie CA Root" in c.name)
    assert any("NULL parameter left out (RFC 5758)" in r for r in ondie.repairs)
    for certificate in certificates:
        if (
            certificate.repairs
            and certificate.certificate.issuer == certificate.certificate.subject
        ):
            verify_signed_by(certificate.der, certificate.certificate)  # the self-signature
            # ... holds over the bytes as published, not over the reading copy
            with pytest.raises(Exception):  # noqa: B017, PT011 - pyca's InvalidSignature or so
                certificate.certificate.verify_directly_issued_by(certificate.certificate)


def test_one_unreadable_certificate_leaves_the_rest_of_a_bundle_usable() -> None:
    good = (REAL / "tpm-ca-certificates" / "microsoft_tpm_root_ca_2014.pem").read_bytes()
    broken = good.replace(b"MII", b"MIJ", 1)  # its DER no longer a certificate
    garbage = (
        b"# Certificate: Not A CA\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    key = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    bundle = good + broken + garbage + key + bad_base64 + good
    certificates, problems = load_ca_bundle(bundle, "vendors.pem")
    assert len(certificates) == 2 and len(problems) == 4
    assert [p.number for p in problems] == [2, 3, 4, 5]
    assert problems[0].label is None  # nothing in front of the second copy names it
    assert problems[1].label == "Not A CA" and "not an X.509 certificate" in problems[1].reason
    assert "PUBLIC KEY block" in problems[2].reason and "base64" in problems[3].reason
    assert str(problems[1]).startswith("vendors.pem: certificate 3 (line ")
    # The same bundle given to a policy: the readable CAs are trusted, the others said.
    policy = TrustPolicy(ek_ca_certificates=[good, broken, good])
    assert len(policy.ek_ca_certificates()) == 2
    assert len(policy.certificate_problems) == 1
    assert policy.certificate_problems[0].startswith("ek_ca_certificates[1]")
    # DER certificates one after the other, with trailing garbage reported.
    der = read_certificate(good).der
    certificates, problems = load_ca_bundle(der + der + b"\x05\x00", "two.der")
    assert len(certificates) == 2 and len(problems) == 1 and "offset" in problems[0].reason
    with pytest.raises(InvalidData, match="holds no certificate"):
        load_ca_bundle(b"", "empty")
    with pytest.raises(InvalidData, match="over the limit"):
        load_ca_bundle(b"\x30" * (16 * 1024 * 1024 + 1), "huge")


# --- the generic re-encoder ------------------------------------------------------------------


def _tlv(tag: int, body: bytes, *, long: bool = False) -> bytes:
    if long:  # a length in long form where the short form fits: BER, not DER
        return bytes([tag, 0x82]) + len(body).to_bytes(2, "big") + body
    size = len(body)
    head = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + head + body


def test_der_is_its_own_encoding_and_ber_becomes_der() -> None:
    for certificate, _ in zip(load_ca_bundle(ROOTS)[0], range(10), strict=False):
        if not certificate.repairs:
            assert der_encode(read_tlv(certificate.der)) == certificate.der
    low = _tlv(0x30, _tlv(0x02, b"\x01"))  # 30 03 ...: sorts before 30 0a ...
    high = _tlv(0x30, _tlv(0x06, b"\x55\x04\x03") + _tlv(0x0C, b"b"))
    fixes: set[str] = set()
    assert der_encode(read_tlv(_tlv(0x31, high + low)), fixes) == _tlv(0x31, low + high)
    assert fixes == {"SET OF members put in DER order"}
    fixes.clear()
    assert (
        der_encode(read_tlv(_tlv(0x30, _tlv(0x04, b"x"), long=True)), fixes) == b"\x30\x03\x04\x01x"
    )
    assert fixes == {"lengths in minimal definite form"}
    indefinite = b"\x30\x80" + _tlv(0x02, b"\x05") + b"\x00\x00"
    assert der_encode(read_tlv(indefinite)) == b"\x30\x03\x02\x01\x05"
    constructed = b"\x24\x80" + _tlv(0x04, b"ab") + _tlv(0x04, b"c") + b"\x00\x00"
    assert der_encode(read_tlv(constructed)) == _tlv(0x04, b"abc")
    assert der_encode(read_tlv(b"\x01\x01\x01")) == b"\x01\x01\xff"  # BOOLEAN TRUE
    assert der_encode(read_tlv(b"\x02\x02\x00\x05")) == b"\x02\x01\x05"  # a minimal INTEGER
    assert der_encode(read_tlv(b"\x02\x02\x00\x85")) == b"\x02\x02\x00\x85"  # kept: it is
    # Values stay opaque: a PrintableString where UTF8String is usual is kept as it is.
    printable = _tlv(0x13, b"NPCT75x")
    assert der_encode(read_tlv(printable)) == printable


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x30\x05\x02\x01", "truncated"),
        (b"\x30\x00\x00", "trailing"),
        (b"\x04\x80", "has no length"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "not readable"),
        (b"\x30\x80\x02\x01\x05", "truncated"),
        (b"\x1f\x81\x81\x81\x81\x81\x81\x01\x00", "tag"),
        (b"\x30\x80" * (MAX_DER_DEPTH + 2), "deeper"),
    ],
)
def test_malformed_ber_is_a_typed_refusal(data: bytes, match: str) -> None:
    with pytest.raises(InvalidData, match=match):
        read_tlv(data)


@given(st.binary(max_size=300))
def test_fuzz_the_ber_reader_raises_only_invalid_data(data: bytes) -> None:
    try:
        element = read_tlv(data)
    except InvalidData:
        return
    again = der_encode(element)
    assert der_encode(read_tlv(again)) == again  # DER is a fixed point


def _der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _unknown_key_certificate() -> bytes:
    """A certificate whose key's algorithm no one offers (an OID of its own), signed by a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")]))
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der = _der_of(cert)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
    assert ec_public_key in der
    return der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"), 1)  # unassigned


def test_fuzz_strict_der_refuses_a_key_of_an_unknown_algorithm_as_invalid_data() -> None:
    """issue 20: strict_der let cryptography's UnsupportedAlgorithm out, so a TPM whose EK
    certificate has a key of an unknown algorithm crashed the provider's NV read."""
    with pytest.raises(InvalidData, match="algorithm not offered"):
        strict_der(_unknown_key_certificate())
    with raises_check(Check.CERTIFICATE, match="algorithm not offered"):
        verify_ek_certificate(_unknown_key_certificate(), [ROOTS])


@given(data=st.binary(min_size=1, max_size=64), at=st.integers(min_value=0, max_value=4000))
def test_fuzz_strict_der_on_damaged_certificates_raises_only_invalid_data(
    data: bytes, at: int
) -> None:
    for original in (NPCT75X, ST_ECC_EK, _unknown_key_certificate()):
        where = at % len(original)
        damaged = original[:where] + data + original[where + len(data) :]
        try:
            readable, _ = strict_der(damaged)
        except InvalidData:
            continue
        x509.load_der_x509_certificate(readable).public_key()  # what it gives, pyca reads


# --- real EK certificates chain --------------------------------------------------------------


def test_the_nuvoton_npct75x_ek_certificate_chains_to_its_root() -> None:
    root = _bundle_certificate("Nuvoton TPM Root CA 2111")
    when = datetime(2024, 1, 1, tzinfo=UTC)
    info = verify_ek_certificate(NPCT75X, [root], at=when)
    assert (info.vendor, info.model, info.version) == ("Nuvoton", "NPCT75x", "id:00070002")
    assert info.tpm_specification == ("2.0", 0, 138) and info.der == NPCT75X
    assert info.chain[1] == root.certificate and "SET OF members put in DER order" in info.repairs
    # The signature holds over the bytes as signed: one changed byte of the TBS is refused.
    at = NPCT75X.find(b"NPCT75x")
    tampered = NPCT75X[:at] + b"NPCT76x" + NPCT75X[at + 7 :]
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        verify_ek_certificate(tampered, [root], at=when)
    # Another Nuvoton root, of the same name's family, did not sign it.
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        verify_ek_certificate(NPCT75X, [_bundle_certificate("Nuvoton TPM Root CA 2112")], at=when)


def test_real_ek_certificates_chain_with_the_shipped_bundle() -> None:
    policy = TrustPolicy.with_tpm_vendor_cas()
    assert policy.certificate_problems == ()
    nuvoton = verify_ek_certificate(NPCT75X, policy=policy)
    assert "Nuvoton TPM Root CA 2111" in nuvoton.chain[-1].subject.rfc4514_string()
    st_ecc = verify_ek_certificate(ST_ECC_EK, policy=policy)
    assert (st_ecc.vendor, st_ecc.model) == ("STMicroelectronics", "ST33HTPHAHB4")
    assert "STM TPM ECC Intermediate CA 01" in st_ecc.chain[1].subject.rfc4514_string()
    # The default policy trusts no EK CA at all.
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):
        verify_ek_certificate(ST_ECC_EK, policy=TrustPolicy())


def test_an_issuer_written_in_other_string_types_still_chains() -> None:
    """RFC 5280 §7.1 matches names whatever string types they are written in (ST's ECC
    intermediates name their root in UTF8String, the root itself in PrintableString);
    cryptography's verifier compares bytes, so such a chain is walked here."""
    now = datetime.now(UTC)
    root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))

    def name(cn: str, kind: Any) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _type=kind)])

    def make(subject: x509.Name, issuer: x509.Name, key: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:
            ek = x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.1")])
            builder = builder.add_extension(ek, critical=False)
        return builder.sign(signer, hashes.SHA256())

    root = make(name("Root", _ASN1Type.PrintableString), name("Root", _ASN1Type.PrintableString),
                root_key, root_key, True)  # fmt: skip
    middle = make(name("Mid", _ASN1Type.UTF8String), name("Root", _ASN1Type.UTF8String),
                  middle_key, root_key, True)  # fmt: skip
    leaf = make(x509.Name([]), middle.subject, leaf_key, middle_key, False)
    info = verify_ek_certificate(_der_of(leaf), [root], intermediates=[middle])
    assert len(info.chain) == 3
    forged = make(name("Mid", _ASN1Type.UTF8String), name("Root", _ASN1Type.UTF8String),
                  middle_key, middle_key, True)  # fmt: skip
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        verify_ek_certificate(_der_of(leaf), [root], intermediates=[forged])


# --- the shipped bundle --------------------------------------------------------------------------


def test_the_shipped_bundle_matches_its_manifest() -> None:
    bundle = tpm_vendor_cas()
    folder = ROOT / "src" / "entra_keys" / "attestation" / "cas"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(bundle.entries) == len(manifest["certificates"]) >= 190
    for entry in bundle.entries:
        assert set(entry.uses) <= set(BUNDLE_USES) and entry.uses
        assert {"repository", "path", "commit", "licence"} <= set(entry.source)
        assert entry.source["licence"] in {"BSD-3-Clause", "Apache-2.0"}
    subjects = {e.subject for e in bundle.entries if "ak-root" in e.uses}
    assert any("Microsoft TPM Root Certificate Authority 2014" in s for s in subjects)
    assert any("Google" in s for s in subjects)
    everything = [*bundle.ek_roots, *bundle.ek_intermediates, *bundle.ak_roots]
    assert {hashlib.sha256(c.der).hexdigest() for c in everything} <= {
        e.sha256 for e in bundle.entries
    }
    assert (folder / "NOTICE").is_file()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ca_bundle.py"), "check"],
        capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 problems" in done.stdout


def test_the_bundle_script_catches_a_changed_certificate_and_rebuilds(tmp_path: Path) -> None:
    folder = ROOT / "src" / "entra_keys" / "attestation" / "cas"
    copy = tmp_path / "cas"
    shutil.copytree(folder, copy)
    pem = (copy / "tpm-cas.pem").read_text()
    first = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", first) + len("-----END CERTIFICATE-----\n")
    (copy / "tpm-cas.pem").write_text(pem[:first] + pem[end:])  # one certificate taken out
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    script = [sys.executable, str(ROOT / "scripts" / "ca_bundle.py")]
    done = subprocess.run([*script, "check", "--out", str(copy)], capture_output=True,
                          text=True, check=False, env=env)  # fmt: skip
    assert done.returncode == 1 and "in the manifest, not in the files" in done.stderr
    # Rebuilt from a bundle of its own: a manifest with fingerprints, and the check passes.
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "roots.pem").write_bytes(ROOTS)
    sources = tmp_path / "sources.json"
    source = {"repository": "r", "path": "p", "commit": "c" * 40, "licence": "BSD-3-Clause"}
    sources.write_text(json.dumps(
        {"inputs": [{"file": "roots.pem", "purposes": ["ek"], "source": source}]}
    ))  # fmt: skip
    out = tmp_path / "built"
    build = [*script, "build", str(sources), "--base", str(inputs), "--out", str(out)]
    built = subprocess.run(build, capture_output=True, text=True, check=False, env=env)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["certificates"]) == ROOTS.count(b"BEGIN CERTIFICATE")
    pem_blocks = (out / "tpm-cas.pem").read_text().count("BEGIN CERTIFICATE")
    assert pem_blocks == len(manifest["certificates"])
    shipped, _ = load_ca_bundle((out / "tpm-cas.pem").read_bytes())
    assert [hashlib.sha256(c.der).hexdigest() for c in shipped] == [
        e["sha256"] for e in manifest["certificates"]
    ]
    checked = subprocess.run([*script, "check", "--out", str(out)], capture_output=True,
                             text=True, check=False, env=env)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_a_policy_made_from_the_bundle_pickles_for_a_pool() -> None:
    import pickle

    policy = TrustPolicy.with_tpm_vendor_cas(allow_sha1=True)
    again = pickle.loads(pickle.dumps(policy))
    assert len(again.ek_ca_certificates()) == len(policy.ek_ca_certificates())
    assert verify_ek_certificate(NPCT75X, policy=again).model == "NPCT75x"


def test_tlv_elements_keep_what_they_were_read_from() -> None:
    element = read_tlv(b"\x30\x03\x02\x01\x05")
    assert element == TLV(b"\x30", b"", (TLV(b"\x02", b"\x05", (), b"\x02\x01\x05"),),
                          b"\x30\x03\x02\x01\x05")  # fmt: skip
    assert element.constructed and element.tag == 0x30


def test_pkcs7_bundles_and_other_pem_labels_load() -> None:
    """A .p7b "certs-only" bundle (DER or PEM), as some makers publish theirs, keeps each
    certificate's bytes as published (Nuvoton's included); older PEM labels load too."""
    nuvoton = [c.der for c in load_ca_bundle(ROOTS)[0] if c.repairs]
    assert len(nuvoton) == 5
    oid = bytes.fromhex("06092a864886f70d010702")  # signedData
    data = bytes.fromhex("06092a864886f70d010701")  # data
    signed = _tlv(0x30, b"\x02\x01\x01" + b"\x31\x00" + _tlv(0x30, data)
                  + _tlv(0xA0, b"".join(nuvoton)) + b"\x31\x00")  # fmt: skip
    p7b = _tlv(0x30, oid + _tlv(0xA0, signed))
    certificates, problems = load_ca_bundle(p7b, "nuvoton.p7b")
    assert not problems and [c.der for c in certificates] == nuvoton
    assert all(c.repairs for c in certificates)
    pem = ssl_pem(p7b, "PKCS7")
    assert [c.der for c in load_ca_bundle(pem, "nuvoton.p7b.pem")[0]] == nuvoton
    one = nuvoton[0]
    assert load_ca_bundle(ssl_pem(one, "X509 CERTIFICATE"))[0][0].der == one
    trusted = one + _tlv(0x30, _tlv(0x06, b"\x2b\x06\x01\x05\x05\x07\x03\x01"))  # + its trust
    assert load_ca_bundle(ssl_pem(trusted, "TRUSTED CERTIFICATE"))[0][0].der == one


def ssl_pem(der: bytes, label: str) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


# --- BER a CA may write, signed as written -----------------------------------------------------


def _ber(node: TLV, *, long: frozenset[int] = frozenset(), indefinite: frozenset[int] = frozenset(),
         at: list[int] | None = None) -> bytes:  # fmt: skip
    """The element written again with its values as they are, the n-th elements (in document
    order) listed in ``long`` with a long-form length and in ``indefinite`` with none."""
    at = [0] if at is None else at
    n = at[0]
    at[0] += 1
    body = (
        node.content
        if not node.constructed
        else b"".join(
            _ber(child, long=long, indefinite=indefinite, at=at) for child in node.children
        )
    )
    if n in indefinite and node.constructed:
        return node.identifier + b"\x80" + body + b"\x00\x00"
    if n in long or len(body) >= 0x80:
        return node.identifier + b"\x82" + len(body).to_bytes(2, "big") + body
    return node.identifier + bytes([len(body)]) + body


def _swap(node: TLV, old: bytes, new: TLV) -> TLV:
    """The tree with the element whose DER is ``old`` replaced by ``new``."""
    if node.raw == old:
        return new
    if not node.constructed:
        return node
    return TLV(node.identifier, b"", tuple(_swap(c, old, new) for c in node.children))


CA_KEY = ec.generate_private_key(ec.SECP256R1())
_NOW = datetime.now(UTC)
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BER-writing TPM maker CA")])
BER_CA = (
    x509.CertificateBuilder().subject_name(_CA_NAME).issuer_name(_CA_NAME)
    .public_key(CA_KEY.public_key()).serial_number(1)
    .not_valid_before(_NOW - timedelta(days=1)).not_valid_after(_NOW + timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(CA_KEY, hashes.SHA256())
)  # fmt: skip
EK_KEY = ec.generate_private_key(ec.SECP256R1())
_PRINTABLE = _ASN1Type.PrintableString  # as Nuvoton writes the TPM's names
TPM_NAMES = x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:4E544300", _type=_PRINTABLE),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "NPCT75x", _type=_PRINTABLE),
    x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00070002", _type=_PRINTABLE),
]))])  # fmt: skip
EK_LEAF = (
    x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(_CA_NAME)
    .public_key(EK_KEY.public_key()).serial_number(0x1234)
    .not_valid_before(_NOW - timedelta(hours=1)).not_valid_after(_NOW + timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.1")]), critical=False)
    .add_extension(TPM_NAMES, critical=True)
    .sign(CA_KEY, hashes.SHA256())
)  # fmt: skip


def _signed_as_written(tbs: bytes) -> bytes:
    """A certificate of these TBS bytes, signed by the CA over exactly them."""
    algorithm = bytes.fromhex("300a06082a8648ce3d040302")  # ecdsa-with-SHA256
    signature = CA_KEY.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def _tbs_with(change: str) -> bytes:
    tree = read_tlv(EK_LEAF.tbs_certificate_bytes)
    critical_true = bytes.fromhex("0101ff")
    if change == "critical FALSE written out":
        eku_oid = bytes.fromhex("0603551d25")  # extKeyUsage
        eku = next(e for e in _walk_tlv(tree) if e.children and e.children[0].raw == eku_oid)
        oid, value = eku.children
        new = TLV(b"\x30", b"", (oid, TLV(b"\x01", b"\x00"), value))
        return _ber(_swap(tree, eku.raw, new))
    if change == "cA FALSE written out":
        old = bytes.fromhex("04023000")
        new = TLV(b"\x04", bytes.fromhex("3003010100"))
        constraints = next(e for e in _walk_tlv(tree) if e.raw == old)
        return _ber(_swap(tree, constraints.raw, new))
    if change == "TRUE written 0x01":
        true = next(e for e in _walk_tlv(tree) if e.raw == critical_true)
        return _ber(_swap(tree, true.raw, TLV(b"\x01", b"\x01")))
    if change == "serial with a leading zero":
        serial = tree.children[1]
        return _ber(_swap(tree, serial.raw, TLV(b"\x02", b"\x00" + serial.content)))
    if change == "long-form lengths":
        return _ber(tree, long=frozenset({0, 3, 5}))
    if change == "indefinite lengths":
        return _ber(tree, indefinite=frozenset({0, 5}))
    raise AssertionError(change)


def _walk_tlv(node: TLV) -> Any:
    yield node
    for child in node.children:
        yield from _walk_tlv(child)


@pytest.mark.parametrize(
    "change",
    ["critical FALSE written out", "cA FALSE written out", "TRUE written 0x01",
     "serial with a leading zero", "long-form lengths", "indefinite lengths"],
)  # fmt: skip
def test_ber_a_ca_signed_is_read_and_its_signature_checked_as_written(change: str) -> None:
    tbs = _tbs_with(change)
    assert tbs != EK_LEAF.tbs_certificate_bytes
    stored = _signed_as_written(tbs)
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography refuses it as stored
        x509.load_der_x509_certificate(stored).extensions  # noqa: B018
    info = verify_ek_certificate(stored, [BER_CA], ek_public=EK_KEY.public_key())
    assert info.der == stored and info.repairs[0].startswith("re-encoded as strict DER")
    assert (info.vendor, info.model) == ("Nuvoton", "NPCT75x")  # PrintableString names read
    # Signed as written: the same certificate with one signed byte changed is refused, even
    # where its reading copy would be the same.
    at = stored.find(b"NPCT75x")
    tampered = stored[:at] + b"NPCT76x" + stored[at + 7 :]
    with raises_check(Check.CERTIFICATE, match="no trusted CA signed"):
        verify_ek_certificate(tampered, [BER_CA])


def test_a_bundle_is_read_in_linear_time() -> None:
    """A bundle is attacker-sized up to MAX_BUNDLE_SIZE: PEM headers with no END line are found
    in one pass (each once, not a scan to the end from every header), and many small blocks
    count their lines once: 4x the blocks take nowhere near the 16x a quadratic reading would."""
    unit = b"-----BEGIN CERTIFICATE-----\n"
    started = time.perf_counter()
    with pytest.raises(InvalidData, match="holds no certificate"):
        load_ca_bundle(unit * (MAX_BUNDLE_SIZE // len(unit)), "headers")
    assert time.perf_counter() - started < 5

    def seconds(count: int) -> float:
        data = b"-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n" * count
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            _, problems = load_ca_bundle(data, "blocks")
            best = min(best, time.perf_counter() - started)
            assert len(problems) == count and problems[-1].line == 2 * count - 1
        return best

    assert seconds(40_000) < 10 * seconds(10_000)
