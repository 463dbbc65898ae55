"""TPM commands per user flow, counted where the TPM receives them.

On a chip every command costs 10-100 ms, and behind a resource manager (/dev/tpmrm0, tpm2-abrmd)
each command also swaps the process's objects and sessions in and out; so what carries over from
a swtpm to a laptop is the number of commands a flow sends. Each flow runs on a provider of its
own (as a new process would: the saved primary context of this boot is the only state that
outlives a provider), counted three ways:

- ``direct``: swtpm through tpm2-tss's pcap TCTI;
- ``tabrmd``: through tpm2-abrmd with the pcap TCTI on its TPM side, so its context swaps count;
- ``tabrmd2``: the same with ``--max-transients=2`` (three objects: what the kernel's
  /dev/tpmrm0 lets a process hold), where every flow must still work;

each on a swtpm after ``entra-keys tpm init`` (``srk``, the persistent SRK) and on one without it
(``primary``, the storage primary from its saved context of this boot). ``count_flows`` gives the
command names of each flow, less a command the TPM answered "send it again" (TPM_RC_RETRY, which
a swtpm gives some RSA operations: the TSS repeats it, the TPM's doing, not the flow's). The
``roundtrips`` case reports the counts (the command names in each figure's note) with the
issue's targets; tests/test_command_counts.py asserts them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from entra_keys import KeyStore, KeyType, KeyUsage, PRTSession, open_provider, protocol
from entra_keys.cli import main as cli_main
from entra_keys.cli._demo import JoinDemo
from entra_keys.providers.tpm import persist_storage_key
from entra_keys.store import sealed
from entra_keys.testing.pcap import command_names, settled
from entra_keys.testing.swtpm import Swtpm, Tabrmd, tabrmd_available
from entra_keys.testing.token_service import TokenService

from .context import Context
from .measure import SKIPPED, Case, Result, Target

__all__ = ["CASES", "FLOWS", "ROUTES", "STORAGES", "TARGETS", "Rig", "count_flows", "rig"]

#: The flows, in table order: id -> what runs (each opens its provider and closes it).
FLOWS = {
    "prt_signin": "PRT sign-in: open, PRTSession.open, sign a request, decrypt a reply, close",
    "windows_hello": "Windows Hello: open, load the PIN key, one assertion, close",
    "unseal": "unseal with a PIN",
    "unseal_pcrs": "unseal with a PIN and PCRs 0,7",
    "device_request": "device-key PRT request: open, load the device key, sign, close",
    "join": "the whole join (the demo's steps, open to close)",
    "status": "entra-keys status (a new process's command, in-process)",
}
#: Where the commands are counted.
ROUTES = {
    "direct": "directly on swtpm",
    "tabrmd": "through tpm2-abrmd",
    "tabrmd2": "through tpm2-abrmd --max-transients=2",
}
#: The storage keys: after ``tpm init``, and without a persistent SRK.
STORAGES = {"srk": "after tpm init", "primary": "no persistent SRK"}

#: Issue 23's targets after ``tpm init`` (route -> flow -> at most); tabrmd2 must only work.
TARGETS: dict[str, dict[str, int]] = {
    "direct": {
        "prt_signin": 5,
        "windows_hello": 6,
        "unseal": 5,
        "unseal_pcrs": 7,
        "device_request": 4,
        "join": 55,
        "status": 14,
    },
    "tabrmd": {
        "prt_signin": 18,
        "windows_hello": 13,
        "unseal": 12,
        "unseal_pcrs": 18,
        "device_request": 8,
        "join": 150,
        "status": 32,
    },
}

PIN = b"246810"
UPN = "user@contoso.example"
SECRET = b"a refresh token " * 4
_REPLY = b'{"id_token": "x", "refresh_token": "y"}'


@dataclass
class Rig:
    """One swtpm (with or without a persistent SRK) and what the flows use, made once on it:
    the login store (transport and PRT session key, device key, PIN key, two sealed secrets),
    the device certificate, the token service that knows the session key, a joined store."""

    storage: str
    tpm: Swtpm
    work: Path
    service: TokenService = field(default_factory=TokenService)
    certificate: x509.Certificate | None = None
    joins: int = 0

    @property
    def login(self) -> Path:
        return self.work / "login"

    @property
    def joined(self) -> Path:
        return self.work / "joined"

    def ek_cas(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(p.read_bytes()) for p in self.tpm.ca_certificates]

    def prepare(self) -> None:
        """Make the keys and stores on the swtpm, directly (nothing here is counted)."""
        if self.storage == "srk":
            persist_storage_key(self.tpm.tcti)
        with open_provider("tpm", tcti=self.tpm.tcti) as provider:
            store = KeyStore(provider, self.login)
            transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
            public = transport.public_key()
            PRTSession.create(store, "prt", transport, self.service.session_key_jwe(public))  # type: ignore[arg-type]
            device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
            store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=PIN)
            sealed.seal(store, "secret", SECRET, pin=PIN)
            sealed.seal(store, "secret-pcrs", SECRET, pin=PIN, pcrs=[0, 7])
            self.certificate = _self_signed(device)
            JoinDemo(provider, KeyStore(provider, self.joined), self.ek_cas(), io.StringIO()).run()

    def run(self, flow: str, tcti: str) -> None:
        """Run one flow on its own provider of ``tcti``; checks what it gives."""
        _RUNS[flow](self, tcti)


def _self_signed(key: object) -> x509.Certificate:
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )


def _prt_signin(rig: Rig, tcti: str) -> None:
    with open_provider("tpm", tcti=tcti) as provider:
        prt = PRTSession.open(KeyStore(provider, rig.login), "prt")
        rig.service.verify_request(prt.sign_request({"refresh_token": "r", "request_nonce": "n"}))
        assert prt.decrypt_response(rig.service.encrypt_response(_REPLY)) == _REPLY


def _windows_hello(rig: Rig, tcti: str) -> None:
    with open_provider("tpm", tcti=tcti) as provider:
        key = KeyStore(provider, rig.login).load("ngc", pin=PIN)
        assert protocol.ngc_assertion(key, upn=UPN, nonce="nonce")


def _unseal(name: str) -> Callable[[Rig, str], None]:
    def run(rig: Rig, tcti: str) -> None:
        with open_provider("tpm", tcti=tcti) as provider:
            assert sealed.unseal(KeyStore(provider, rig.login), name, pin=PIN) == SECRET

    return run


def _device_request(rig: Rig, tcti: str) -> None:
    assert rig.certificate is not None
    with open_provider("tpm", tcti=tcti) as provider:
        device = KeyStore(provider, rig.login).load("device")
        request = protocol.prt_request(
            device, rig.certificate, nonce="nonce", username=UPN, password="password"
        )
        assert request.body


def _join(rig: Rig, tcti: str) -> None:
    rig.joins += 1
    with open_provider("tpm", tcti=tcti) as provider:
        store = KeyStore(provider, rig.work / f"join-{rig.joins}")
        JoinDemo(provider, store, rig.ek_cas(), io.StringIO()).run()


def _status(rig: Rig, tcti: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["--tcti", tcti, "--store", str(rig.joined), "--json", "status"])
    assert code == 0, out.getvalue()


_RUNS: dict[str, Callable[[Rig, str], None]] = {
    "prt_signin": _prt_signin,
    "windows_hello": _windows_hello,
    "unseal": _unseal("secret"),
    "unseal_pcrs": _unseal("secret-pcrs"),
    "device_request": _device_request,
    "join": _join,
    "status": _status,
}


@contextlib.contextmanager
def rig(storage: str, work: Path) -> Iterator[Rig]:
    """A swtpm of its own with the flows' keys made on it (``prepare``); stopped after."""
    tpm = Swtpm(work / "tpm")
    tpm.start()
    try:
        made = Rig(storage, tpm, work)
        made.prepare()
        yield made
    finally:
        tpm.stop()


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def count_flows(made: Rig, route: str, flows: Sequence[str] = tuple(FLOWS)) -> dict[str, list[str]]:
    """The commands the TPM received for each flow on this route, by name, in order."""
    counted: dict[str, list[str]] = {}
    if route == "direct":
        for flow in flows:
            capture = made.work / f"{route}-{flow}.pcap"
            capture.unlink(missing_ok=True)
            with _environment("TCTI_PCAP_FILE", str(capture)):
                made.run(flow, f"pcap:{made.tpm.tcti}")
            counted[flow] = command_names(capture, resubmitted=False)
        return counted
    capture = made.work / f"{route}.pcap"
    capture.unlink(missing_ok=True)
    broker = Tabrmd(made.tpm, capture=capture, max_transients=2 if route == "tabrmd2" else None)
    broker.start()
    try:
        with _environment("DBUS_SESSION_BUS_ADDRESS", broker.bus_address):
            # The first open through this TCTI saves the primary's context (no SRK): a flow
            # counts what a process of this boot pays, not the first one's CreatePrimary.
            open_provider("tpm", tcti=broker.tcti).close()
            for flow in flows:
                settled(capture)
                before = len(command_names(capture, resubmitted=False))
                made.run(flow, broker.tcti)
                settled(capture)
                counted[flow] = command_names(capture, resubmitted=False)[before:]
    finally:
        broker.stop()
    return counted


def _run(ctx: Context) -> list[Result]:
    routes = [r for r in ROUTES if r == "direct" or tabrmd_available()]
    counts: dict[tuple[str, str, str], list[str]] = {}
    before = os.environ.get("XDG_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="entra-keys-bench-roundtrips-") as tmp:
        os.environ["XDG_RUNTIME_DIR"] = str(Path(tmp) / "run")
        try:
            for number, storage in enumerate(STORAGES):
                work = Path(tmp) / storage
                work.mkdir()
                with rig(storage, work) as made:
                    for step, route in enumerate(routes):
                        done = (number * len(routes) + step) / (len(STORAGES) * len(routes))
                        ctx.progress.update(done, f"{STORAGES[storage]}, {ROUTES[route]}")
                        for flow, names in count_flows(made, route).items():
                            counts[storage, route, flow] = names
        finally:
            if before is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = before
    results = []
    for storage in (*STORAGES, "extra"):
        for route in ROUTES:
            for flow in FLOWS:
                results.append(_result(storage, route, flow, counts))
    return results


def figure(storage: str, route: str, flow: str) -> str:
    """The result id of one count (``extra``: without a persistent SRK less after tpm init)."""
    return f"roundtrips.{storage}.{route}.{flow}"


def _result(
    storage: str, route: str, flow: str, counts: dict[tuple[str, str, str], list[str]]
) -> Result:
    extra = storage == "extra"
    where = "no persistent SRK over after tpm init" if extra else STORAGES[storage]
    result = Result(
        id=figure(storage, route, flow),
        group=f"TPM commands per flow, {where}, {ROUTES[route]}",
        label=FLOWS[flow],
        unit="commands",
        higher_is_better=False,
        signed=extra,  # a difference: zero where the flow needs no primary
    )
    if (("srk" if extra else storage), route, flow) not in counts:
        result.status = SKIPPED
        result.note = "tpm2-abrmd (with libtss2-tcti-tabrmd0, dbus-daemon) is not installed"
    elif extra:
        more = len(counts["primary", route, flow]) - len(counts["srk", route, flow])
        result.samples = [float(more)]
    else:
        names = counts[storage, route, flow]
        result.samples = [float(len(names))]
        result.note = " ".join(names)
    return result


def _targets() -> tuple[Target, ...]:
    targets = [
        Target(f"{ROUTES[route]}, after tpm init: {flow}", figure("srk", route, flow),
               at_most=bound)
        for route, bounds in TARGETS.items()
        for flow, bound in bounds.items()
    ]  # fmt: skip
    # Without a persistent SRK: at most one command more (the primary's ContextLoad), directly.
    targets += [
        Target(f"{ROUTES['direct']}, no persistent SRK: {flow}, commands more",
               figure("extra", "direct", flow), at_most=1)
        for flow in FLOWS
    ]  # fmt: skip
    return tuple(targets)


CASES = (
    Case(
        id="roundtrips",
        title="TPM commands per user flow, directly and through tpm2-abrmd",
        figures=tuple(
            figure(storage, route, flow)
            for storage in (*STORAGES, "extra")
            for route in ROUTES
            for flow in FLOWS
        ),
        run=_run,
        targets=_targets(),
    ),
)
