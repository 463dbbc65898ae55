"""The main job: the device side of a Microsoft Entra join, end to end, one line per step.

``entra-keys demo`` starts a throwaway swtpm where none is given (or uses ``--tcti``; or the
software provider where swtpm is not installed), then creates the device and transport keys,
checks the EK certificate, enrolls an attestation key, certifies both keys, registers with a
local stand-in service (``entra_keys.testing.registration``), imports the PRT session key and
uses it. Every step checks its result; the first failure stops the run with a clear message.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from . import formats
from .attestation.records import certification_to_json
from .attestation.verifier import verify_ek_certificate
from .errors import EntraKeysError
from .keystore import KeyStore
from .provider import EndorsementKey, EntraPrivateKey, KeyType, KeyUsage, Provider
from .providers import open_provider
from .session import PRTSession
from .testing.registration import RegistrationService
from .testing.swtpm import Swtpm, SwtpmError, swtpm_available

__all__ = ["DemoFailed", "JoinDemo", "run_demo"]


class DemoFailed(EntraKeysError):
    """A demo step did not give the result it checks for."""


@dataclass
class JoinDemo:
    """The join's state as the steps build it, and the steps themselves."""

    provider: Provider
    store: KeyStore
    ek_cas: list[x509.Certificate]
    out: TextIO
    service: RegistrationService = field(init=False)
    state: dict[str, Any] = field(default_factory=dict)
    _keys: dict[str, EntraPrivateKey] = field(default_factory=dict)
    _ek: EndorsementKey | None = None
    _device_id: str = ""
    _prt: PRTSession | None = None
    _jwe: str = ""

    def __post_init__(self) -> None:
        self.service = RegistrationService(
            ek_ca_certificates=self.ek_cas, allow_software=not self.provider.hardware_backed
        )

    @property
    def where(self) -> str:
        return "in the TPM" if self.provider.hardware_backed else "in software"

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            (f"Create the device key (RSA-2048) {self.where}", self.create_device_key),
            (f"Create the transport key (RSA-2048) {self.where}", self.create_transport_key),
            ("Read the EK certificate and check its chain", self.check_ek),
            ("Create and enroll the attestation key (make/activate credential)", self.enroll_ak),
            ("Certify the device and transport keys with the AK", self.certify_keys),
            ("Build the CSR and the BCRYPT transport-key blob", self.build_request),
            ("Register: the service verifies and issues the device certificate", self.register),
            ("Request a PRT with the device key (RS256, x5c)", self.request_prt),
            (f"Import the session key {self.where}", self.import_session_key),
            ("Sign a request with the session key (HS256, KDF v2)", self.sign_with_session),
            ("Decrypt encrypted responses (AES-GCM and AES-CBC)", self.decrypt_responses),
        ]

    def run(self) -> None:
        """Run every step, one line each; raise DemoFailed (or the library's error) on the first
        failure."""
        steps = self.steps()
        width = len(str(len(steps)))
        live = self.out.isatty()  # on a terminal, show the running step, then overwrite it
        for number, (title, step) in enumerate(steps, 1):
            prefix = f"[{number:>{width}}/{len(steps)}] {title}"
            if live:
                self.out.write(f"{prefix} ...")
                self.out.flush()
            started = time.perf_counter()
            try:
                detail = step()
            except Exception:
                self.out.write(("\r" if live else "") + f"{prefix}: FAILED\n")
                raise
            ms = (time.perf_counter() - started) * 1000
            self.out.write(("\r" if live else "") + f"{prefix}: PASSED ({ms:.0f} ms) {detail}\n")
        self.store.save_join_state(self.state)

    # -- the steps ----------------------------------------------------------------------------

    def _create(self, name: str, usage: KeyUsage) -> str:
        key = self.store.create(name, KeyType.RSA2048, usage, replace=True)
        _check(key.hardware_backed is self.provider.hardware_backed, "the key's backing is wrong")
        self._keys[name] = key
        return f"{name}: {formats.jwk_thumbprint(key)}"

    def create_device_key(self) -> str:
        return self._create("device", KeyUsage.SIGN)

    def create_transport_key(self) -> str:
        return self._create("transport", KeyUsage.DECRYPT)

    def check_ek(self) -> str:
        eks = self.provider.endorsement_keys()
        _check(bool(eks), "the provider has no endorsement key")
        ek = next((e for e in eks if e.key_type is KeyType.RSA2048), eks[0])
        self._ek = ek
        if not ek.hardware_backed:
            self.state["ek_certificate_chain"] = "none (software)"
            return "software provider: a software EK, no certificate to check"
        _check(ek.certificate is not None, "the EK has no certificate in NV")
        assert ek.certificate is not None
        _check(bool(self.ek_cas), "no EK CA to check the chain against: give it with --ek-ca")
        info = verify_ek_certificate(ek.certificate, self.ek_cas)
        self.state["ek_certificate_chain"] = "verified"
        return f"{info.manufacturer} {info.model} {info.version}".strip()

    def enroll_ak(self) -> str:
        assert self._ek is not None
        ak = self.store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST, replace=True)
        self._keys["ak"] = ak
        blob, secret = self.service.enrollment_challenge(self._ek, ak.tpm_public)
        answer = self.provider.activate_credential(ak, self._ek, blob, secret)
        self.service.finish_enrollment(ak.tpm_public, answer)
        _check(self.service.ak_enrolled(ak.tpm_public), "the service did not enroll the AK")
        self.state["ak"] = "ak"
        self.state["ak_enrolled"] = True
        return f"AK {formats.jwk_thumbprint(ak)} enrolled"

    def certify_keys(self) -> str:
        ak = self._keys["ak"]
        certified = {}
        for name in ("device", "transport"):
            nonce = self.service.issue_nonce()
            certification = self.provider.certify(self._keys[name], ak, nonce)
            _check(certification.nonce == nonce, "the certification lost its nonce")
            certified[name] = json.loads(certification_to_json(certification))
        self.state["_attestation"] = {
            "AkPublic": base64.b64encode(ak.tpm_public).decode(),
            "DeviceKey": certified["device"],
            "TransportKey": certified["transport"],
        }
        return "device and transport keys certified"

    def build_request(self) -> str:
        csr = formats.build_csr(self._keys["device"])
        _check(csr.is_signature_valid, "the CSR does not verify")
        blob = formats.bcrypt_rsakey_blob(self._keys["transport"])
        _check(len(blob) == 283, f"the BCRYPT blob is {len(blob)} bytes, not 283")
        self.state["_request"] = {
            "CertificateRequest": {
                "Type": "pkcs10",
                "Data": base64.b64encode(formats.csr_der(csr)).decode(),
            },
            "TransportKey": base64.b64encode(blob).decode(),
            "JoinType": 0,
            "DeviceDisplayName": "entra-keys-demo",
            "DeviceType": "Linux",
            "OSVersion": os.uname().release,
            "TargetDomain": "contoso.example",
            "Attestation": self.state.pop("_attestation"),
        }
        return f"CSR subject {csr.subject.rfc4514_string()}, TransportKey {len(blob)} bytes"

    def register(self) -> str:
        reply = self.service.register(self.state.pop("_request"))
        cert = x509.load_der_x509_certificate(base64.b64decode(reply["Certificate"]["RawBody"]))
        _check(cert.public_key() == self._keys["device"].public_key(), "wrong certified key")
        _check(reply["Attested"] is self.provider.hardware_backed, "attestation not recognized")
        self._device_id = reply["DeviceId"]
        der = cert.public_bytes(serialization.Encoding.DER)
        thumbprint = hashes.Hash(hashes.SHA1())  # noqa: S303 - the certificate thumbprint
        thumbprint.update(der)
        self.state.update(
            device_id=self._device_id,
            thumbprint=thumbprint.finalize().hex().upper(),
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
            attested=reply["Attested"],
            provider=self.provider.kind,
        )
        return f"DeviceId {self._device_id}"

    def request_prt(self) -> str:
        cert = x509.load_pem_x509_certificate(self.state["certificate"].encode())
        x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        payload = {
            "client_id": "38aa3b87-a06d-4817-b275-7a316988d93b",
            "request_nonce": self.service.issue_prt_nonce(),
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "scope": "openid aza ugs",
        }
        token = formats.jws_sign(
            self._keys["device"], payload, "RS256", {"typ": "JWT", "x5c": x5c, "kdf_ver": 2}
        )
        reply = self.service.issue_prt(token)
        self._jwe = reply["session_key_jwe"]
        return "session_key_jwe received"

    def import_session_key(self) -> str:
        self._prt = PRTSession.create(
            self.store, "prt", self._keys["transport"], self._jwe, replace=True
        )
        _check(
            self._prt.hardware_backed is self.provider.hardware_backed,
            "the session key is not bound where the keys are",
        )
        self.state["session_key"] = "prt"
        return "TPM-bound keyed-hash object" if self._prt.hardware_backed else "software key"

    def sign_with_session(self) -> str:
        assert self._prt is not None
        request = self._prt.sign_request({"refresh_token": "demo", "request_nonce": "demo"})
        claims = self.service.token_service(self._device_id).verify_request(request)
        _check(claims.get("refresh_token") == "demo", "the service read another request")
        return "the service verified the derived-key signature"

    def decrypt_responses(self) -> str:
        assert self._prt is not None
        tokens = self.service.token_service(self._device_id)
        body = json.dumps({"id_token": "demo", "refresh_token": "demo"}).encode()
        modes: tuple[Literal["gcm", "cbc"], ...] = ("gcm", "cbc")
        for mode in modes:
            reply = tokens.encrypt_response(body, mode=mode)
            _check(self._prt.decrypt_response(reply) == body, f"the {mode} response differs")
        return "both decrypted with KDF v1 keys"


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DemoFailed(f"cannot read the CA certificate {path}: {exc}") from exc


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


def run_demo(
    kind: str | None,
    tcti: str | None,
    store_dir: str | None,
    out: TextIO = sys.stdout,
    ek_ca_files: Sequence[str] = (),
) -> tuple[Provider, KeyStore, ExitStack]:
    """Pick the TPM (a throwaway swtpm unless one is given), run the join, and hand back the
    provider and store still open (with what closes them) so the caller can show the status."""
    cleanup = ExitStack()
    try:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="entra-keys-")))
        ek_cas = [_load_certificate(Path(f)) for f in ek_ca_files]
        if kind != "software" and tcti is None:
            if swtpm_available():
                tpm = Swtpm(work / "tpm")
                out.write("Starting a throwaway swtpm (EK certificates from a local CA) ...\n")
                try:
                    tcti = tpm.start()
                except SwtpmError as exc:
                    raise DemoFailed(f"swtpm did not start: {exc}") from exc
                cleanup.callback(tpm.stop)
                ek_cas = [_load_certificate(p) for p in tpm.ca_certificates]
                kind = "tpm"
            else:
                out.write("swtpm is not installed: running on the software provider "
                          "(keys are not hardware-backed)\n")  # fmt: skip
                kind = "software"
        provider = open_provider(kind, tcti=tcti)
        cleanup.callback(provider.close)
        out.write(f"Provider: {provider.kind}"
                  + (f" ({tcti})" if provider.kind == "tpm" else "") + "\n")  # fmt: skip
        store = KeyStore(provider, store_dir or work / "keys")
        JoinDemo(provider, store, ek_cas, out).run()
        return provider, store, cleanup
    except BaseException:
        cleanup.close()
        raise
