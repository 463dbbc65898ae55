"""EK certificates that chips do not store: the URLs Intel and AMD serve them at, and fetching
one from a local HTTP server (127.0.0.1, an ephemeral port) that serves, as Intel's and AMD's
services do, a certificate the test swtpm's CA made for the swtpm's EK. Attacks: a certificate
for another key, one that does not chain, oversized and malformed answers; each a typed refusal.
No network: the caller's fetch function is pointed at the local server.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID

from entra_keys import EndorsementKey, Provider
from entra_keys._json import b64url_encode
from entra_keys.attestation import (
    TrustPolicy,
    ek_certificate_url,
    fetch_ek_certificate,
)
from entra_keys.attestation.ekurl import AMD_EK_SERVICE, INTEL_EK_SERVICE
from entra_keys.errors import Check
from entra_keys.testing.swtpm import Swtpm

from .helpers import raises_check, transient_handles

REAL = Path(__file__).parent / "vectors" / "realworld" / "go-attestation"
INTEL, AMD = 0x494E5443, 0x414D4400


# --- the URLs (go-attestation's check values) ------------------------------------------------


def test_the_intel_and_amd_urls_are_the_ones_their_services_use() -> None:
    intel = load_pem_public_key((REAL / "intel_ptt_ek_pub.pem").read_bytes())
    amd = load_pem_public_key((REAL / "amd_ftpm_ek_pub.pem").read_bytes())
    assert ek_certificate_url(intel, "INTC") == (  # type: ignore[arg-type]
        "https://ekop.intel.com/ekcertservice/WVEG2rRwkQ7m3RpXlUphgo6Y2HLxl18h6ZZkkOAdnBE%3D"
    )
    assert ek_certificate_url(amd, AMD) == (  # type: ignore[arg-type]
        "https://ftpm.amd.com/pki/aia/D027B3CE6A9B6B56846D2B9935884A88"
    )
    assert ek_certificate_url(intel, INTEL) == ek_certificate_url(intel, " intc ")  # type: ignore[arg-type]


def test_ecc_eks_have_urls_too_and_other_makers_none() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert ek_certificate_url(key, "INTC").startswith(INTEL_EK_SERVICE)
    assert len(ek_certificate_url(key, "AMD")) == len(AMD_EK_SERVICE) + 32
    with raises_check(Check.CERTIFICATE, match="no EK certificate service is known"):
        ek_certificate_url(key, 0x49465800)  # Infineon stores its EK certificates in NV
    odd = rsa.generate_private_key(3, 2048).public_key()
    with raises_check(Check.CERTIFICATE, match="exponent 65537"):
        ek_certificate_url(odd, "INTC")
    with raises_check(Check.CERTIFICATE, match="TPMT_PUBLIC or a public key"):
        ek_certificate_url("not a key", "AMD")  # type: ignore[arg-type]


# --- a local stand-in for the makers' services --------------------------------------------------


class Service:
    """An HTTP server on 127.0.0.1 that answers each path with what ``answers`` holds for it."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.asked: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # (http.server's name)
                service.asked.append(self.path)
                body = service.answers.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fetch(self, url: str) -> bytes:
        """The caller's fetch function: the maker's URL, asked of this server instead."""
        path = urllib.parse.urlsplit(url).path
        with urllib.request.urlopen(self.base + path, timeout=10) as answer:
            data: bytes = answer.read()
            return data

    def serve(self, url: str, body: bytes) -> None:
        self.answers[urllib.parse.urlsplit(url).path] = body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    yield server
    server.close()


@pytest.fixture(scope="module")
def eks(swtpm: Swtpm) -> dict[str, EndorsementKey]:
    """The swtpm's EKs, "rsa" (RSA-2048) and "ecc" (P-384), with their certificates (made by
    its CA), read once."""
    from entra_keys import open_provider

    provider: Provider = open_provider("tpm", tcti=swtpm.tcti)
    try:
        found = provider.endorsement_keys()
    finally:
        provider.close()
    assert transient_handles(swtpm.tcti) == []  # no EK left loaded in the TPM
    return {("rsa" if ek.key_type.is_rsa else "ecc"): ek for ek in found}


def swtpm_cas(swtpm: Swtpm) -> list[bytes]:
    return [path.read_bytes() for path in swtpm.ca_certificates]


def intel_answer(url: str, der: bytes, *, escaped: bool = True) -> bytes:
    """Intel's answer: JSON with the certificate in base64url, its padding URL-escaped."""
    text = b64url_encode(der) + "=" * (-len(b64url_encode(der)) % 4)
    if escaped:
        text = text.replace("=", "%3D")
    return json.dumps({"pubhash": url.rsplit("/", 1)[1], "certificate": text}).encode()


@pytest.mark.tpm
@pytest.mark.parametrize("maker", [INTEL, AMD], ids=["intel", "amd"])
@pytest.mark.parametrize("key_type", ["rsa", "ecc"])
def test_an_ek_certificate_is_fetched_and_checked_like_one_from_nv(
    swtpm: Swtpm, eks: dict[str, EndorsementKey], service: Service, maker: int,
    key_type: str,
) -> None:  # fmt: skip
    ek = eks[key_type]
    der = ek.require_certificate()
    url = ek_certificate_url(ek.public, maker)
    service.serve(url, intel_answer(url, der) if maker == INTEL else der)
    info = fetch_ek_certificate(ek.public, maker, service.fetch, ca_certs=swtpm_cas(swtpm))
    assert info.der == der and info.model == "swtpm" and info.manufacturer_id == 0x00001014
    assert service.asked == [urllib.parse.urlsplit(url).path]
    # The same through a policy, and an AMD answer in PEM.
    policy = TrustPolicy(ek_ca_certificates=swtpm_cas(swtpm))
    if maker == AMD:
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        service.serve(url, pem)
    assert fetch_ek_certificate(ek.public, maker, service.fetch, policy=policy).der == der


@pytest.mark.tpm
def test_intel_s_answer_padded_or_not_is_read_strictly(
    swtpm: Swtpm, eks: dict[str, EndorsementKey], service: Service
) -> None:
    ek = eks["rsa"]
    der, url, cas = ek.require_certificate(), ek_certificate_url(ek.public, INTEL), swtpm_cas(swtpm)
    for body in (intel_answer(url, der, escaped=False),
                 json.dumps({"certificate": b64url_encode(der)}).encode()):  # fmt: skip
        service.serve(url, body)
        assert fetch_ek_certificate(ek.public, INTEL, service.fetch, ca_certs=cas).der == der


def _refused(
    swtpm: Swtpm, ek: EndorsementKey, service: Service, maker: int, body: bytes, match: str
) -> None:
    service.serve(ek_certificate_url(ek.public, maker), body)
    with raises_check(Check.CERTIFICATE, match=match):
        fetch_ek_certificate(ek.public, maker, service.fetch, ca_certs=swtpm_cas(swtpm))


@pytest.mark.tpm
def test_a_certificate_for_another_key_is_refused(
    swtpm: Swtpm, eks: dict[str, EndorsementKey], service: Service
) -> None:
    """The service (or whoever answers for it) sends the ECC EK's genuine certificate for the
    RSA EK: it chains, but it is not this EK's."""
    rsa_ek, ecc_ek = eks["rsa"], eks["ecc"]
    other = ecc_ek.require_certificate()
    url = ek_certificate_url(rsa_ek.public, INTEL)
    _refused(swtpm, rsa_ek, service, INTEL, intel_answer(url, other), "another key than this EK")
    _refused(swtpm, rsa_ek, service, AMD, other, "another key than this EK")
    # An Intel answer that says it is for another EK is refused before its certificate is read.
    stranger = ek_certificate_url(ecc_ek.public, INTEL)
    wrong = json.loads(intel_answer(url, rsa_ek.require_certificate()))
    wrong["pubhash"] = stranger.rsplit("/", 1)[1]
    _refused(swtpm, rsa_ek, service, INTEL, json.dumps(wrong).encode(), "for another EK")


def _self_made(ek: EndorsementKey) -> bytes:
    """A certificate for the right EK, by a CA of the attacker's: it does not chain."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not the TPM maker")])
    ek_key = x509.load_der_x509_certificate(ek.require_certificate()).public_key()
    return (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(name)
        .public_key(ek_key).serial_number(5)  # type: ignore[arg-type]
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.1")]), False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )  # fmt: skip


@pytest.mark.tpm
def test_a_certificate_that_does_not_chain_is_refused(
    swtpm: Swtpm, eks: dict[str, EndorsementKey], service: Service
) -> None:
    ek = eks["rsa"]
    forged = _self_made(ek)
    url = ek_certificate_url(ek.public, INTEL)
    _refused(swtpm, ek, service, INTEL, intel_answer(url, forged), "no trusted CA signed")
    _refused(swtpm, ek, service, AMD, forged, "no trusted CA signed")
    service.serve(ek_certificate_url(ek.public, AMD), ek.require_certificate())
    with raises_check(Check.CERTIFICATE, match="no CA certificates"):  # nothing trusted
        fetch_ek_certificate(ek.public, AMD, service.fetch)


@pytest.mark.tpm
@pytest.mark.parametrize(
    ("maker", "make_body", "match"),
    [
        (AMD, lambda url, der: der + b"\x00" * (64 * 1024), "over the limit"),
        (INTEL, lambda url, der: b"{" * 70_000, "over the limit"),
        (AMD, lambda url, der: b"<html>Service Unavailable</html>", "not an X.509 certificate"),
        (AMD, lambda url, der: der[:-10], "not an X.509 certificate"),
        (INTEL, lambda url, der: der, "not UTF-8 JSON"),
        (INTEL, lambda url, der: b"[1, 2]", "not a JSON object"),
        (INTEL, lambda url, der: b'{"pubhash": "x"}', "certificate"),
        (INTEL, lambda url, der: b'{"certificate": 5}', "certificate"),
        (INTEL, lambda url, der: b'{"certificate": "MII+/="}', "base64url"),
        (INTEL, lambda url, der: b'{"certificate": "TUlJ%41"}', "escape other than"),
        (INTEL, lambda url, der: b'{"certificate": "AAAA"}', "not an X.509 certificate"),
        (INTEL, lambda url, der: b'{"certificate": "x", "certificate": "y"}', "twice"),
    ],
    ids=["amd-oversized", "intel-oversized", "amd-html", "amd-truncated", "intel-der",
         "intel-array", "intel-no-certificate", "intel-number", "intel-standard-base64",
         "intel-escape", "intel-not-a-certificate", "intel-member-twice"],
)  # fmt: skip
def test_malformed_or_oversized_answers_are_typed_refusals(
    swtpm: Swtpm, eks: dict[str, EndorsementKey], service: Service, maker: int,
    make_body: Callable[[str, bytes], bytes], match: str,
) -> None:  # fmt: skip
    ek = eks["rsa"]
    body = make_body(ek_certificate_url(ek.public, maker), ek.require_certificate())
    _refused(swtpm, ek, service, maker, body, match)


def test_a_fetch_that_returns_no_bytes_is_refused() -> None:
    key = rsa.generate_private_key(65537, 2048).public_key()
    with raises_check(Check.CERTIFICATE, match="bytes, not str"):
        fetch_ek_certificate(key, AMD, lambda url: url)  # type: ignore[arg-type, return-value]

    def failing(url: str) -> bytes:
        raise OSError("the caller's own error")

    with pytest.raises(OSError, match="the caller's own error"):  # what fetch raises: unchanged
        fetch_ek_certificate(key, AMD, failing)
