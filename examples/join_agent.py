#!/usr/bin/env python3
"""A complete Entra join agent on entra_keys, run against a throwaway TPM and a stand-in Entra.

What a join agent does with its keys, in the order the service requires it:

1. make the device key and the transport key in the TPM;
2. prove they live there: an attestation key (AK) enrolled against the TPM's endorsement key
   (the service's MakeCredential, the TPM's ActivateCredential), then both keys certified by
   the AK over the service's nonces;
3. join: a CSR of the device key, the transport key and the attestation, with a DRS token;
4. get a PRT (its session key decrypted and kept inside the TPM), renew it, get an app token,
   sign the PRT cookie a browser sign-in carries;
5. make a Windows Hello key (PIN-protected) and get a PRT with it;
6. leave: the DELETE, over mutual TLS with the device certificate, then the local keys.

entra_keys builds every message and parses every reply; it does no HTTP. Here ``send`` hands
each request to ``entra_keys.testing.entra.EntraStandIn``, which answers as Entra does and
checks every signature and nonce. A real agent sends ``request.method`` to ``request.url`` with
``request.headers`` and ``request.body`` over TLS, and the leave over mutual TLS (the README's
"Leaving: mutual TLS").

The TPM is a swtpm started for the run (EK certificates from a local CA, which the stand-in
trusts) and stopped at the end, even if the script fails or is killed. Where swtpm or tpm2-pytss
(the ``tpm`` extra) is missing, the same flow runs on the software provider, which says so: its
keys are not hardware-backed and its attestation proves nothing.

Run it from the source tree: ``python examples/join_agent.py``; exit status 0 when every step
worked, 1 (and one ``join_agent: error:`` line) when one failed.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from cryptography import x509

from entra_keys import KeyStore, KeyType, KeyUsage, open_provider, protocol
from entra_keys.errors import EntraKeysError, ServiceError
from entra_keys.testing.entra import EntraStandIn
from entra_keys.testing.swtpm import Swtpm, swtpm_unusable_reason

TENANT = "contoso.example"
UPN, PASSWORD = "agent@contoso.example", "the user's password"
PIN = b"246810"  # the Windows Hello PIN the user chose
APP_ID = "1b730954-1685-4b74-9bfd-dac224a7b894"  # an app whose access token the user wants


def join_agent(work: Path) -> None:
    """The whole device side of a join, a PRT's life and a leave, with its keys under ``work``.

    The README's "In Python" is an excerpt of this function (tests/test_example.py checks that
    its every line is here, in order).
    """
    with ExitStack() as stack:  # what is started here is stopped at the end, whatever happens
        # A throwaway swtpm, and a stand-in Entra that trusts its EK CA; without swtpm or
        # tpm2-pytss, the software provider (which proves nothing about hardware).
        reason = swtpm_unusable_reason()
        if reason is None:
            tpm = stack.enter_context(Swtpm(work / "tpm"))
            provider = stack.enter_context(open_provider(require_hardware=True, tcti=tpm.tcti))
            entra = EntraStandIn.for_swtpm(tpm, users={UPN: PASSWORD})
        else:
            print(f"no swtpm for this run ({reason}); the software provider: no hardware")
            provider = stack.enter_context(open_provider("software"))
            entra = EntraStandIn.for_software(users={UPN: PASSWORD})
        store = KeyStore(provider, work / "keys")
        print(f"provider: {provider.kind}")

        def send(
            request: protocol.Request, client_certificate: x509.Certificate | None = None
        ) -> bytes:
            """The agent's HTTP client: here the stand-in answers (a TLS server would see the
            client certificate of a leave); a real one sends request.method to request.url."""
            return entra.handle(request, client_certificate=client_certificate)

        def fresh_nonce() -> str:
            """A nonce of the token service (srv_challenge): one per signed request."""
            return protocol.parse_nonce(send(protocol.nonce_request()))

        # 1. The keys, made in the TPM: their private halves never leave it.
        device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
        transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)

        # 2. Prove they live in this TPM. The service checks the EK certificate against the
        # TPM maker's CA and makes a credential only a TPM holding both the EK and the AK can
        # activate (MakeCredential); the TPM recovers its secret and the AK is enrolled.
        ak = store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST)
        ek = provider.endorsement_keys(KeyType.RSA2048)[0]  # the RSA EK alone: fewer reads
        blob, secret = entra.drs.enrollment_challenge(ek, ak.tpm_public)
        answer = provider.activate_credential(ak, ek, blob, secret)
        entra.drs.finish_enrollment(ak.tpm_public, answer)
        # The AK certifies each key over a DRS nonce: the keys' attestation, sent with the join.
        certified = {}
        for name, key in (("device", device), ("transport", transport)):
            drs_nonce = protocol.parse_drs_nonce(send(protocol.drs_nonce_request(TENANT)))
            certified[name] = provider.certify(key, ak, drs_nonce)
        attestation = entra.drs.attestation(
            ak.tpm_public, device_key=certified["device"], transport_key=certified["transport"]
        )

        # 3. The join, after the attestation: a CSR of the device key, the BCRYPT blob of the
        # transport key and the attestation, with a DRS token (from an interactive sign-in).
        join = protocol.registration_request(
            device,
            transport,
            access_token=entra.issue_access_token(UPN),
            domain=TENANT,
            display_name="linux-pc",
            os_version=protocol.os_release_version() or "Linux",
            extra_fields={"Attestation": attestation},
        )
        registration = protocol.parse_registration_response(send(join), device_key=device)
        store.save_join_state({**registration.join_state(tenant=TENANT), "session_key": "prt"})
        attested = entra.drs.devices[registration.device_id].attested
        print(f"joined: DeviceId {registration.device_id}, attested {attested}")

        # 4. The PRT: a JWT signed by the device key (RS256, x5c, kdf_ver 2); its session key,
        # decrypted by the transport key, stays in the TPM (stored as "prt").
        request = protocol.prt_request(
            device, registration.certificate, nonce=fresh_nonce(), username=UPN, password=PASSWORD
        )
        prt = protocol.parse_prt_response(send(request), transport, store, "prt")
        where = "the TPM" if prt.session.hardware_backed else "software"
        print(f"PRT: token_type {prt.token_type}, session key in {where}")

        # Session-key-signed requests (HS256, KDF v2): their replies are JWEs under the session
        # and nothing else is taken (the service's error object is a ServiceError). A renewal's
        # reply is AES-GCM: require_gcm refuses a CBC reply forged in its place.
        renew = protocol.refresh_prt_request(prt.session, prt.refresh_token, nonce=fresh_nonce())
        prt = protocol.parse_refresh_response(send(renew), prt.session, require_gcm=True)
        app = protocol.app_token_request(
            prt.session,
            prt.refresh_token,
            nonce=fresh_nonce(),
            client_id=APP_ID,
            resource="https://graph.microsoft.com",
        )
        tokens = protocol.parse_token_response(send(app), prt.session)
        cookie = protocol.prt_cookie(prt.session, prt.refresh_token, nonce=fresh_nonce())
        entra.verify_prt_cookie(cookie)  # x-ms-RefreshTokenCredential, as Entra checks it
        print(f"PRT renewed; access token for {tokens['resource']}; PRT cookie signed")

        # 5. Windows Hello: a PIN-protected key (the TPM counts wrong PINs toward lockout),
        # registered with a token carrying the ngcmfa claim; then a PRT by its assertion.
        ngc = store.create("ngc", KeyType.RSA2048, KeyUsage.SIGN, pin=PIN)
        token = entra.issue_access_token(UPN, amr=("pwd", "ngcmfa"))
        send(protocol.ngc_registration_request(ngc, access_token=token))
        nonce = fresh_nonce()
        assertion = protocol.ngc_assertion(ngc, upn=UPN, nonce=nonce)
        request = protocol.prt_request(
            device, registration.certificate, nonce=nonce, username=UPN, assertion=assertion
        )
        prt = protocol.parse_prt_response(send(request), transport, store, "prt", replace=True)
        print(f"Windows Hello: key {protocol.ngc_key_id(ngc)}; PRT by its assertion")

        # 6. Leave: DRS authenticates the DELETE by the TLS client certificate alone (the
        # device certificate, the device key as its key); then the store's keys go.
        send(protocol.leave_request(registration.device_id), registration.certificate)
        removed = store.leave()
        print(f"left: device deleted, {len(removed)} entries removed from the store")


def main() -> int:
    """Run the agent in a temporary directory; one error line and exit status 1 on failure."""
    try:
        with tempfile.TemporaryDirectory(prefix="join-agent-") as work:
            join_agent(Path(work))
    except ServiceError as exc:  # the service's own error object
        print(f"join_agent: error: the service refused: {exc.error}", file=sys.stderr)
        return 1
    except EntraKeysError as exc:
        print(f"join_agent: error: {exc}", file=sys.stderr)
        return 1
    print("done: joined, used the PRT and left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
