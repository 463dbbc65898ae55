"""The main job: the device side of a Microsoft Entra join, end to end, one line per step.

``entra-keys demo`` starts a throwaway swtpm where none is given (or uses ``--tcti``; or the
software provider where swtpm is not installed), then creates the device and transport keys,
checks the EK certificate, enrolls an attestation key, certifies both keys, registers with a
local stand-in Entra (``entra_keys.testing.entra``) through the ``entra_keys.protocol``
messages, gets a PRT (its session key imported into the provider), renews it, gets an app token,
signs the PRT cookie and device credential, makes a Windows Hello key (kept: ``status`` loads
a PIN-protected key without using it), keeps the PRT's refresh token sealed in the store
(``entra_keys.store.sealed``), and builds the leave. The join state names the sealed entry and holds
no secret; the Kerberos client keys are used and not kept. On software, a store passphrase
encrypts every key file the demo writes (device, transport, AK, NGC and session keys). Every
step checks its result; the first failure stops the run with a clear message. A step that has
nothing to do on the software provider (no EK certificate to check; no refresh token sealed
without a passphrase) says "skipped (software)", never PASSED.

The demo never writes into a key store that holds anything (keys, a join state, sealed secrets,
any file): it joins in a fresh temporary store, removed at the end, unless ``--store`` names a
missing or empty directory, and says which it uses. It holds that store's lock while it runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from .. import formats, protocol
from ..attestation.verifier import verify_ek_certificate
from ..errors import EntraKeysError, KeyStoreError
from ..protocol import PRT, Registration
from ..provider import EndorsementKey, EntraPrivateKey, KeyType, KeyUsage, Provider
from ..providers import open_provider
from ..store import sealed
from ..store.keystore import KeyStore
from ..tcg.nvcert import certificate_lines
from ..testing.entra import EntraStandIn
from ..testing.registration import RegistrationService
from ..testing.swtpm import Swtpm, SwtpmError, swtpm_unusable_reason

__all__ = ["REFRESH_TOKEN_SEALED", "DemoFailed", "JoinDemo", "Skipped", "run_demo"]


class DemoFailed(EntraKeysError):
    """A demo step did not give the result it checks for."""


@dataclass(frozen=True)
class Skipped:
    """What a step gives when it had nothing to do on the software provider: the run says
    "skipped (software)" and why, not PASSED."""

    detail: str


_TENANT = "contoso.example"
_UPN = "demo@contoso.example"
_PASSWORD = "demo-password"  # noqa: S105 - the stand-in's demo user
_PIN = b"246810"
#: The sealed entry of the store that keeps the PRT's refresh token (the join state names it).
REFRESH_TOKEN_SEALED = "prt-refresh-token"  # noqa: S105 - a name, not a secret


@dataclass
class JoinDemo:
    """The join's state as the steps build it, and the steps themselves: every message is made
    by ``entra_keys.protocol`` and answered by the stand-in Entra (``testing.entra``)."""

    provider: Provider
    store: KeyStore
    ek_cas: list[x509.Certificate]
    out: TextIO
    #: The store passphrase (software only): every software key the demo writes (device,
    #: transport, AK, NGC, session key) is encrypted under it, and the refresh token sealed.
    passphrase: bytes | None = None
    service: RegistrationService = field(init=False)
    entra: EntraStandIn = field(init=False)
    state: dict[str, Any] = field(default_factory=dict)
    _keys: dict[str, EntraPrivateKey] = field(default_factory=dict)
    _ek: EndorsementKey | None = None
    _registration: Registration | None = None
    _prt: PRT | None = None
    _reply: bytes = b""
    _attestation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.service = RegistrationService(
            ek_ca_certificates=self.ek_cas, allow_software=not self.provider.hardware_backed
        )
        self.entra = EntraStandIn(registration=self.service, users={_UPN: _PASSWORD})

    @property
    def _key_passphrase(self) -> bytes | None:
        """What the key files are encrypted with: the passphrase on software; a TPM key file is
        bound to its TPM and takes none (as the CLI reads none for it)."""
        return self.passphrase if self.provider.kind == "software" else None

    @property
    def where(self) -> str:
        return "in the TPM" if self.provider.hardware_backed else "in software"

    def steps(self) -> list[tuple[str, Callable[[], str | Skipped]]]:
        return [
            (f"Create the device key (RSA-2048) {self.where}", self.create_device_key),
            (f"Create the transport key (RSA-2048) {self.where}", self.create_transport_key),
            ("Read the EK certificate and check its chain", self.check_ek),
            ("Create and enroll the attestation key (make/activate credential)", self.enroll_ak),
            ("Certify the device and transport keys over DRS nonces", self.certify_keys),
            ("Join: CSR and BCRYPT transport key; DRS issues the device certificate", self.join),
            ("Request a PRT: srv_challenge nonce, RS256 JWT with x5c", self.request_prt),
            (f"Import the session key {self.where}, open the Kerberos keys", self.read_prt),
            ("Renew the PRT (HS256, KDF v2; dir JWE reply, AES-GCM)", self.renew_prt),
            ("Get an app token (HS256, KDF v2; dir JWE reply, AES-CBC)", self.app_token),
            ("Sign the PRT cookie and the device credential", self.cookies),
            (f"Windows Hello: PIN-protected key {self.where}, register, PRT", self.ngc),
            (f"Keep the PRT: its refresh token sealed {self.where}", self.keep_prt),
            ("Build the leave request (DELETE over mutual TLS)", self.leave),
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
            if isinstance(detail, Skipped):
                outcome = f"skipped (software) {detail.detail}"
            else:
                outcome = f"PASSED ({ms:.0f} ms) {detail}"
            self.out.write(("\r" if live else "") + f"{prefix}: {outcome}\n")
        self.store.save_join_state(self.state)

    # -- the steps ----------------------------------------------------------------------------

    def _create(self, name: str, usage: KeyUsage, pin: bytes | None = None) -> str:
        key = self.store.create(name, KeyType.RSA2048, usage, passphrase=self._key_passphrase,
                                pin=pin, replace=True)  # fmt: skip
        _check(key.hardware_backed is self.provider.hardware_backed, "the key's backing is wrong")
        self._keys[name] = key
        return f"{name}: {formats.jwk_thumbprint(key)}"

    def create_device_key(self) -> str:
        self.state["device_key"] = "device"
        return self._create("device", KeyUsage.SIGN)

    def create_transport_key(self) -> str:
        self.state["transport_key"] = "transport"
        return self._create("transport", KeyUsage.DECRYPT)

    def check_ek(self) -> str | Skipped:
        # The RSA EK alone (both providers have one): the ECC one's certificate and key are
        # three TPM commands not needed.
        eks = self.provider.endorsement_keys(KeyType.RSA2048)
        _check(bool(eks), "the provider has no RSA-2048 endorsement key")
        ek = eks[0]
        self._ek = ek
        if not ek.hardware_backed:
            self.state["ek_certificate_chain"] = "none (software)"
            return Skipped("a software EK has no certificate to check")
        # An index that cannot be read fails here with its reason, never as a missing certificate.
        certificate = ek.require_certificate()
        _check(bool(self.ek_cas), "no EK CA to check the chain against: give it with --ek-ca")
        info = verify_ek_certificate(certificate, self.ek_cas, intermediates=ek.chain)
        self.state["ek_certificate_chain"] = "verified"
        found = "; ".join(certificate_lines(ek))
        return f"{info.manufacturer} {info.model} {info.version}".strip() + f"; {found}"

    def enroll_ak(self) -> str:
        assert self._ek is not None
        ak = self.store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST,
                               passphrase=self._key_passphrase, replace=True)  # fmt: skip
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
            nonce = protocol.parse_drs_nonce(self.entra.handle(protocol.drs_nonce_request(_TENANT)))
            certification = self.provider.certify(self._keys[name], ak, nonce)
            _check(certification.nonce == nonce, "the certification lost its nonce")
            certified[name] = certification
        self._attestation = self.service.attestation(
            ak.tpm_public, device_key=certified["device"], transport_key=certified["transport"]
        )
        return "device and transport keys certified"

    def join(self) -> str:
        device, transport = self._keys["device"], self._keys["transport"]
        request = protocol.registration_request(
            device,
            transport,
            access_token=self.entra.issue_access_token(_UPN),
            domain=_TENANT,
            display_name="entra-keys-demo",
            os_version=os.uname().release,
            extra_fields={"Attestation": self._attestation},  # the stand-in's attestation
        )
        reply = self.entra.handle(request)
        registration = protocol.parse_registration_response(reply, device_key=device)
        attested = self.service.devices[registration.device_id].attested
        _check(attested is self.provider.hardware_backed, "attestation not recognized")
        self._registration = registration
        self.state.update(
            registration.join_state(tenant=_TENANT),
            attested=attested,
            provider=self.provider.kind,
        )
        return f"DeviceId {registration.device_id}"

    def request_prt(self) -> str:
        assert self._registration is not None
        nonce = protocol.parse_nonce(self.entra.handle(protocol.nonce_request()))
        request = protocol.prt_request(
            self._keys["device"], self._registration.certificate, nonce=nonce,
            username=_UPN, password=_PASSWORD,
        )  # fmt: skip
        self._reply = self.entra.handle(request)
        return f"{request.method} {request.url}"

    def read_prt(self) -> str:
        prt = protocol.parse_prt_response(self._reply, self._keys["transport"], self.store, "prt",
                                          replace=True,
                                          passphrase=self._key_passphrase)  # fmt: skip
        _check(prt.session.hardware_backed is self.provider.hardware_backed,
               "the session key is not bound where the keys are")  # fmt: skip
        issued = self.entra.prts[prt.refresh_token]
        for name, tgt in (("tgt_ad", prt.tgt_ad), ("tgt_cloud", prt.tgt_cloud)):
            _check(tgt is not None and tgt.client_key == issued.kerberos_keys[name],
                   f"the {name} client key differs")  # fmt: skip
        self._prt = prt
        self.state["session_key"] = "prt"
        backing = "TPM-bound keyed-hash object" if prt.session.hardware_backed else "software key"
        return f"{backing}; token_type {prt.token_type}; 2 Kerberos client keys"

    def _nonce(self) -> str:
        return protocol.parse_nonce(self.entra.handle(protocol.nonce_request()))

    def renew_prt(self) -> str:
        assert self._prt is not None
        request = protocol.refresh_prt_request(self._prt.session, self._prt.refresh_token,
                                               nonce=self._nonce())  # fmt: skip
        renewed = protocol.parse_refresh_response(
            self.entra.handle(request), self._prt.session,
            transport_key=self._keys["transport"], passphrase=self._key_passphrase,
            require_gcm=True,  # a renewal's reply is GCM: a CBC one in its place is refused
        )  # fmt: skip
        _check(renewed.refresh_token in self.entra.prts, "the service issued another PRT")
        self._prt = renewed
        return f"new PRT, expires {renewed.refresh_token_expires_at:%Y-%m-%d}"

    def app_token(self) -> str:
        assert self._prt is not None
        request = protocol.app_token_request(
            self._prt.session, self._prt.refresh_token, nonce=self._nonce(),
            client_id="1b730954-1685-4b74-9bfd-dac224a7b894",
            resource="https://graph.microsoft.com",
        )  # fmt: skip
        tokens = protocol.parse_token_response(self.entra.handle(request), self._prt.session)
        _check(tokens.get("resource") == "https://graph.microsoft.com", "another resource")
        return f"access token for {tokens['resource']}"

    def cookies(self) -> str:
        assert self._prt is not None and self._registration is not None
        cookie = protocol.prt_cookie(self._prt.session, self._prt.refresh_token,
                                     nonce=self._nonce())  # fmt: skip
        claims = self.entra.verify_prt_cookie(cookie)
        _check(claims.get("is_primary") == "true", "the cookie is not the primary one")
        credential = protocol.device_credential(
            self._keys["device"], self._registration.certificate, nonce=self._nonce()
        )
        device_id = self.entra.verify_device_credential(credential)
        _check(device_id == self._registration.device_id, "another device's credential")
        return "x-ms-RefreshTokenCredential and x-ms-DeviceCredential verified"

    def ngc(self) -> str:
        assert self._registration is not None
        self._create("ngc", KeyUsage.SIGN, pin=_PIN)
        ngc_key = self._keys["ngc"]
        token = self.entra.issue_access_token(_UPN, amr=("pwd", "ngcmfa"))
        self.entra.handle(protocol.ngc_registration_request(ngc_key, access_token=token))
        nonce = self._nonce()
        assertion = protocol.ngc_assertion(ngc_key, upn=_UPN, nonce=nonce)
        request = protocol.prt_request(
            self._keys["device"], self._registration.certificate, nonce=nonce,
            username=_UPN, assertion=assertion,
        )  # fmt: skip
        prt = protocol.parse_prt_response(self.entra.handle(request), self._keys["transport"],
                                          self.store, "prt", replace=True,
                                          passphrase=self._key_passphrase)  # fmt: skip
        self._prt = prt
        kid = protocol.ngc_key_id(ngc_key)
        self.state["ngc_key"] = "ngc"  # kept: ``status`` loads it only (it has no PIN)
        return f"kid {kid}; PRT by NGC assertion"

    def keep_prt(self) -> str | Skipped:
        """Seal the refresh token under the store; the join state names the entry. On the
        software provider sealing needs a passphrase: without one the token is not kept."""
        assert self._prt is not None
        self.state.pop("prt_refresh_token", None)
        token = self._prt.refresh_token.encode("utf-8")
        pin = None
        if not self.provider.hardware_backed:
            if self.passphrase is None:
                if REFRESH_TOKEN_SEALED in sealed.names(self.store):
                    sealed.delete(self.store, REFRESH_TOKEN_SEALED)  # a stale one goes
                return Skipped("not kept: software seals only under a passphrase "
                               "(give --passphrase-file or ENTRA_KEYS_PASSPHRASE)")  # fmt: skip
            pin = self.passphrase
        sealed.seal(self.store, REFRESH_TOKEN_SEALED, token, pin=pin, replace=True)
        _check(sealed.unseal(self.store, REFRESH_TOKEN_SEALED, pin=pin) == token,
               "the sealed refresh token unseals to other bytes")  # fmt: skip
        self.state["prt_refresh_token"] = REFRESH_TOKEN_SEALED
        expires = self._prt.refresh_token_expires_at
        self.state["prt_refresh_token_expires_at"] = expires.isoformat()
        how = "TPM data object" if self.provider.hardware_backed else "under the passphrase"
        return f"{REFRESH_TOKEN_SEALED}.sealed ({how}), expires {expires:%Y-%m-%d}"

    def leave(self) -> str:
        assert self._registration is not None
        request = protocol.leave_request(self._registration.device_id)
        _check(request.method == "DELETE" and not request.body, "a leave carries no body")
        return f"{request.method} {request.url} (not sent: the device stays joined)"


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DemoFailed(f"cannot read the CA certificate {path}: {exc}") from exc


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


def _store_path(provider: Provider, named: str | None, fresh: Path, out: TextIO) -> Path:
    """Where the demo joins: the store ``--store`` names when it is missing or empty, else a
    fresh temporary store (removed at the end); the output says which, and why."""
    if named is not None:
        try:
            if KeyStore(provider, named).is_empty():
                out.write(f"Key store: {named} (empty: the demo's join stays there)\n")
                return Path(named)
            why = "holds files (a join?)"
        except KeyStoreError as exc:
            why = f"cannot be used ({exc})"
        out.write(f"Key store: {named} {why}: the demo leaves it untouched and joins in a "
                  f"fresh temporary store, {fresh} (removed at the end)\n")  # fmt: skip
        return fresh
    out.write(f"Key store: a fresh temporary store, {fresh} (removed at the end)\n")
    return fresh


def run_demo(
    kind: str | None,
    tcti: str | None,
    store_dir: str | None,
    out: TextIO = sys.stdout,
    ek_ca_files: Sequence[str] = (),
    passphrase: Callable[[Provider], bytes | None] = lambda _: None,
) -> tuple[Provider, KeyStore, ExitStack]:
    """Pick the TPM (a throwaway swtpm unless one is given), run the join, and hand back the
    provider and store still open (with what closes them) so the caller can show the status.
    ``passphrase`` gives the store passphrase for the provider picked (software seals under it)."""
    cleanup = ExitStack()
    try:
        work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="entra-keys-")))
        ek_cas = [_load_certificate(Path(f)) for f in ek_ca_files]
        if kind != "software" and tcti is None:
            # swtpm, and tpm2-pytss to use it, are there (else the reason): looked at first,
            # so that no swtpm is started for a provider that cannot use it
            reason = swtpm_unusable_reason()
            if reason is None:
                tpm = Swtpm(work / "tpm")
                out.write("Starting a throwaway swtpm (EK certificates from a local CA) ...\n")
                try:
                    tcti = tpm.start()
                except SwtpmError as exc:
                    raise DemoFailed(f"swtpm did not start: {exc}") from exc
                cleanup.callback(tpm.stop)
                ek_cas = [_load_certificate(p) for p in tpm.ca_certificates]
                kind = "tpm"
            elif kind == "tpm":  # asked for: no fallback
                raise DemoFailed(f"--provider tpm, and no throwaway swtpm: {reason}; "
                                 "name a TPM with --tcti")  # fmt: skip
            else:
                out.write(f"{reason}; running on the software provider "
                          "(keys are not hardware-backed)\n")  # fmt: skip
                kind = "software"
        provider = open_provider(kind, tcti=tcti)
        cleanup.callback(provider.close)
        out.write(f"Provider: {provider.kind}"
                  + (f" ({tcti})" if provider.kind == "tpm" else "") + "\n")  # fmt: skip
        store = KeyStore(provider, _store_path(provider, store_dir, work / "keys", out))
        with store.locked():  # no other writer joins it meanwhile
            _check(store.is_empty(), f"the key store {store.path} was written to meanwhile")
            JoinDemo(provider, store, ek_cas, out, passphrase(provider)).run()
        return provider, store, cleanup
    except BaseException:
        cleanup.close()
        raise
