"""Every parser of what a peer sends, fuzzed until nothing but entra_keys' typed errors escapes.

``PARSERS`` enumerates them, each with the inputs Hypothesis draws: random bytes and text, and
documents near a valid one (members dropped, retyped, replaced by any JSON, strings cut and
spliced, segments of compact forms changed, bytes flipped), so that the fuzzing reaches past
the first check. To add a parser, add an entry. Every call must return or raise an
``EntraKeysError``; anything else (``ValueError``, ``KeyError``, ``OverflowError``, pyca's
exceptions) fails the test.

The default Hypothesis profile runs 100 examples per parser (the module in well under 20 s);
``HYPOTHESIS_PROFILE=extended`` runs 10,000. The parsers read bytes and text, not keys, so
they run against the software provider (a TPM would only make each decryption slower); the
TPM's side of the same replies is in ``test_trust_session``. ``tcg.nvcert.strict_der`` and
``attestation.verify_ak_certificate`` are fuzzed here too, each from the certificate that let
cryptography's UnsupportedAlgorithm or InvalidVersion out of it.

Last, each reply parser takes a 32 MiB reply in a process of its own, whose peak resident
memory (VmHWM) must stay a small multiple of the input: a limit checked before decoding.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import os
import struct
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

import entra_keys
from entra_keys import KeyStore, KeyType, KeyUsage, formats, open_provider
from entra_keys.errors import EntraKeysError
from entra_keys.protocol import (
    Registration,
    Request,
    app_token_request,
    drs_nonce_request,
    leave_request,
    ngc_assertion,
    ngc_registration_request,
    nonce_request,
    parse_drs_nonce,
    parse_nonce,
    parse_prt_response,
    parse_refresh_response,
    parse_registration_response,
    parse_token_response,
    prt_request,
    refresh_prt_request,
    registration_request,
)
from entra_keys.provider import EntraPrivateKey
from entra_keys.session import (
    PRTSession,
    decrypt_jwe,
    decrypt_response,
    import_session_key,
    parse_session_key_jwe,
    sign_request,
)
from entra_keys.tcg import records
from entra_keys.tcg.structures import TPMLPCRSelection
from entra_keys.testing.entra import EntraStandIn
from entra_keys.testing.token_service import TokenService

UPN = "u@contoso.com"
PASSWORD = "pw"
MiB = 1 << 20
DROP = object()  # a member that a near-valid document leaves out

# -- strategies -----------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def spliced(text: str) -> st.SearchStrategy[str]:
    """The text with a piece replaced: cut, spliced with base64 or any characters."""
    pieces = st.text(alphabet=B64 + B64URL + '.{}"\\ \x00é\ud800', max_size=4) | st.text(max_size=3)
    return st.builds(
        lambda at, length, piece: text[:at] + piece + text[at + length :],
        st.integers(0, len(text)),
        st.integers(0, 4),
        pieces,
    )


def near(valid: Any) -> st.SearchStrategy[Any]:
    """Values near ``valid``: itself, any JSON, and for objects each member kept, dropped or
    changed (recursively), with members added; for strings, spliced or digits; for strings
    holding a JSON object, that object changed and written back."""
    if isinstance(valid, dict):
        members = st.fixed_dictionaries(
            {name: near(value) | st.just(DROP) for name, value in valid.items()}
        )
        extra = st.dictionaries(st.text(max_size=6), JSON, max_size=2)
        changed = st.builds(
            lambda kept, added: {**added, **{k: v for k, v in kept.items() if v is not DROP}},
            members,
            extra,
        )
        return st.just(valid) | changed | changed | JSON
    if isinstance(valid, str):
        options = [
            st.just(valid),
            spliced(valid),
            JSON,
            st.from_regex(r"[0-9]{1,80}", fullmatch=True),
        ]
        try:
            inner = json.loads(valid)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            options.append(near(inner).map(json.dumps))
        return st.one_of(options)
    if isinstance(valid, list):
        return (
            st.just(valid) | st.lists(JSON, max_size=3) | st.lists(near(valid[0]), max_size=2)
            if valid
            else JSON
        )
    return st.just(valid) | JSON


def flipped(data: bytes) -> st.SearchStrategy[bytes]:
    """The bytes with one byte changed, cut short, or extended."""
    if not data:
        return st.binary(max_size=8)
    return st.one_of(
        st.builds(
            lambda at, value: data[:at] + bytes([value]) + data[at + 1 :],
            st.integers(0, len(data) - 1),
            st.integers(0, 255),
        ),
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.binary(min_size=1, max_size=8).map(lambda extra: data + extra),
    )


def written(documents: st.SearchStrategy[Any], *, mapping: bool) -> st.SearchStrategy[Any]:
    """Documents as a parser takes them: JSON text, its UTF-8 bytes (or those bytes changed),
    and, where the parser takes one, the mapping itself; and random bytes or text."""

    def dumps(doc: Any) -> str:
        return json.dumps(doc, allow_nan=False)

    forms = [
        documents.map(dumps),
        documents.map(lambda doc: dumps(doc).encode()),
        documents.map(lambda doc: dumps(doc).encode()).flatmap(flipped),
        st.binary(max_size=64),
        st.text(max_size=64),
    ]
    if mapping:
        forms.append(documents.filter(lambda doc: isinstance(doc, dict)))
    return st.one_of(forms)


def segments_near(token: str) -> st.SearchStrategy[str]:
    """A compact JOSE form near ``token``: one segment replaced (random base64url, random
    text, or its decoded JSON changed and re-encoded), segments added or dropped, or spliced."""
    parts = token.split(".")

    def replace(index: int, value: str) -> str:
        return ".".join([*parts[:index], value, *parts[index + 1 :]])

    options = [
        st.just(token),
        spliced(token),
        st.builds(replace, st.integers(0, len(parts) - 1), st.text(alphabet=B64URL, max_size=40)),
        st.builds(replace, st.integers(0, len(parts) - 1), st.text(max_size=8)),
        st.integers(0, len(parts) + 1).map(lambda n: ".".join((parts * 2)[:n])),
    ]
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        header = None
    if isinstance(header, dict):
        options.append(near(header).map(lambda doc: replace(0, _b64url(json.dumps(doc).encode()))))
    return st.one_of(options)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- the peers: a joined device, its PRT, the services --------------------------------------


@dataclasses.dataclass
class Peers:
    """What the parsers need, made once for the module: a software device joined to a
    stand-in Entra, its PRT and session, valid replies and documents to start from."""

    tmp: Path
    store: KeyStore
    device: EntraPrivateKey
    transport: EntraPrivateKey
    registration: Registration
    entra: EntraStandIn
    session: PRTSession
    service: TokenService
    prt_reply: dict[str, Any]
    renewal: dict[str, Any]
    tokens: dict[str, Any]
    join_reply: dict[str, Any]
    join_body: dict[str, Any]
    records: dict[str, dict[str, Any]]
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    def nonce(self) -> str:
        return parse_nonce(self.entra.handle(nonce_request()))


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Peers:
    tmp = tmp_path_factory.mktemp("fuzz")
    provider = open_provider("software")
    store = KeyStore(provider, tmp / "store")
    device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)
    transport = store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    entra = EntraStandIn(users={UPN: PASSWORD})
    join = registration_request(
        device, transport, access_token=entra.issue_access_token(UPN), domain="contoso.com",
        display_name="pc", os_version="13",
    )  # fmt: skip
    join_reply = json.loads(entra.handle(join))
    registration = parse_registration_response(join_reply, device_key=device)
    nonce = parse_nonce(entra.handle(nonce_request()))
    reply = json.loads(entra.handle(prt_request(device, registration.certificate, nonce=nonce,
                                                username=UPN, password=PASSWORD)))  # fmt: skip
    prt = parse_prt_response(reply, transport, store, "prt")
    service = entra.prts[prt.refresh_token].session
    ak = store.create("ak", KeyType.ECC256, KeyUsage.ATTEST)
    docs = {
        "quote": json.loads(records.quote_to_json(provider.quote(ak, [0, 7], b"n" * 16))),
        "certification": json.loads(
            records.certification_to_json(provider.certify(device, ak, b"n" * 16))
        ),
        "endorsement_key": json.loads(
            records.endorsement_key_to_json(provider.endorsement_keys()[0])
        ),
    }
    tgt = json.loads(reply["tgt_cloud"])
    return Peers(
        tmp=tmp,
        store=store,
        device=device,
        transport=transport,
        registration=registration,
        entra=entra,
        session=prt.session,
        service=service,
        prt_reply=reply,
        renewal={
            "token_type": "pop",
            "refresh_token": "0.r",
            "refresh_token_expires_in": 60,
            "id_token": "e30.e30.",
            "expires_on": "1700000000",
            "tgt_cloud": json.dumps(tgt),
            "session_key_jwe": reply["session_key_jwe"],
        },
        tokens={
            "access_token": "eyJ0.at",
            "token_type": "Bearer",
            "expires_in": "3599",
            "ext_expires_in": 3599,
            "not_before": "1700000000",
            "refresh_token": "r",
        },
        join_reply=join_reply,
        join_body=json.loads(join.body),
        records=docs,
        rsa_key=rsa.generate_private_key(65537, 2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
    )


# -- the parsers ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Parser:
    """How to draw inputs for one parser (given the peers) and how to call it on one."""

    inputs: Callable[[Peers], st.SearchStrategy[Any]]
    call: Callable[[Peers, Any], object]


def _reply(peers: Peers, doc: Any, mode: Any) -> Any:
    """An encrypted reply holding ``doc``: what the session would open."""
    return peers.service.encrypt_response(json.dumps(doc).encode(), mode=mode)


def _encrypted(peers: Peers, valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    modes = st.sampled_from(["gcm", "cbc"])
    return st.one_of(
        st.builds(lambda doc, mode: _reply(peers, doc, mode), near(valid), modes),
        written(near(valid), mapping=False),
        st.builds(lambda doc, mode: _reply(peers, doc, mode), near(valid), modes).flatmap(
            segments_near
        ),
    )


def _jwe_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    gcm = peers.service.encrypt_response(b'{"a":1}', mode="gcm")
    cbc = peers.service.encrypt_response(b"k" * 32, mode="cbc")
    return st.one_of(segments_near(gcm), segments_near(cbc), st.text(max_size=80),
                     st.binary(max_size=80))  # fmt: skip


def _jws(peers: Peers, key: Any, alg: str) -> str:
    return formats.jws_sign(key, {"sub": "x", "n": 1}, alg, {"typ": "JWT"})


def _jwk_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    return near(formats.jwk(peers.rsa_key)) | near(formats.jwk(peers.ec_key)) | JSON


def _bcrypt_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    blob = formats.bcrypt_rsakey_blob(peers.rsa_key)
    return flipped(blob) | st.binary(max_size=300) | flipped(blob).flatmap(flipped)


def _public_key_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    pem, der = formats.public_pem(peers.ec_key), formats.public_der(peers.rsa_key)
    return flipped(pem) | flipped(der) | st.binary(max_size=200) | flipped(der).flatmap(flipped)


def _session_key_jwe_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    jwe = peers.prt_reply["session_key_jwe"]
    parts = jwe.split(".")
    other_key = ".".join([parts[0], _b64url(os.urandom(256)), *parts[2:]])
    return segments_near(jwe) | segments_near(other_key) | st.text(max_size=60)


def _handle(peers: Peers, value: tuple[str, Request]) -> object:
    return peers.entra.handle(value[1])


def _fresh_requests(peers: Peers) -> dict[str, Callable[[], Request]]:
    """Valid requests of every kind, each built when drawn (a fresh nonce, a live PRT)."""
    cert = peers.registration.certificate

    def prt() -> Request:
        return prt_request(peers.device, cert, nonce=peers.nonce(), username=UPN,
                           password=PASSWORD)  # fmt: skip

    def own() -> str:  # the PRT whose session key is the peers' (a renewal keeps it)
        return next(t for t, prt in peers.entra.prts.items() if prt.session is peers.service)

    def renew() -> Request:
        return refresh_prt_request(peers.session, own(), nonce=peers.nonce())

    def app() -> Request:
        token = own()
        return app_token_request(peers.session, token, nonce=peers.nonce(), client_id="a",
                                 resource="r")  # fmt: skip

    def join() -> Request:
        return registration_request(
            peers.device, peers.transport, access_token=peers.entra.issue_access_token(UPN),
            domain="contoso.com", display_name="pc", os_version="13",
        )  # fmt: skip

    def ngc() -> Request:
        token = peers.entra.issue_access_token(UPN, amr=("pwd", "ngcmfa"))
        return ngc_registration_request(peers.rsa_key, access_token=token)

    def ngc_prt() -> Request:
        nonce = peers.nonce()
        assertion = ngc_assertion(peers.rsa_key, upn=UPN, nonce=nonce)
        return prt_request(peers.device, cert, nonce=nonce, username=UPN, assertion=assertion)

    return {
        "nonce": nonce_request,
        "drs-nonce": lambda: drs_nonce_request("contoso.com"),
        "prt": prt,
        "renew": renew,
        "app": app,
        "join": join,
        "ngc": ngc,
        "ngc-prt": ngc_prt,
        "leave": lambda: leave_request(str(uuid.uuid4())),
    }


def _mutated_request(peers: Peers, kind: str, data: st.DataObject) -> Request:
    """A fresh valid request of ``kind`` with one part drawn near its value: a form field
    (the JWT's segments, or its claims re-signed by the device key), the JSON body, a header,
    the URL, the method."""
    request = _fresh_requests(peers)[kind]()
    try:
        return _mutate(peers, request, data)
    except EntraKeysError:  # a builder refused the change (surrogates, a mismatched alg)
        return request


def _mutate(peers: Peers, request: Request, data: st.DataObject) -> Request:
    what = data.draw(st.sampled_from(["as-is", "body", "field", "claims", "header", "url",
                                      "method"]))  # fmt: skip
    if what == "body":
        if request.headers.get("Content-Type") == "application/json":
            doc = data.draw(near(json.loads(request.body)))
            body = json.dumps(doc).encode()
        else:
            body = data.draw(flipped(request.body))
        return dataclasses.replace(request, body=body)
    if what in ("field", "claims") and request.body and b"=" in request.body:
        fields = dict(urllib.parse.parse_qsl(request.body.decode()))
        name = data.draw(st.sampled_from(sorted(fields)))
        if what == "claims" and name == "request":
            claims = json.loads(base64.urlsafe_b64decode(fields[name].split(".")[1] + "=="))
            header = json.loads(base64.urlsafe_b64decode(fields[name].split(".")[0] + "=="))
            claims = data.draw(near(claims).filter(lambda c: isinstance(c, dict)))
            header = data.draw(near(header).filter(lambda h: isinstance(h, dict)))
            if header.get("alg") == "HS256":
                fields[name] = sign_request(peers.session.key, claims)
            else:
                header.pop("alg", None)
                fields[name] = formats.jws_sign(peers.device, claims, "RS256", header)
        elif name == "request":
            fields[name] = data.draw(segments_near(fields[name]))
        else:
            fields[name] = data.draw(spliced(fields[name]))
        body = urllib.parse.urlencode(fields, errors="surrogatepass").encode()
        return dataclasses.replace(request, body=body)
    if what == "header":
        headers = dict(request.headers)
        name = data.draw(st.sampled_from(["Content-Type", "Authorization", "Accept"]))
        headers[name] = data.draw(spliced(headers.get(name, "")))
        return dataclasses.replace(request, headers=headers)
    if what == "url":
        return dataclasses.replace(request, url=data.draw(spliced(request.url)))
    if what == "method":
        return dataclasses.replace(request, method=data.draw(st.sampled_from(
            ["GET", "POST", "DELETE", "PUT", ""])))  # fmt: skip
    return request


def _request_inputs(peers: Peers) -> st.SearchStrategy[Any]:
    kinds = sorted(_fresh_requests(peers))
    built = st.builds(
        lambda kind, data: (kind, _mutated_request(peers, kind, data)),
        st.sampled_from(kinds),
        st.data(),
    )
    raw = st.builds(
        lambda method, url, kind, body: ("raw", Request(method, url, {"Content-Type": kind}, body)),
        st.sampled_from(["GET", "POST", "DELETE"]),
        st.sampled_from([nonce_request().url, drs_nonce_request("contoso.com").url,
                         "https://enterpriseregistration.windows.net/EnrollmentServer/device/"
                         "?api-version=2.0", "http://[::1", "https://login.microsoftonline.com/"
                         "%ff/oauth2/token"]) | st.text(max_size=40),
        st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]),
        st.binary(max_size=80),
    )  # fmt: skip
    return built | raw


def _prt_request_tokens(peers: Peers) -> st.SearchStrategy[Any]:
    request = prt_request(peers.device, peers.registration.certificate, nonce="n",
                          username=UPN, password=PASSWORD)  # fmt: skip
    token = dict(urllib.parse.parse_qsl(request.body.decode()))["request"]
    return segments_near(token) | st.text(max_size=60)


def _hs256_tokens(peers: Peers) -> st.SearchStrategy[Any]:
    token = sign_request(peers.session.key, {"refresh_token": "r", "request_nonce": "n"})

    def signed(claims: dict[str, Any]) -> str:
        try:
            return sign_request(peers.session.key, claims)
        except EntraKeysError:  # claims that cannot be sent (a lone surrogate)
            return token

    resigned = (
        near({"refresh_token": "r", "request_nonce": "n", "n": 1})
        .filter(lambda c: isinstance(c, dict))
        .map(signed)
    )
    return segments_near(token) | resigned | st.text(max_size=60)


def _records(kind: str) -> Callable[[Peers], st.SearchStrategy[Any]]:
    return lambda peers: written(near(peers.records[kind]), mapping=True)


PARSERS: dict[str, Parser] = {
    # protocol: the replies Entra sends in the clear
    "parse_nonce": Parser(
        lambda p: written(near({"Nonce": "AwABAAAA"}), mapping=True), lambda p, v: parse_nonce(v)
    ),
    "parse_drs_nonce": Parser(
        lambda p: written(near({"Value": "AAECAwQFBgcICQoLDA0ODw=="}), mapping=True),
        lambda p, v: parse_drs_nonce(v),
    ),
    "parse_registration_response": Parser(
        lambda p: written(near(p.join_reply), mapping=True),
        lambda p, v: parse_registration_response(v, device_key=p.device),
    ),
    "Registration.from_join_state": Parser(
        lambda p: near(p.registration.join_state(tenant="contoso.com")),
        lambda p, v: Registration.from_join_state(v),
    ),
    "parse_prt_response": Parser(
        lambda p: written(near(p.prt_reply), mapping=True),
        lambda p, v: parse_prt_response(v, p.transport, p.store, "fuzzed", replace=True),
    ),
    # protocol: the replies the session encrypts
    "parse_refresh_response": Parser(
        lambda p: _encrypted(p, p.renewal),
        lambda p, v: parse_refresh_response(v, p.session, transport_key=p.transport),
    ),
    "parse_token_response": Parser(
        lambda p: _encrypted(p, p.tokens), lambda p, v: parse_token_response(v, p.session)
    ),
    # session
    "parse_session_key_jwe": Parser(_session_key_jwe_inputs, lambda p, v: parse_session_key_jwe(v)),
    "import_session_key": Parser(
        _session_key_jwe_inputs,
        lambda p, v: import_session_key(p.store.provider, p.transport, v),
    ),
    "decrypt_response": Parser(
        lambda p: _jwe_inputs(p) | written(near(p.tokens), mapping=False),
        lambda p, v: decrypt_response(p.session.key, v),
    ),
    "decrypt_response(require_gcm)": Parser(
        _jwe_inputs, lambda p, v: decrypt_response(p.session.key, v, require_gcm=True)
    ),
    "decrypt_jwe": Parser(
        lambda p: _jwe_inputs(p).filter(lambda v: isinstance(v, str)),
        lambda p, v: decrypt_jwe(p.session.key, v, size=32),
    ),
    # formats
    "jws_verify": Parser(
        lambda p: st.one_of(
            segments_near(_jws(p, p.rsa_key, "RS256")),
            segments_near(_jws(p, p.ec_key, "ES256")),
            st.text(max_size=60),
        ),
        lambda p, v: [
            formats.jws_verify(v, key, ["RS256", "PS256", "ES256"])
            for key in (p.rsa_key.public_key(), p.ec_key.public_key())
        ],
    ),
    "public_key_from_jwk": Parser(_jwk_inputs, lambda p, v: formats.public_key_from_jwk(v)),
    "public_key_from_bcrypt": Parser(
        _bcrypt_inputs, lambda p, v: formats.public_key_from_bcrypt(v)
    ),
    "load_public_key": Parser(_public_key_inputs, lambda p, v: formats.load_public_key(v)),
    # tcg.records
    "quote_from_json": Parser(_records("quote"), lambda p, v: records.quote_from_json(v)),
    "certification_from_json": Parser(
        _records("certification"), lambda p, v: records.certification_from_json(v)
    ),
    "endorsement_key_from_json": Parser(
        _records("endorsement_key"), lambda p, v: records.endorsement_key_from_json(v)
    ),
    # the stand-ins
    "EntraStandIn.handle": Parser(_request_inputs, _handle),
    "RegistrationService.register": Parser(
        lambda p: near(p.join_body), lambda p, v: p.entra.drs.register(v)
    ),
    "RegistrationService.verify_prt_request": Parser(
        _prt_request_tokens, lambda p, v: p.entra.drs.verify_prt_request(v)
    ),
    "TokenService.verify_request": Parser(_hs256_tokens, lambda p, v: p.service.verify_request(v)),
}


_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {}  # built once per parser (peers is too)


@pytest.mark.parametrize("name", PARSERS)
@given(data=st.data())
def test_only_typed_errors_escape(peers: Peers, name: str, data: st.DataObject) -> None:
    parser = PARSERS[name]
    if name not in _STRATEGIES:
        _STRATEGIES[name] = parser.inputs(peers)
    value = data.draw(_STRATEGIES[name], label=name)
    with contextlib.suppress(EntraKeysError):  # anything else fails the test
        parser.call(peers, value)


def test_every_reply_parser_of_the_package_is_fuzzed() -> None:
    """A parse_* function added to the protocol or session modules fails this until it has an
    entry above."""
    from entra_keys import protocol, session

    names = {n for module in (protocol, session) for n in module.__all__ if n.startswith("parse_")}
    assert names <= set(PARSERS), names - set(PARSERS)


# -- EK and AK certificates (the real-hardware work fixed both) -----------------------------


def _certificate(version_byte: int = 2, key_oid: bytes | None = None) -> bytes:
    """A self-signed P-256 certificate's DER, its version or key algorithm changed."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ak")])
    der = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    der = der.replace(
        bytes.fromhex("a003020102"), bytes.fromhex("a0030201") + bytes([version_byte])
    )
    if key_oid is not None:  # id-ecPublicKey, 1.2.840.10045.2.1, becomes another OID
        der = der.replace(bytes.fromhex("06072a8648ce3d0201"), key_oid)
    return der


CERTIFICATE = _certificate()
#: An unknown key algorithm (1.2.840.10045.2.127): cryptography's UnsupportedAlgorithm.
UNKNOWN_KEY_ALGORITHM = _certificate(key_oid=bytes.fromhex("06072a8648ce3d027f"))
#: Version 6 (the field says 5): cryptography's x509.InvalidVersion.
INVALID_VERSION = _certificate(version_byte=5)


@given(der=flipped(CERTIFICATE) | st.binary(max_size=64))
@example(der=UNKNOWN_KEY_ALGORITHM)
def test_strict_der_lets_only_typed_errors_out(der: bytes) -> None:
    """An EK certificate in NV with an unknown key algorithm let UnsupportedAlgorithm out of
    ``strict_der`` (and so out of the provider's NV read)."""
    from entra_keys.tcg.nvcert import strict_der

    with contextlib.suppress(EntraKeysError):
        strict_der(der)


@given(der=flipped(CERTIFICATE) | st.binary(max_size=64))
@example(der=INVALID_VERSION)
def test_verify_ak_certificate_lets_only_typed_errors_out(der: bytes) -> None:
    """An AK certificate whose version field is 5 let x509.InvalidVersion out."""
    from entra_keys.attestation.ekcert import verify_ak_certificate

    anchor = x509.load_der_x509_certificate(CERTIFICATE)
    key = anchor.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    with contextlib.suppress(EntraKeysError):
        verify_ak_certificate(der, key, [anchor])


# -- memory: a 32 MiB reply -----------------------------------------------------------------

# For each parser named, in a child process of its own: builds a reply of the given size, resets
# the peak to the present (the reply held), parses, notes VmHWM again, and prints both with
# what the parser raised; so each peak is that parser's alone.
_MEASURE = r"""
import json, os, sys, tempfile
from entra_keys import KeyStore, KeyType, KeyUsage, open_provider
from entra_keys import formats, protocol, session
from entra_keys.tcg import records
from entra_keys.testing.token_service import TokenService

def peak():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))

names, size = sys.argv[1].split(","), int(sys.argv[2])
store = KeyStore(open_provider("software"), tempfile.mkdtemp() + "/s")
transport = store.create("t", KeyType.RSA2048, KeyUsage.DECRYPT)
service = TokenService()
jwe = service.session_key_jwe(transport.public_key())
prt = session.PRTSession.create(store, "p", transport, jwe)
head = service.encrypt_response(b"{}").split(".")[0]
public = transport.public_key()

def member(name):
    return ('{"' + name + '":"' + "A" * (size - len(name) - 6) + '"}').encode()

def jwe():
    return f"{head}..AAAAAAAAAAAAAAAA.{'A' * (size - len(head) - 64)}."

inputs = {  # each reply built only when its parser is measured
    "parse_prt_response": (lambda: member("refresh_token"),
        lambda b: protocol.parse_prt_response(b, transport, store, "x")),
    "parse_refresh_response": (lambda: jwe().encode(),
        lambda b: protocol.parse_refresh_response(b, prt)),
    "parse_token_response": (lambda: jwe().encode(),
        lambda b: protocol.parse_token_response(b, prt)),
    "parse_registration_response": (
        lambda: ('{"Certificate":{"RawBody":"' + "A" * (size - 30) + '"}}').encode(),
        protocol.parse_registration_response),
    "parse_nonce": (lambda: member("Nonce"), protocol.parse_nonce),
    "parse_drs_nonce": (lambda: member("Value"), protocol.parse_drs_nonce),
    "decrypt_response": (lambda: jwe().encode(), prt.decrypt_response),
    "decrypt_jwe": (jwe, prt.decrypt_jwe),
    "parse_session_key_jwe": (jwe, session.parse_session_key_jwe),
    "jws_verify": (lambda: f"{head}.{'A' * (size - len(head) - 30)}.AAAA",
        lambda t: formats.jws_verify(t, public, ["RS256"])),
    "quote_from_json": (lambda: member("attest"), records.quote_from_json),
}
def measure(name):
    build, call = inputs[name]
    body = build()
    with open("/proc/self/clear_refs", "w") as refs:  # VmHWM := VmRSS: the input is built
        refs.write("5")
    before = peak()
    try:
        call(body)
        raised = None
    except Exception as exc:
        raised = type(exc).__name__
    return {"before": before, "after": peak(), "size": len(body), "raised": raised}

wanted = size
for name in names:  # each parser once on a small reply: what it imports lazily is loaded here
    size = 4096
    try:
        inputs[name][1](inputs[name][0]())
    except Exception:
        pass
size = wanted
for name in names:  # each parser in a process of its own, forked from this prepared one
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        os.write(writer, json.dumps(measure(name)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as result:
        print(name, result.read(), flush=True)
    os.waitpid(child, 0)
"""

REPLY_PARSERS = [
    "parse_prt_response",
    "parse_refresh_response",
    "parse_token_response",
    "parse_registration_response",
    "parse_nonce",
    "parse_drs_nonce",
    "decrypt_response",
    "decrypt_jwe",
    "parse_session_key_jwe",
    "jws_verify",
    "quote_from_json",
]


def measure(names: list[str], size: int) -> dict[str, dict[str, Any]]:
    """VmHWM before and after each parser takes a reply of ``size`` bytes, each in a process
    of its own (forked from one that imported entra_keys and made a session once)."""
    src = str(Path(entra_keys.__file__).parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, ",".join(names), str(size)],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "PYTHONPATH": src},
    )  # fmt: skip
    lines = (line.split(" ", 1) for line in done.stdout.splitlines())
    return {name: json.loads(found) for name, found in lines}


@pytest.fixture(scope="module")
def peaks() -> dict[str, dict[str, Any]]:
    """Every reply parser's measure of a 32 MiB reply."""
    return measure(REPLY_PARSERS, 32 * MiB)


@pytest.mark.parametrize("name", REPLY_PARSERS)
def test_a_32_mib_reply_is_refused_in_memory_linear_in_its_size(
    peaks: dict[str, dict[str, Any]], name: str
) -> None:
    """A 32 MiB PRT or join reply peaked at ~1.1 GiB (a regex over the whole text); each
    reply parser now refuses it by its size before decoding, as InvalidData, and the
    process's peak grows by less than the input again."""
    found = peaks[name]
    assert found["raised"] == "InvalidData", found
    growth = found["after"] - found["before"]
    assert growth < found["size"], f"{name}: {growth / MiB:.1f} MiB over {found}"


# -- wire structures: what parses is written back as it came --------------------------------


@given(
    data=st.builds(
        lambda banks: struct.pack(">I", len(banks)) + b"".join(banks),
        st.lists(
            st.builds(
                lambda alg, select: struct.pack(">HB", alg, len(select)) + select,
                st.sampled_from([0x0004, 0x000B, 0x000C, 0x000D]),
                st.binary(max_size=4),
            ),
            max_size=3,
        ),
    )
    | st.binary(max_size=24)
)
@example(data=bytes.fromhex("00000001000b00"))  # sizeofSelect 0: written back with size 3 before
def test_a_pcr_selection_is_written_back_as_it_was_read(data: bytes) -> None:
    with contextlib.suppress(EntraKeysError):
        assert TPMLPCRSelection.parse(data).to_bytes() == data
