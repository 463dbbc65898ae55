"""Trust in encrypted responses: no padding oracle, only JSON objects, and a size limit.

An attacker who can alter AES-CBC responses (their tag is not checked) and watch how
``decrypt_response`` fails could decrypt them a block at a time if bad padding and bad content
failed differently. Here the attack is run for real, over both providers, and every failure must
be the one DecryptionError with the one message. The test's side encrypts with the token-service
stand-in's keys (pyca's KBKDF), never with the code under test.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import pickle
import statistics
import sys
import threading
import time
import tracemalloc
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from entra_keys import KeyStore, KeyType, KeyUsage
from entra_keys import session as session_module
from entra_keys._json import b64url_decode, b64url_encode
from entra_keys.cli import CommandError
from entra_keys.cli.common import read_input as _read_bounded
from entra_keys.errors import DecryptionError, EntraKeysError, InvalidData, ServiceError
from entra_keys.protocol import parse_token_response
from entra_keys.provider import EntraPrivateKey
from entra_keys.session import MAX_RESPONSE_SIZE, PRTSession, decrypt_response
from entra_keys.testing.token_service import TokenService

from .contract.providers import open_apart, option_kind
from .helpers import cached_key
from .test_cli import Cli, one_error_line

# 57 bytes: 4 blocks with 7 bytes of padding, so the tampered 0x01 pad is never the original's.
RESPONSE = b'{"refresh_token":"0.AXkA-secret","id_token":"eyJ0.e30.x"}'
MiB = 1 << 20
Failure = tuple[type[BaseException], str]


# -- the service's side ---------------------------------------------------------------------


def _ctx(token: str) -> bytes:
    header = json.loads(b64url_decode(token.split(".")[0]))
    return base64.b64decode(header["ctx"], validate=True)


def assemble(head: str, iv: bytes, ciphertext: bytes, tag: bytes) -> str:
    """A compact ``dir`` JWE from its header segment and raw parts."""
    return ".".join([head, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag)])


def raw_parts(token: str) -> tuple[str, bytes, bytes, bytes]:
    """The header segment and the decoded IV, ciphertext and tag of a compact JWE."""
    head, _, iv, ciphertext, tag = token.split(".")
    return head, b64url_decode(iv), b64url_decode(ciphertext), b64url_decode(tag)


def seal_cbc_blocks(service: TokenService, blocks: bytes) -> str:
    """AES-CBC over ``blocks`` exactly (no padding added), with the service's derived key."""
    template = service.encrypt_response(b"{}", mode="cbc")
    head = template.split(".")[0]
    iv = os.urandom(16)
    key = service.derived_key(_ctx(template), kdf_version=1)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return assemble(head, iv, encryptor.update(blocks) + encryptor.finalize(), b"")


def padding_is_valid(service: TokenService, token: str) -> bool:
    """Whether the CBC plaintext of ``token`` has valid PKCS#7 padding (pyca, service side)."""
    _, iv, ciphertext, _ = raw_parts(token)
    key = service.derived_key(_ctx(token), kdf_version=1)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    try:
        unpadder.update(padded)
        unpadder.finalize()
    except ValueError:
        return False
    return True


# -- the device's side ----------------------------------------------------------------------


@pytest.fixture
def service() -> TokenService:
    return TokenService()


@pytest.fixture
def prt(store: KeyStore, transport_key: EntraPrivateKey, service: TokenService) -> PRTSession:
    """The service's session key, imported into the provider under test. These tests ask for
    every answer an oracle would give, so the session's CBC lockout (tested on its own) is off."""
    session = PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )
    session.cbc_failure_limit = 1 << 30
    return session


def public(key: EntraPrivateKey) -> rsa.RSAPublicKey:
    found = key.public_key()
    assert isinstance(found, rsa.RSAPublicKey)
    return found


def failure(call: Callable[[], object]) -> Failure:
    """The type and message of the EntraKeysError ``call`` raises, which must be unchained."""
    with pytest.raises(EntraKeysError) as caught:
        call()
    exc = caught.value
    # A chained exception would tell the stage that failed (in a traceback, a debug log).
    assert exc.__cause__ is None and exc.__context__ is None, repr(exc.__context__)
    return type(exc), str(exc)


def reference_failure(prt: PRTSession) -> Failure:
    """How a response sealed with another session key fails: what every failure must match."""
    found = failure(lambda: prt.decrypt_response(TokenService().encrypt_response(RESPONSE)))
    assert found[0] is DecryptionError
    assert "does not decrypt" in found[1]
    return found


# -- (a) one failure, whatever went wrong ---------------------------------------------------


def test_cbc_padding_oracle_attack_sees_one_failure(prt: PRTSession, service: TokenService) -> None:
    """All 256 values of the last byte of the previous block, and of the IV before one block:
    some give valid padding and bad JSON, the others bad padding; none can be told apart."""
    expected = reference_failure(prt)
    token = service.encrypt_response(RESPONSE, mode="cbc")
    head, iv, ciphertext, tag = raw_parts(token)
    assert len(ciphertext) == 64 and 16 - len(RESPONSE) % 16 == 7
    seen: set[Failure] = set()
    padding_results: list[bool] = []
    with prt.loaded():
        assert prt.decrypt_response(token, allow_cbc=True) == RESPONSE
        for guess in range(256):
            # The full response, with the second-to-last block's last byte set to `guess`.
            forged = bytearray(ciphertext)
            forged[-17] = guess
            if bytes(forged) != ciphertext:
                body = assemble(head, iv, bytes(forged), tag)
                padding_results.append(padding_is_valid(service, body))
                seen.add(failure(functools.partial(prt.decrypt_response, body, allow_cbc=True)))
            # The classic form: one target block, decrypted against a chosen IV.
            chosen_iv = iv[:-1] + bytes([guess])
            body = assemble(head, chosen_iv, ciphertext[:16], tag)
            padding_results.append(padding_is_valid(service, body))
            seen.add(failure(functools.partial(prt.decrypt_response, body, allow_cbc=True)))
    assert len(padding_results) == 511
    # The attack reached both sides of the old oracle: good padding (then bad JSON) and bad.
    assert any(padding_results) and not all(padding_results)
    assert seen == {expected}


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_tampered_tags_and_lengths_are_the_same_failure(
    prt: PRTSession, service: TokenService
) -> None:
    expected = reference_failure(prt)
    seen: set[Failure] = set()
    gcm = service.encrypt_response(RESPONSE, mode="gcm")
    cbc = service.encrypt_response(RESPONSE, mode="cbc")
    head, iv, ciphertext, tag = raw_parts(gcm)
    chead, civ, cciphertext, ctag = raw_parts(cbc)
    bodies = [assemble(head, iv, ciphertext, _flip(tag, n)) for n in range(16)]
    bodies += [
        assemble(head, iv, ciphertext, tag[:12]),  # short tag
        assemble(head, iv, ciphertext, b""),  # no tag
        assemble(head, iv, ciphertext, tag + b"\x00"),  # long tag
        assemble(head, iv, _flip(ciphertext, 0), tag),
        assemble(head, iv, ciphertext[:-1], tag),
        assemble(head, _flip(iv, 11), ciphertext, tag),
        assemble(chead, civ, cciphertext[:-1], ctag),  # not whole blocks
        assemble(chead, civ, cciphertext + b"\x00", ctag),
        assemble(chead, civ, b"", ctag),  # no ciphertext
        assemble(chead, civ, cciphertext[16:], ctag),  # first block dropped: JSON broken
    ]
    bodies += [assemble(chead, os.urandom(n), cciphertext, ctag) for n in (0, 1, 8, 11, 13, 15, 17)]
    with prt.loaded():
        for body in bodies:
            seen.add(failure(functools.partial(prt.decrypt_response, body, allow_cbc=True)))
    assert seen == {expected}


NOT_OBJECTS = {
    "not-json": b"not json at all",
    "list": b'[{"a":1},2]',
    "string": b'"{\\"a\\":1}"',
    "number": b"42",
    "null": b"null",
    "empty": b"",
    "invalid-utf8": b'{"a":"\xff\xfe"}',
    "latin-1": '{"é":1}'.encode("latin-1"),
    "utf-16": '{"a":1}'.encode("utf-16"),
    "utf-8-bom": b'\xef\xbb\xbf{"a":1}',
    "trailing-data": b'{"a":1} x',
    "two-objects": b'{"a":1}{"b":2}',
    "duplicate-member": b'{"a":1,"a":2}',
    "nan": b'{"a":NaN}',
    "too-deep": b"[" * 100_000,
    "too-deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
}


@pytest.mark.parametrize("mode", ["cbc", "gcm"])
def test_plaintexts_that_are_not_json_objects_are_the_same_failure(
    prt: PRTSession, service: TokenService, mode: Literal["cbc", "gcm"]
) -> None:
    """Cleanly encrypted with the right key, but not a JSON object: the same failure as a
    wrong key, as bad padding, as a bad tag."""
    expected = reference_failure(prt)
    seen: set[Failure] = set()
    with prt.loaded():
        for plaintext in NOT_OBJECTS.values():
            body = service.encrypt_response(plaintext, mode=mode)
            seen.add(failure(functools.partial(prt.decrypt_response, body, allow_cbc=True)))
        if mode == "cbc":
            # A JSON object under bad padding (0x03 0x02 0x03): the padding alone must fail it.
            blocks = b'{"a":"bcdef"}\x03\x02\x03'
            assert len(blocks) == 16
            seen.add(
                failure(
                    lambda: prt.decrypt_response(seal_cbc_blocks(service, blocks), allow_cbc=True)
                )
            )
            good = seal_cbc_blocks(service, b'{"a":"bcdef"}\x03\x03\x03')
            assert prt.decrypt_response(good, allow_cbc=True) == b'{"a":"bcdef"}'
    assert seen == {expected}


# -- (a1) the JSON-format oracle: whether a CBC reply opens ---------------------------------

# An app-token reply as Entra sends it (CBC): block 6 holds the token's last 7 characters and
# block 7 begins inside the member name "expires_in".
TOKEN_REPLY = (
    b'{"token_type":"Bearer","access_token":"' + b"T" * 57 + b"secret7"
    b'","expires_in":3600,"resource":"r"}'
)


def format_oracle_probes(service: TokenService, token: str) -> tuple[str, list[str]]:
    """The attack: the target block 6 sent first, under IV' = C5 xor delta, then the original
    tail. The first plaintext block becomes P6 xor delta, and the reply is a JSON object exactly
    when that is '{"' and 14 string characters. The right probe (what the attacker finds by
    searching delta, 4,096 tries for two bytes) and 20 wrong ones (another first byte)."""
    head, iv, ciphertext, tag = raw_parts(token)
    blocks = [iv] + [ciphertext[i : i + 16] for i in range(0, len(ciphertext), 16)]
    target = TOKEN_REPLY[96:112]
    assert target == b'secret7","expire'

    def probe(first: bytes) -> str:
        delta = _xor(target, first)
        return assemble(head, _xor(blocks[6], delta), b"".join(blocks[7:]), tag)

    right = probe(b'{"AAAAAAAAAAAAAA')
    wrong = [probe(bytes([c]) + b'"AAAAAAAAAAAAAA') for c in b"abcdefghijklmnopqrst"]
    # The oracle is real: the right probe is a JSON object, the wrong ones are not.
    assert json.loads(service_plaintext(service, right))
    for body in wrong:
        with pytest.raises(json.JSONDecodeError):
            json.loads(service_plaintext(service, body))
    return right, wrong


def service_plaintext(service: TokenService, token: str) -> bytes:
    """A CBC reply's plaintext, opened on the service's side (pyca)."""
    _, iv, ciphertext, _ = raw_parts(token)
    key = service.derived_key(_ctx(token), kdf_version=1)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    return (
        unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    )


def test_the_json_format_oracle_gets_no_answer_from_decrypt_response(
    prt: PRTSession, service: TokenService
) -> None:
    """By default the CBC form is not opened at all: the right probe and the wrong ones are the
    one DecryptionError (the module function and the session's method alike)."""
    expected = reference_failure(prt)
    reply = service.encrypt_response(TOKEN_REPLY, mode="cbc")
    right, wrong = format_oracle_probes(service, reply)
    with prt.loaded():
        seen = {failure(functools.partial(prt.decrypt_response, body)) for body in [right, *wrong]}
        seen |= {failure(lambda: decrypt_response(prt.key, right))}
        assert failure(functools.partial(prt.decrypt_response, reply)) == expected
    assert seen == {expected}
    # Where CBC is allowed and nothing counts (this fixture), the oracle answers: what remains.
    assert prt.decrypt_response(right, allow_cbc=True)


def test_the_json_format_oracle_gets_no_answer_from_the_token_reply_parser(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    """Through the parser Entra's CBC replies go through: the right probe is no token reply
    (the one DecryptionError, whatever the probe), and after CBC_FAILURE_LIMIT failures the
    session refuses every CBC reply, the genuine one and the right probe included, for
    CBC_LOCKOUT seconds; GCM replies still open, and the count starts again after it."""
    prt = PRTSession.create(
        store, "prt", transport_key, service.session_key_jwe(public(transport_key))
    )
    assert prt.cbc_failure_limit == session_module.CBC_FAILURE_LIMIT == 3
    assert prt.cbc_lockout == session_module.CBC_LOCKOUT == 600
    reply = service.encrypt_response(TOKEN_REPLY, mode="cbc")
    right, wrong = format_oracle_probes(service, reply)
    with prt.loaded():
        assert parse_token_response(reply, prt)["access_token"].endswith("secret7")
        first = failure(functools.partial(parse_token_response, right, prt))
        assert first == (DecryptionError, session_module._NOT_DECRYPTED)
        for body in wrong[:2]:
            assert failure(functools.partial(parse_token_response, body, prt)) == first
        # Locked: every CBC reply is refused before anything is derived.
        for body in (right, reply, *wrong):
            kind, message = failure(functools.partial(parse_token_response, body, prt))
            assert kind is DecryptionError and "refuses AES-CBC replies" in message
            kind, message = failure(functools.partial(prt.decrypt_response, body, allow_cbc=True))
            assert kind is DecryptionError and "refuses AES-CBC replies" in message
        gcm = service.encrypt_response(TOKEN_REPLY, mode="gcm")
        assert parse_token_response(gcm, prt)["access_token"].endswith("secret7")
        # Another session of the same key keeps its own count; the lockout ends.
        assert parse_token_response(reply, PRTSession.open(store, "prt"))
        prt.cbc_lockout = 0.0
        prt._cbc_locked_until = time.monotonic()
        assert parse_token_response(reply, prt)["access_token"].endswith("secret7")


def _locked_session(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> PRTSession:
    """A session with the default CBC lockout (the ``prt`` fixture turns it off)."""
    return PRTSession.create(
        store, "locked", transport_key, service.session_key_jwe(public(transport_key))
    )


def test_concurrent_cbc_probes_get_no_more_answers_than_the_limit(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    """The check-then-count race: 12 threads each send an altered CBC reply (a random IV, each
    answer one oracle bit) at once. Every attempt is reserved under the lock before anything is
    derived, so at most CBC_FAILURE_LIMIT are decrypted and answered; the rest are refused
    without being opened, and the session is then locked out."""
    prt = _locked_session(store, transport_key, service)
    genuine = service.encrypt_response(
        b'{"access_token":"' + b"A" * 60_000 + b'","token_type":"pop"}', mode="cbc"
    )
    head, _, ciphertext, tag = raw_parts(genuine)
    probes = [assemble(head, os.urandom(16), ciphertext, tag) for _ in range(12)]
    barrier = threading.Barrier(len(probes))
    answers: list[str] = []

    def attempt(body: str) -> None:
        barrier.wait()
        kind, message = failure(functools.partial(prt.decrypt_response, body, allow_cbc=True))
        assert kind is DecryptionError
        answers.append("answered" if message == session_module._NOT_DECRYPTED else message)

    with prt.loaded():
        threads = [threading.Thread(target=attempt, args=(body,)) for body in probes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == len(probes)
        assert answers.count("answered") == session_module.CBC_FAILURE_LIMIT
        assert all("refuses AES-CBC replies" in a for a in answers if a != "answered")
        assert prt._cbc_failures == session_module.CBC_FAILURE_LIMIT and not prt._cbc_pending
        locked = failure(functools.partial(prt.decrypt_response, genuine, allow_cbc=True))
        assert "refuses AES-CBC replies for" in locked[1]


def test_a_cbc_attempt_is_reserved_before_it_opens_and_given_back_on_success(
    store: KeyStore, transport_key: EntraPrivateKey, service: TokenService
) -> None:
    """While a genuine CBC reply is being read (its attempt reserved), two probes are answered
    and a third is refused unopened: failed and pending attempts together reach the limit. The
    genuine reply opens and gives its attempt back, so one more probe is answered, which locks
    the session out."""
    prt = _locked_session(store, transport_key, service)
    genuine = service.encrypt_response(TOKEN_REPLY, mode="cbc")
    head, _, ciphertext, tag = raw_parts(genuine)
    probe = assemble(head, os.urandom(16), ciphertext, tag)
    reading, release = threading.Event(), threading.Event()
    opened: list[bytes] = []

    def read(plain: bytes) -> bytes:
        reading.set()
        assert release.wait(60)
        return plain

    with prt.loaded():
        thread = threading.Thread(target=lambda: opened.append(prt.decrypt_reply(genuine, read)))
        thread.start()
        try:
            assert reading.wait(60)
            for _ in range(2):
                answer = failure(functools.partial(prt.decrypt_response, probe, allow_cbc=True))
                assert answer == (DecryptionError, session_module._NOT_DECRYPTED)
            _, message = failure(functools.partial(prt.decrypt_response, probe, allow_cbc=True))
            assert "refuses AES-CBC replies while 1 are being opened and 2 failed" in message
        finally:
            release.set()
            thread.join()
        assert opened == [TOKEN_REPLY]
        answer = failure(functools.partial(prt.decrypt_response, probe, allow_cbc=True))
        assert answer == (DecryptionError, session_module._NOT_DECRYPTED)
        locked = failure(functools.partial(prt.decrypt_response, genuine, allow_cbc=True))
        assert "refuses AES-CBC replies for" in locked[1]
        assert prt._cbc_failures == 3 and not prt._cbc_pending


@pytest.mark.parametrize("value", ["no", "false", "", 1, 0, None, [0]])
def test_the_cbc_switches_take_only_bools(
    prt: PRTSession, service: TokenService, value: object
) -> None:
    """``allow_cbc="no"`` opened the unauthenticated form and ``require_gcm=None`` left it open
    (truthiness): every reader and parser takes True or False only, else a TypeError, before
    anything is opened."""
    cbc = service.encrypt_response(TOKEN_REPLY, mode="cbc")
    bad: Any = value
    calls: list[Callable[[], object]] = [
        lambda: decrypt_response(prt.key, cbc, allow_cbc=bad),
        lambda: decrypt_response(prt.key, cbc, allow_cbc=True, require_gcm=bad),
        lambda: session_module.decrypt_jwe(prt.key, cbc, allow_cbc=bad),
        lambda: session_module.decrypt_jwe(prt.key, cbc, allow_cbc=True, require_gcm=bad),
        lambda: prt.decrypt_response(cbc, allow_cbc=bad),
        lambda: prt.decrypt_response(cbc, allow_cbc=True, require_gcm=bad),
        lambda: prt.decrypt_jwe(cbc, allow_cbc=bad),
        lambda: prt.decrypt_jwe(cbc, allow_cbc=True, require_gcm=bad),
        lambda: prt.decrypt_reply(cbc, bytes, require_gcm=bad),
        lambda: parse_token_response(cbc, prt, require_gcm=bad),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="is True or False"):
            call()
    assert not prt._cbc_failures and not prt._cbc_pending
    assert parse_token_response(cbc, prt, require_gcm=False)["token_type"] == "Bearer"


def test_cbc_bit_flips_that_keep_a_json_object_are_not_detected(
    prt: PRTSession, service: TokenService
) -> None:
    """The risk that remains (SECURITY.md): CBC is not authenticated, so a flipped IV bit
    changes the first block's plaintext, and a change that keeps a JSON object is accepted."""
    token = service.encrypt_response(RESPONSE, mode="cbc")
    head, iv, ciphertext, tag = raw_parts(token)
    assert RESPONSE[2:9] == b"refresh"
    mask = b"\0\0" + bytes(a ^ b for a, b in zip(b"refresh", b"REFRESH", strict=True)) + bytes(7)
    forged_iv = bytes(a ^ b for a, b in zip(iv, mask, strict=True))
    forged = prt.decrypt_response(assemble(head, forged_iv, ciphertext, tag), allow_cbc=True)
    assert forged == RESPONSE.replace(b"refresh", b"REFRESH")
    # The GCM form is authenticated: the same change is refused.
    gcm = service.encrypt_response(RESPONSE, mode="gcm")
    head, iv, ciphertext, tag = raw_parts(gcm)
    with pytest.raises(DecryptionError):
        prt.decrypt_response(assemble(head, iv, _flip(ciphertext, 2), tag), allow_cbc=True)


def test_a_cbc_reply_can_lose_a_block_prefix_under_a_chosen_first_block(
    prt: PRTSession, service: TokenService
) -> None:
    """The risk that remains, stated precisely (SECURITY.md): with one known plaintext block
    P[a], the IV C[a-1] xor P[a] xor Q in front of C[a..n] decrypts to Q || P[a+1..n], so a
    token reply loses every member before the cut (scope) and gets a first block of the
    attacker's choosing (token_type rewritten), and the parser takes it. require_gcm refuses
    it."""
    reply = (
        b'{"token_type":"pop","scope":"openid profile offline_access https://graph.microsoft'
        b'.com/.default","expires_in":"3599","access_token":"eyJ0.A.B","id_token":"eyJ0.C.D"}'
    )
    head, iv, ciphertext, tag = raw_parts(service.encrypt_response(reply, mode="cbc"))
    blocks = [iv] + [ciphertext[i : i + 16] for i in range(0, len(ciphertext), 16)]
    known, chosen = reply[32:48], b'{"token_type":"B'  # P[3], inside the predictable scope
    forged = assemble(head, _xor(_xor(blocks[2], known), chosen), b"".join(blocks[3:]), tag)
    got = parse_token_response(forged, prt)
    assert "scope" not in got and got["token_type"].startswith("Bine_access https://graph")
    assert got["access_token"] == "eyJ0.A.B"
    with pytest.raises(DecryptionError):
        parse_token_response(forged, prt, require_gcm=True)


def test_pkcs7_strip_agrees_with_pyca() -> None:
    """The branch-free padding check gives pyca's answer for every pad byte and corruption."""
    blocks = [os.urandom(16) for _ in range(2000)]
    for count in range(1, 17):
        for value in range(256):
            blocks.append(os.urandom(16 - count) + bytes([value]) * count)
            base = bytearray(os.urandom(16 - count) + bytes([count]) * count)
            base[16 - count] = value  # the first pad byte changed
            blocks.append(bytes(base))
    for block in blocks:
        padded = os.urandom(16 * (block[0] % 3)) + block
        unpadder = sym_padding.PKCS7(128).unpadder()
        try:
            want: bytes | None = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            want = None
        text, valid = session_module._pkcs7_strip(padded)
        assert valid is (want is not None), padded.hex()
        if want is not None:
            assert text == want


# -- (a2) the JWE's form: exactly what Entra sends ------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def forge_cbc_from_gcm(captured: str, known: bytes, chosen: bytes) -> str:
    """Without the key: a CBC reply under a captured GCM reply's header (same ctx, so the same
    derived key) whose one block decrypts to ``chosen``. The GCM keystream block
    S = E_K(IV || 00000002) is the first ciphertext block XOR the known first plaintext block;
    CBC decrypts S to that counter block, and the chosen IV turns it into ``chosen``."""
    head, iv, ciphertext, _ = raw_parts(captured)
    assert len(iv) == 12 and len(known) == len(chosen) == 16
    keystream = _xor(ciphertext[:16], known)
    counter_block = iv + (2).to_bytes(4, "big")
    return assemble(head, _xor(counter_block, chosen), keystream, b"")


def test_a_cbc_reply_forged_from_a_gcm_replys_keystream_is_refused_when_gcm_is_required(
    prt: PRTSession, service: TokenService
) -> None:
    """The attack: a captured GCM reply whose first 16 bytes are known (Entra's replies begin
    alike) gives one block of keystream; under the same A256GCM header, with an empty tag and
    a chosen IV, it becomes a CBC reply of the attacker's choosing. With the CBC form allowed
    (the default: Entra sends it) the forgery opens, which SECURITY.md keeps as a residual risk
    (one chosen block; the protocol parsers refuse a reply that short); a caller that knows its
    reply is GCM passes require_gcm=True and it is the one DecryptionError."""
    expected = reference_failure(prt)
    captured = service.encrypt_response(RESPONSE, mode="gcm")
    forged = forge_cbc_from_gcm(captured, RESPONSE[:16], b'{"admin":true}\x02\x02')
    with prt.loaded():
        assert prt.decrypt_response(captured, require_gcm=True) == RESPONSE
        # What remains where CBC is allowed; by default the forgery is the one failure.
        assert prt.decrypt_response(forged, allow_cbc=True) == b'{"admin":true}'
        assert failure(lambda: prt.decrypt_response(forged)) == expected
        assert failure(lambda: prt.decrypt_response(forged, require_gcm=True)) == expected
        assert failure(lambda: decrypt_response(prt.key, forged, require_gcm=True)) == expected
        # The same through decrypt_jwe (Kerberos client keys): chosen raw bytes.
        raw = forge_cbc_from_gcm(captured, RESPONSE[:16], b"k" * 15 + b"\x01")
        assert prt.decrypt_jwe(raw, allow_cbc=True) == b"k" * 15
        assert failure(lambda: prt.decrypt_jwe(raw)) == expected
        assert failure(lambda: prt.decrypt_jwe(raw, allow_cbc=True, require_gcm=True)) == expected
        # Entra's own CBC form is refused too when GCM is required; its GCM form is taken.
        cbc = service.encrypt_response(RESPONSE, mode="cbc")
        assert prt.decrypt_response(cbc, allow_cbc=True) == RESPONSE
        assert failure(lambda: prt.decrypt_response(cbc, allow_cbc=True, require_gcm=True)) == (
            expected
        )


def _header_segment(header: dict[str, object] | bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b64url_encode(raw)


@pytest.mark.parametrize(
    "change",
    [
        {"enc": "none"},
        {"enc": "A128GCM"},
        {"enc": "A256CBC-HS512"},
        {"enc": "A256CBC"},
        {"enc": "a256gcm"},
        {"enc": None},
        {"enc": ["A256GCM"]},
        {"enc": "A256GCM "},
        {"alg": "none"},
        {"alg": "RSA-OAEP"},
        {"alg": "A256KW"},
        {"alg": "DIR"},
        {"crit": ["exp"], "exp": 1},
        {"crit": []},
        {"zip": "DEF"},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"jku": "https://attacker.example/keys"},
        {"epk": {}},
        {"iv": "AAAAAAAAAAAAAAAA"},
        {"tag": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"p2c": 1000},
        {"x": 1},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_a_header_other_than_entras_is_refused_before_decryption(
    prt: PRTSession, service: TokenService, change: dict[str, object]
) -> None:
    """enc none with an empty tag opened before; any enc but A256GCM, any alg but dir, and any
    member but alg, enc, ctx (and typ, cty, kid, which change nothing) is InvalidData naming
    it, before any key is derived: the header is public, so this tells an attacker nothing."""
    for mode in ("gcm", "cbc"):
        token = service.encrypt_response(RESPONSE, mode=mode)  # type: ignore[arg-type]
        head, iv, ciphertext, tag = raw_parts(token)
        header = json.loads(b64url_decode(head))
        header.update(change)
        forged = assemble(_header_segment(header), iv, ciphertext, tag)
        with pytest.raises(InvalidData, match="JWE header"):
            prt.decrypt_response(forged)
        with pytest.raises(InvalidData, match="JWE header"):
            prt.decrypt_jwe(forged)
    for missing in ("alg", "enc", "ctx"):
        head, iv, ciphertext, tag = raw_parts(service.encrypt_response(RESPONSE))
        header = json.loads(b64url_decode(head))
        del header[missing]
        with pytest.raises(InvalidData, match="missing members"):
            prt.decrypt_response(assemble(_header_segment(header), iv, ciphertext, tag))


def test_a_dir_jwe_with_an_encrypted_key_is_refused_before_decryption(
    prt: PRTSession, service: TokenService
) -> None:
    """RFC 7516 §5.2 step 10: a dir JWE's Encrypted Key is empty. It is outside the GCM tag (AAD
    is the header), so a reply whose second segment was rewritten (4 bytes, 600 KiB) opened,
    with require_gcm too. Now it is InvalidData before any key is derived, through every
    reader, and counts as no CBC failure (the segment is public)."""
    prt.cbc_failure_limit = 1  # a CBC failure counted here would lock the session at once
    tokens = {"access_token": "eyJ0.at", "token_type": "Bearer"}
    for mode in ("gcm", "cbc"):
        token = service.encrypt_response(json.dumps(tokens).encode(), mode=mode)  # type: ignore[arg-type]
        parts = token.split(".")
        assert parts[1] == ""
        for key in (b64url_encode(b"\x00" * 4), b64url_encode(os.urandom(600 * 1024)), "A"):
            forged = ".".join([parts[0], key, *parts[2:]])
            calls: list[Callable[[], object]] = [
                functools.partial(prt.decrypt_response, forged, require_gcm=True),
                functools.partial(prt.decrypt_response, forged, allow_cbc=True),
                functools.partial(decrypt_response, prt.key, forged, allow_cbc=True),
                functools.partial(prt.decrypt_jwe, forged, allow_cbc=True),
                functools.partial(parse_token_response, forged, prt),
            ]
            for call in calls:
                with pytest.raises(InvalidData, match="encrypted key: a dir JWE's is empty"):
                    call()
        # The control: the reply as sent opens, CBC included (no failure was counted).
        assert parse_token_response(token, prt) == tokens


def test_informational_header_members_are_let_through(
    prt: PRTSession, service: TokenService
) -> None:
    """typ, cty and kid (RFC 7516 §4.1) change nothing about how the reply opens."""
    ctx = os.urandom(24)
    header = {"typ": "JWT", "alg": "dir", "kid": "k1", "enc": "A256GCM", "cty": "JWT",
              "ctx": base64.b64encode(ctx).decode()}  # fmt: skip
    head = _header_segment(header)
    iv = os.urandom(12)
    sealed = AESGCM(service.derived_key(ctx, kdf_version=1)).encrypt(iv, RESPONSE, head.encode())
    assert prt.decrypt_response(assemble(head, iv, sealed[:-16], sealed[-16:])) == RESPONSE


FORMS = [(12, 0), (12, 1), (12, 12), (12, 15), (12, 17), (12, 32), (16, 16), (16, 1),
         (16, 12), (16, 15), (0, 0), (0, 16), (8, 16), (11, 16), (13, 16), (15, 0), (17, 0),
         (24, 0), (32, 16)]  # fmt: skip


def test_every_other_iv_and_tag_length_is_the_one_failure(
    prt: PRTSession, service: TokenService
) -> None:
    """Only (12-byte IV, 16-byte tag) and (16-byte IV, empty tag) are forms Entra writes; the
    rest fail as a wrong key does, whatever the ciphertext, with or without require_gcm."""
    expected = reference_failure(prt)
    seen: set[Failure] = set()
    gcm_head, _, gcm_ciphertext, _ = raw_parts(service.encrypt_response(RESPONSE, mode="gcm"))
    cbc_head, _, cbc_ciphertext, _ = raw_parts(service.encrypt_response(RESPONSE, mode="cbc"))
    with prt.loaded():
        for iv_size, tag_size in FORMS:
            for head, ciphertext in ((gcm_head, gcm_ciphertext), (cbc_head, cbc_ciphertext)):
                body = assemble(head, os.urandom(iv_size), ciphertext, os.urandom(tag_size))
                for require_gcm in (False, True):
                    call = functools.partial(prt.decrypt_response, body, require_gcm=require_gcm)
                    seen.add(failure(call))
    assert seen == {expected}


def _opcodes(block: bytes) -> list[int]:
    """The bytecode offsets ``_pkcs7_strip`` executes on ``block``, in order."""
    code = session_module._pkcs7_strip.__code__
    executed: list[int] = []

    def local(frame: Any, event: str, arg: object) -> Any:
        if event == "opcode":
            executed.append(frame.f_lasti)
        return local

    def outer(frame: Any, event: str, arg: object) -> Any:
        if frame.f_code is code:
            frame.f_trace_opcodes = True
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(outer)
    try:
        session_module._pkcs7_strip(block)
    finally:
        sys.settrace(previous)
    return executed


def test_the_padding_check_runs_the_same_operations_whatever_the_pad_byte() -> None:
    """The structural proof of "no timing difference between a pad byte above or below 0x10":
    for every value of the last byte, valid padding or not, the padding check executes the
    same bytecode in the same order (no branch on the pad byte, the loop always 16 rounds)."""
    reference = _opcodes(os.urandom(31) + b"\x01")
    assert len(reference) > 16 * 5
    for count in range(256):
        for body in (os.urandom(31) + bytes([count]), os.urandom(16) + bytes([count]) * 16):
            assert _opcodes(body) == reference, count


def test_the_padding_check_takes_the_same_time_above_and_below_0x10() -> None:
    """Measured, as a check of the structural test: blocks ending 0x10 (a valid count) and
    0x11 (over the block) alternate in batches; the median of the per-round ratios stays near
    1. The bound (0.75 to 1.33) is generous so that a loaded machine cannot make it flake, yet
    an early return on a count over 16 (about half the work) falls outside it."""
    strip = session_module._pkcs7_strip
    below = os.urandom(16) + b"\x10" * 16
    above = os.urandom(16) + b"\x11" * 16
    ratios = []
    for _ in range(60):
        times = []
        for block in (below, above) if len(ratios) % 2 else (above, below):
            start = time.perf_counter_ns()
            for _ in range(300):
                strip(block)
            times.append(time.perf_counter_ns() - start)
        ratios.append(times[0] / times[1] if len(ratios) % 2 else times[1] / times[0])
    ratio = statistics.median(ratios)
    assert 0.75 < ratio < 1.33, f"below/above 0x10: {ratio:.3f}"


# -- (b) plain JSON bodies --------------------------------------------------------------------


def test_plain_json_is_never_taken_as_decrypted(prt: PRTSession) -> None:
    """A reply to a session-key-signed request is a JWE under the session: a plain JSON object
    (which anyone who can alter the reply could have written, tokens, PRT, session key and all)
    is refused, in every form and after leading whitespace."""
    plain = b'{"access_token":"eyJ0","expires_in":3600}'
    for body in (plain, bytearray(plain), memoryview(plain), plain.decode(), b" \n\t" + plain):
        with pytest.raises(InvalidData, match="not an encrypted reply") as caught:
            prt.decrypt_response(body)  # type: ignore[arg-type]
        assert type(caught.value) is InvalidData
    refused = [
        b'{"a":1} [2]',
        b'{"a":1}]',
        b'{"a"',
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"\xff":1}',
        b'{"a":1}{"b":2}',
        b'{"error":5}',  # an error object whose error is no string
        b'{"error":""}',
    ]
    for body in refused:
        with pytest.raises(InvalidData, match="plain JSON"):
            prt.decrypt_response(body)
        if body.isascii():
            with pytest.raises(InvalidData, match="plain JSON"):
                prt.decrypt_response(body.decode())
    with pytest.raises(InvalidData, match="plain JSON"):
        prt.decrypt_response('{"a":"\ud800"}')  # a lone surrogate: refused, not a crash


def test_the_services_error_object_is_a_service_error_bounded_and_without_controls(
    prt: PRTSession,
) -> None:
    """RFC 6749 §5.2's error object, as Entra writes it (CR LF before the trace id), is a
    ServiceError carrying error and description; what an attacker could put in them to forge a
    log line or drive a terminal (CR, LF, ESC, bidi overrides, a megabyte) is not kept."""
    entra = {
        "error": "invalid_grant",
        "error_description": "AADSTS50126: Error validating credentials.\r\nTrace ID: 1\r\n",
        "error_codes": [50126],
    }
    with pytest.raises(ServiceError) as caught:
        prt.decrypt_response(json.dumps(entra))
    assert caught.value.error == "invalid_grant"
    assert (
        caught.value.error_description == "AADSTS50126: Error validating credentials. Trace ID: 1"
    )
    assert "AADSTS50126" in str(caught.value) and isinstance(caught.value, InvalidData)
    hostile = {
        "error": "x\x1b[2J\u202e" + "e" * 10_000,
        "error_description": "ok\nFAKE LOG LINE level=INFO\u2028\x00\x7f\x9b" + "d" * 50_000,
    }
    with pytest.raises(ServiceError) as caught:
        prt.decrypt_response(json.dumps(hostile).encode())
    error, description = caught.value.error, caught.value.error_description
    assert description is not None
    for text in (error, description, str(caught.value)):
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text), text
        assert len(text) < 1000
    assert description.startswith("ok FAKE LOG LINE level=INFO d")
    assert error.endswith("...") and description.endswith("...")
    # At most SHOWN (300) characters, the ellipsis included (it was 303).
    assert ServiceError.SHOWN == 300
    assert len(error) == 300 and error == "x [2J " + "e" * 291 + "..."
    assert len(description) <= 300
    # Pickled (as a worker process sends it back), it keeps what it carries.
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.error, again.error_description, str(again)) == (
        error,
        description,
        str(caught.value),
    )
    exact = {"error": "e" * 300, "error_description": "d" * 301}
    with pytest.raises(ServiceError) as exactly:
        prt.decrypt_response(json.dumps(exact))
    assert exactly.value.error == "e" * 300  # not cut
    assert exactly.value.error_description == "d" * 297 + "..."


# -- (c) the size limit -----------------------------------------------------------------------


def _peak(call: Callable[[], object]) -> tuple[int, BaseException | None]:
    """The peak of memory newly allocated while ``call`` runs, and what it raised."""
    tracemalloc.start()
    try:
        call()
        raised: BaseException | None = None
    except Exception as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_an_oversize_response_is_refused_before_decoding(
    prt: PRTSession, service: TokenService
) -> None:
    head = service.encrypt_response(RESPONSE).split(".")[0]
    over = MAX_RESPONSE_SIZE + 1
    text = "A" * over  # not a JWE at all: only the size check can name the limit
    prefix, suffix = head + ".." + "A" * 22 + ".", "." + "A" * 22
    jwe = prefix + "A" * (over - len(prefix) - len(suffix)) + suffix
    plain = '{"a":"' + "x" * (over - 8) + '"}'
    assert len(jwe) == len(plain) == over
    for body in (text, jwe, plain):
        for form in (body, body.encode(), bytearray(body.encode()), memoryview(body.encode())):
            with pytest.raises(InvalidData) as caught:
                prt.decrypt_response(form)  # type: ignore[arg-type]
            assert f"{over} " in str(caught.value) and f"{MAX_RESPONSE_SIZE} bytes" in str(
                caught.value
            )
    # Not ASCII: fewer characters than the limit but more UTF-8 bytes.
    wide = '{"a":"' + "é" * (MAX_RESPONSE_SIZE // 2) + '"}'
    assert len(wide) < MAX_RESPONSE_SIZE < len(wide.encode())
    with pytest.raises(InvalidData, match="limit"):
        prt.decrypt_response(wide)


@pytest.mark.parametrize("kind", ["bytes", "str"])
def test_a_32_mib_response_is_refused_in_little_memory(
    prt: PRTSession, service: TokenService, kind: str
) -> None:
    head = service.encrypt_response(RESPONSE, mode="cbc").split(".")[0]
    ciphertext = "A" * (32 * MiB)
    body_text = f"{head}..AAAAAAAAAAAAAAAAAAAAAA.{ciphertext}.AAAAAAAAAAAAAAAAAAAAAA"
    body: bytes | str = body_text if kind == "str" else body_text.encode()
    del ciphertext
    peak, raised = _peak(lambda: prt.decrypt_response(body))
    assert isinstance(raised, InvalidData) and "limit" in str(raised)
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"


def test_a_custom_limit_works_both_ways(prt: PRTSession, service: TokenService) -> None:
    token = service.encrypt_response(RESPONSE, mode="gcm")
    size = len(token)
    assert prt.decrypt_response(token, max_response_size=size) == RESPONSE
    assert decrypt_response(prt.key, token, max_response_size=size) == RESPONSE
    with pytest.raises(InvalidData, match=f"{size} bytes, over the limit of {size - 1} bytes"):
        prt.decrypt_response(token.encode(), max_response_size=size - 1)
    with pytest.raises(InvalidData, match="limit"):
        decrypt_response(prt.key, token, max_response_size=size - 1)
    # Larger than the default: refused by default, accepted with a larger limit.
    big = json.dumps({"id_token": "x" * (MAX_RESPONSE_SIZE + 100)}).encode()
    large = service.encrypt_response(big, mode="gcm")
    with pytest.raises(InvalidData, match="limit"):
        prt.decrypt_response(large)
    assert prt.decrypt_response(large, max_response_size=4 * MiB) == big
    # The session's own limit, and a per-call limit over it.
    session = PRTSession.open(prt.store, prt.name)
    assert session.max_response_size == MAX_RESPONSE_SIZE
    session.max_response_size = 4 * MiB
    assert session.decrypt_response(large) == big
    session.max_response_size = size - 1
    with pytest.raises(InvalidData, match="limit"):
        session.decrypt_response(token)
    assert session.decrypt_response(token, max_response_size=size) == RESPONSE
    assert prt.max_response_size == MAX_RESPONSE_SIZE  # one session's limit is its own
    for bad, error in ((0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(error):
            prt.decrypt_response(token, max_response_size=bad)  # type: ignore[arg-type]


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli(
    provider_options: list[str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_cli_environment: None,
) -> tuple[Cli, TokenService]:
    """The command for each provider, with a session key 'prt' of a fresh token service (a TPM
    run must leave no object in the TPM)."""
    service = TokenService()
    kind = option_kind(provider_options)
    with open_apart(kind, request) as provider:
        transport = cached_key(provider, KeyType.RSA2048, KeyUsage.DECRYPT)
        jwe = service.session_key_jwe(public(transport))
        PRTSession.create(KeyStore(provider, tmp_path / "store"), "prt", transport, jwe)
    return Cli(kind, provider_options, tmp_path / "store", capsys), service


def test_cli_decrypt_limit_and_one_failure(cli: tuple[Cli, TokenService], tmp_path: Path) -> None:
    run, service = cli
    token = service.encrypt_response(RESPONSE, mode="cbc")
    path = tmp_path / "r.jwe"
    path.write_text(token)
    size = len(token)
    # The unauthenticated CBC form only when asked for (its acceptance is an oracle).
    result = run("session", "decrypt", "prt", "--in", str(path))
    assert result.code == 1 and "allow_cbc" in one_error_line(result.err)
    path.write_text(token := service.encrypt_response(RESPONSE, mode="gcm"))
    size = len(token)
    assert run.ok("session", "decrypt", "prt", "--in", str(path), "--max-size", str(size)) == (
        RESPONSE.decode()
    )
    result = run("session", "decrypt", "prt", "--in", str(path), "--max-size", str(size - 1))
    assert result.code == 1 and f"more than {size - 1} bytes" in one_error_line(result.err)
    document = json.loads(run.ok("--json", "session", "decrypt", "prt", "--in", str(path)))
    assert document == {"name": "prt", "plaintext": RESPONSE.decode()}
    large = tmp_path / "large.jwe"
    large.write_text(service.encrypt_response(b'{"a":"' + b"x" * MAX_RESPONSE_SIZE + b'"}'))
    result = run("session", "decrypt", "prt", "--in", str(large))
    assert result.code == 1 and f"more than {MAX_RESPONSE_SIZE} bytes" in one_error_line(result.err)
    assert run.ok("session", "decrypt", "prt", "--in", str(large), "--max-size", str(4 * MiB))
    for bad in ("0", "-5", "1.5", "lots"):
        assert run("session", "decrypt", "prt", "--in", str(path), "--max-size", bad).code == 2
    # Bad padding and bad content give the library's one message, and nothing more.
    head, iv, ciphertext, tag = raw_parts(service.encrypt_response(RESPONSE, mode="cbc"))
    lines = set()
    for guess in range(0, 256, 17):
        forged = tmp_path / f"forged-{guess}.jwe"
        forged.write_text(assemble(head, iv[:-1] + bytes([guess]), ciphertext[:16], tag))
        result = run("session", "decrypt", "prt", "--allow-cbc", "--in", str(forged))
        assert result.code == 1
        lines.add(one_error_line(result.err))
    assert len(lines) == 1 and "does not decrypt" in lines.pop()


def test_cli_reads_at_most_the_limit_plus_one_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.jwe"
    with big.open("wb") as f:
        f.truncate(32 * MiB)  # sparse: 32 MiB to read, none written
    peak, raised = _peak(lambda: _read_bounded(str(big), MAX_RESPONSE_SIZE))
    assert isinstance(raised, CommandError) and f"more than {MAX_RESPONSE_SIZE}" in str(raised)
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB"
    stream = io.BytesIO(b"A" * 1000)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    with pytest.raises(CommandError, match="more than 100 bytes"):
        _read_bounded("-", 100)
    assert stream.tell() == 101  # no more of stdin was consumed
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert _read_bounded(str(small), 100) == b"x" * 100
    with pytest.raises(CommandError, match="cannot read"):
        _read_bounded(str(tmp_path / "missing"), 100)


def test_every_failure_is_an_entra_keys_error(prt: PRTSession) -> None:
    """Nothing from the parsers or pyca escapes as another exception type."""
    for body in ("a.b.c.d.e", "....", b"\xff", '{"', b'{"\xff'):
        with pytest.raises(EntraKeysError):
            prt.decrypt_response(body)
