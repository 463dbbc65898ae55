"""Leave over mutual TLS with the TPM device key, through the tpm2-openssl provider.

What works (checked here, OpenSSL 3.0.19, tpm2-openssl 1.1.1): OpenSSL 3 with tpm2-openssl
loads the stored ``TSS2 PRIVATE KEY`` file, for ``openssl`` and for Python's ``ssl``
(``load_cert_chain`` reads the key through OSSL_DECODER in the default library context, which
has the tpm2 provider when ``OPENSSL_CONF`` activates it), and the key signs with
``openssl pkeyutl`` (the signature checked by pyca). Python's ``ssl`` completes a mutual TLS
handshake with it, and sends the leave, through tpm2-abrmd (a resource manager, as
``/dev/tpmrm0`` on a real machine) with ``protocol.tls_openssl_config()``: tpm2 activated
before default. With default first the handshake's signature comes from the default provider,
which cannot use the key ("EVP lib"); ``default_properties = ?provider!=tpm2`` or
``provider=default`` does the same.

What does not: the handshake on a bare swtpm. tpm2-openssl also serves SHA-256, the handshake's
transcript hashes come from it, each copy (EVP_MD_CTX_copy_ex) is one more TPM hash-sequence
object, and swtpm, which holds 3 objects and has no resource manager, answers 0x902 (out of
memory for object contexts; Python says ``[SSL] internal error``, ``openssl s_client`` "cannot
duplicate context"). That test is an expected failure, strict: it reports when it works.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from entra_keys import KeyStore, KeyType, KeyUsage, open_provider
from entra_keys.errors import InvalidData
from entra_keys.protocol import (
    Request,
    leave_request,
    parse_registration_response,
    registration_request,
    tls_openssl_config,
)
from entra_keys.testing.entra import EntraStandIn
from entra_keys.testing.swtpm import Swtpm, Tabrmd, swtpm_available

from .helpers import unavailable

HOST = "enterpriseregistration.windows.net"
TPM2_PROVIDER = Path("/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so")
CHILD = textwrap.dedent(
    """
    import socket, ssl, sys
    work, mode = sys.argv[1], sys.argv[2]
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(f"{work}/server.pem")
    client.load_cert_chain(f"{work}/device.crt", f"{work}/keys/device.pem")  # the TPM key
    if mode == "load":
        print("loaded")
        sys.exit(0)
    with socket.create_connection(("127.0.0.1", int(sys.argv[3]))) as raw:
        with client.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(sys.argv[4].encode())
            sys.stdout.write(tls.recv(4096).decode())
    """
)


def _certificate(subject: str, key: object, issuer: str, signer: object) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    )
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


class Joined:
    """A TPM device joined to the stand-in, its files where OpenSSL reads them."""

    def __init__(self, work: Path, tcti: str) -> None:
        self.work, self.tcti = work, tcti
        self.entra = EntraStandIn(users={"u@contoso.com": "pw"})
        with open_provider("tpm", tcti=tcti) as provider:
            store = KeyStore(provider, work / "keys")
            device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
            transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
            join = registration_request(
                device, transport, access_token=self.entra.issue_access_token("u@contoso.com"),
                domain="contoso.com", display_name="pc", os_version="Debian 13",
            )  # fmt: skip
            self.registration = parse_registration_response(self.entra.handle(join))
        pem = serialization.Encoding.PEM
        (work / "device.crt").write_bytes(self.registration.certificate_pem)
        ca = self.entra.drs.ca_certificate.public_bytes(pem)
        (work / "device-ca.pem").write_bytes(ca)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate("localhost", server_key.public_key(), "localhost", server_key)
        key_pem = server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (work / "server.pem").write_bytes(server.public_bytes(pem) + key_pem)
        (work / "openssl.cnf").write_text(tls_openssl_config())

    def env(self) -> dict[str, str]:
        return {**os.environ, "TPM2OPENSSL_TCTI": self.tcti,
                "OPENSSL_CONF": str(self.work / "openssl.cnf")}  # fmt: skip

    def child(self, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CHILD, str(self.work), mode, *args],
            env=self.env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


def _require_tpm2_openssl() -> None:
    if not TPM2_PROVIDER.exists() or shutil.which("openssl") is None:
        unavailable("tpm2-openssl (the OpenSSL provider) is not installed")


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[Joined]:
    """A device joined on its own swtpm (tpm2-openssl opens its own TPM connection)."""
    _require_tpm2_openssl()
    if not swtpm_available():
        unavailable("swtpm is not installed")
    tpm = Swtpm(tmp_path / "tpm")
    tcti = tpm.start()
    try:
        yield Joined(tmp_path, tcti)
    finally:
        tpm.stop()


def test_openssl_signs_with_the_stored_tpm_key_through_tpm2_openssl(joined: Joined) -> None:
    """``openssl pkeyutl`` signs a SHA-256 digest with the key file (PKCS#1 v1.5 with its
    DigestInfo); pyca checks the signature against the device certificate."""
    message = b"DELETE /EnrollmentServer/device/ over mutual TLS"
    digest = joined.work / "digest"
    digest.write_bytes(hashlib.sha256(message).digest())
    signature = joined.work / "sig"
    done = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-provider", "tpm2", "-provider", "default",
         "-inkey", str(joined.work / "keys" / "device.pem"), "-pkeyopt", "digest:sha256",
         "-in", str(digest), "-out", str(signature)],
        env={**os.environ, "TPM2OPENSSL_TCTI": joined.tcti}, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    public = joined.registration.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature.read_bytes(), message, padding.PKCS1v15(), hashes.SHA256())


def test_python_ssl_loads_the_tpm_key_through_the_provider(joined: Joined) -> None:
    done = joined.child("load")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded"


def _serve_once(joined: Joined, listener: socket.socket, seen: dict[str, object]) -> None:
    """A TLS server that requires a client certificate from the stand-in's device CA; it hands
    the request to the stand-in with the verified client certificate and sends back its reply."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(joined.work / "server.pem"))
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(str(joined.work / "device-ca.pem"))
    try:
        connection, _ = listener.accept()
        with server.wrap_socket(connection, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            peer = x509.load_der_x509_certificate(der)
            seen["peer"] = peer
            head, _, body = tls.recv(65536).partition(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
            request = Request(method, f"https://{HOST}{target}", {}, body)
            seen["reply"] = joined.entra.handle(request, client_certificate=peer)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    except Exception as exc:  # the test reports it
        seen["error"] = exc


def _leave_over_tls(joined: Joined) -> None:
    """Send the leave request from a child process whose ``ssl`` holds the TPM key, to a
    server in this process (which has no tpm2 provider), and check what the server saw."""
    leave = leave_request(joined.registration.device_id)
    assert leave.url.startswith(f"https://{HOST}/")
    target = leave.url.removeprefix(f"https://{HOST}")
    seen: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        thread = threading.Thread(target=_serve_once, args=(joined, listener, seen))
        thread.start()
        line = f"{leave.method} {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        done = joined.child("handshake", str(listener.getsockname()[1]), line)
        thread.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "error" not in seen, seen["error"]
    assert done.stdout.startswith("HTTP/1.1 200 OK")
    assert seen["peer"] == joined.registration.certificate  # the device certificate
    assert seen["reply"] == b""
    with pytest.raises(InvalidData):  # the stand-in forgot the device: a second leave fails
        joined.entra.handle(leave, client_certificate=joined.registration.certificate)


def test_leave_over_mutual_tls_with_python_ssl_through_a_resource_manager(
    tabrmd: Tabrmd, tmp_path: Path
) -> None:
    """Through tpm2-abrmd, as through /dev/tpmrm0: the handshake completes with the TPM key,
    the server verifies the device certificate, and the stand-in takes the leave."""
    _require_tpm2_openssl()
    _leave_over_tls(Joined(tmp_path, tabrmd.tcti))


@pytest.mark.xfail(
    strict=True,
    reason="on a bare swtpm (no resource manager) the handshake's transcript hashes come from "
    "tpm2-openssl and exhaust the 3 object slots (0x902): see the module docstring",
)
def test_leave_over_mutual_tls_with_python_ssl_on_a_bare_swtpm(joined: Joined) -> None:
    _leave_over_tls(joined)
