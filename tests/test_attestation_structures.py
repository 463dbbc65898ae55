"""TPM wire structures, checked against bytes a real TPM (swtpm) and tpm2-tools produced.

The vectors in tests/vectors/swtpm_tpm2_tools.json were captured with tpm2_readpublic,
tpm2_createak, tpm2_quote and tpm2_certify; names are compared with tpm2-tools' own. Hypothesis
feeds the parsers random and damaged bytes: they either round-trip exactly or raise InvalidData.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from hypothesis import given
from hypothesis import strategies as st

from entra_keys import KeyType, KeyUsage, Provider, open_provider
from entra_keys.errors import EntraKeysError, InvalidData
from entra_keys.provider import EntraPrivateKey
from entra_keys.providers.software_attest import software_endorsement_key, software_tpmt_public
from entra_keys.tcg import (
    TPMA_OBJECT,
    TPMLPCRSelection,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSClockInfo,
    TPMSPCRSelection,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
    certification_from_json,
    certification_to_json,
    endorsement_key_from_json,
    endorsement_key_to_json,
    parse_tpm2_pcrs_file,
    quote_from_json,
    quote_to_json,
    tpm2_pcrs_file,
)
from entra_keys.tcg.structures import (
    TPM_ALG_AES,
    TPM_ALG_CFB,
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_HMAC,
    TPM_ALG_KEYEDHASH,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_ECC_NIST_P256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMSKeyedHashParms,
    TPMTScheme,
    TPMTSymDefObject,
    parse_tpm2b,
)

from .helpers import cached_key, load_vectors

VECTORS: dict[str, Any] = load_vectors("swtpm_tpm2_tools.json")
PUBLICS = ["ek_rsa", "ek_ecc", "ak_rsa", "ak_ecc"]


def vec(name: str, field: str) -> bytes:
    return bytes.fromhex(VECTORS[name][field])


# --- TPMT_PUBLIC -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", PUBLICS)
def test_public_areas_round_trip_and_have_tpm2_tools_names(which: str) -> None:
    data = vec(which, "public")
    public = TPMTPublic.parse(data)
    assert public.to_bytes() == data
    assert public.name() == vec(which, "name")  # tpm2_readpublic -n wrote this


def test_ek_public_areas_read_as_the_ek_credential_profile_says() -> None:
    rsa_ek = TPMTPublic.parse(vec("ek_rsa", "public"))
    assert rsa_ek.type == TPM_ALG_RSA and rsa_ek.name_alg == TPM_ALG_SHA256
    assert rsa_ek.object_attributes == 0x000300B2
    assert rsa_ek.auth_policy.hex().upper().startswith("837197674484B3F8")
    assert rsa_ek.parameters.symmetric == TPMTSymDefObject(TPM_ALG_AES, 128, TPM_ALG_CFB)  # type: ignore[union-attr]
    ecc_ek = TPMTPublic.parse(vec("ek_ecc", "public"))
    assert ecc_ek.type == TPM_ALG_ECC
    assert ecc_ek.attributes & TPMA_OBJECT.USERWITHAUTH  # high-range template
    # The EK certificate certifies exactly the key in the public area.
    for which in ("ek_rsa", "ek_ecc"):
        cert = x509.load_der_x509_certificate(vec(which, "certificate"))
        assert TPMTPublic.parse(vec(which, "public")).public_key() == cert.public_key()


@pytest.mark.parametrize("which", ["ak_rsa", "ak_ecc"])
def test_from_public_key_rebuilds_a_tpm_made_public_area(which: str) -> None:
    tpm_made = TPMTPublic.parse(vec(which, "public"))
    assert tpm_made.attributes == (
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
    )  # fmt: skip
    rebuilt = TPMTPublic.from_public_key(
        tpm_made.public_key(),
        tpm_made.object_attributes,
        scheme=tpm_made.parameters.scheme,  # type: ignore[union-attr]
    )
    assert rebuilt.to_bytes() == tpm_made.to_bytes()


def test_keyed_hash_public_area_round_trips() -> None:
    public = TPMTPublic(
        TPM_ALG_KEYEDHASH,
        TPM_ALG_SHA256,
        int(TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.SIGN_ENCRYPT),
        b"",
        TPMSKeyedHashParms(TPMTScheme(TPM_ALG_HMAC, TPM_ALG_SHA256)),
        bytes(32),
    )
    data = public.to_bytes()
    assert data[:8] == bytes.fromhex("0008000b00040002")
    assert TPMTPublic.parse(data) == public
    with pytest.raises(InvalidData, match="has no asymmetric public key"):
        public.public_key()


def test_parse_errors_are_exact() -> None:
    data = vec("ak_rsa", "public")
    with pytest.raises(InvalidData, match=r"^TPMT_PUBLIC: 1 trailing bytes after the structure$"):
        TPMTPublic.parse(data + b"\0")
    with pytest.raises(
        InvalidData, match=r"^TPMT_PUBLIC: truncated: unique.rsa needs 256 bytes at offset 24, "
    ):
        TPMTPublic.parse(data[:-1])
    with pytest.raises(InvalidData, match=r"^TPMT_PUBLIC: type 0x0099 is not one"):
        TPMTPublic.parse(b"\x00\x99" + data[2:])
    with pytest.raises(InvalidData, match=r"authPolicy is 65 bytes, more than the 64"):
        TPMTPublic.parse(data[:8] + b"\x00\x41" + bytes(65))
    with pytest.raises(InvalidData, match=r"^TPMT_PUBLIC: bytes expected, not str$"):
        TPMTPublic.parse("00")  # type: ignore[arg-type]
    public = TPMTPublic.parse(data)
    assert isinstance(public.unique, bytes)
    short = dataclasses.replace(public, unique=public.unique[1:])
    with pytest.raises(InvalidData, match="keyBits is 2048 but the modulus is 255 bytes"):
        short.public_key()


def test_ecc_point_off_the_curve_is_invalid_data() -> None:
    public = TPMTPublic.parse(vec("ak_ecc", "public"))
    data = bytearray(public.to_bytes())
    data[-1] ^= 1  # last byte of y
    with pytest.raises(InvalidData, match="not on secp256r1"):
        TPMTPublic.parse(bytes(data)).public_key()


# --- TPMS_ATTEST and TPMT_SIGNATURE ------------------------------------------------------------


def test_quote_attest_fields_read_as_tpm2_tools_shows_them() -> None:
    attest = TPMSAttest.parse(vec("quote_rsa", "attest"))
    assert attest.magic == TPM_GENERATED_VALUE and attest.type == TPM_ST_ATTEST_QUOTE
    assert attest.extra_data == vec("quote_rsa", "nonce")
    assert attest.qualified_signer[:2] == b"\x00\x0b"  # a SHA-256 qualified name
    assert attest.firmware_version == 0x2019102300163636  # swtpm's TPM_PT_FIRMWARE_VERSION_1/2
    assert isinstance(attest.attested, TPMSQuoteInfo)
    assert attest.attested.pcr_select.as_dict() == {TPM_ALG_SHA256: frozenset({0, 1, 7, 16})}
    ecc = TPMSAttest.parse(vec("quote_ecc", "attest"))
    assert isinstance(ecc.attested, TPMSQuoteInfo)
    assert [(s.hash, sorted(s.pcrs)) for s in ecc.attested.pcr_select.selections] == [
        (TPM_ALG_SHA256, [0, 1, 7, 16]),
        (TPM_ALG_SHA1, [0, 2]),
    ]
    for which in ("quote_rsa", "quote_ecc", "certify_rsa", "certify_ecc"):
        assert TPMSAttest.parse(vec(which, "attest")).to_bytes() == vec(which, "attest")


def test_certify_attest_names_the_certified_key() -> None:
    attest = TPMSAttest.parse(vec("certify_rsa", "attest"))
    assert attest.type == TPM_ST_ATTEST_CERTIFY
    assert isinstance(attest.attested, TPMSCertifyInfo)
    assert attest.attested.name == TPMTPublic.parse(vec("certify_rsa", "key_public")).name()
    assert attest.extra_data == bytes.fromhex("00ff55aa")


@pytest.mark.parametrize("which", ["quote_rsa", "quote_ecc", "certify_rsa", "certify_ecc"])
def test_signatures_verify_with_pyca_directly(which: str) -> None:
    signature = TPMTSignature.parse(vec(which, "signature"))
    assert signature.to_bytes() == vec(which, "signature")
    key = TPMTPublic.parse(vec(VECTORS[which]["ak"], "public")).public_key()
    attest = vec(which, "attest")
    if isinstance(key, rsa.RSAPublicKey):
        assert signature.sig_alg == TPM_ALG_RSASSA
        key.verify(signature.signature, attest, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert signature.sig_alg == TPM_ALG_ECDSA and len(signature.signature_r) == 32
        key.verify(signature.to_der(), attest, ec.ECDSA(hashes.SHA256()))
        again = TPMTSignature.from_signature(TPM_ALG_ECDSA, signature.hash, signature.to_der(), key)
        assert again == signature


def test_attest_of_another_type_is_refused_by_name() -> None:
    data = bytearray(vec("quote_rsa", "attest"))
    data[4:6] = b"\x80\x19"  # TPM_ST_ATTEST_TIME
    with pytest.raises(InvalidData, match=r"^TPMS_ATTEST: type 0x8019 is neither a quote"):
        TPMSAttest.parse(bytes(data))


def test_attest_trailing_and_truncated_bytes_are_refused() -> None:
    data = vec("quote_rsa", "attest")
    with pytest.raises(InvalidData, match=r"^TPMS_ATTEST: 2 trailing bytes after the structure$"):
        TPMSAttest.parse(data + b"\0\0")
    with pytest.raises(InvalidData, match=r"^TPMS_ATTEST: truncated: quote.pcrDigest needs 32"):
        TPMSAttest.parse(data[:-1])
    with pytest.raises(InvalidData, match=r"TPMT_SIGNATURE: sigAlg 0x0005 is not RSASSA"):
        TPMTSignature.parse(b"\x00\x05\x00\x0b" + bytes(32))


# --- Hypothesis: random and damaged bytes ------------------------------------------------------

PARSERS: list[Any] = [TPMTPublic, TPMSAttest, TPMTSignature, TPMLPCRSelection]
SAMPLES = [vec(n, "public") for n in PUBLICS] + [
    vec(n, f) for n in ("quote_rsa", "quote_ecc", "certify_rsa") for f in ("attest", "signature")
]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "append", "insert", "delete"]))
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[where:]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=4))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=3))
        elif data:
            del data[where]
    return bytes(data)


@given(data=st.binary(max_size=300) | damaged())
def test_parsers_round_trip_or_raise_invalid_data(data: bytes) -> None:
    for parser in PARSERS:
        try:
            parsed = parser.parse(data)
        except InvalidData:
            continue
        assert parsed.to_bytes() == data


@given(data=st.binary(max_size=300) | damaged())
def test_one_parser_for_bytes_bytearray_and_memoryview(data: bytes) -> None:
    for cls in (TPMSAttest, TPMTSignature):
        try:
            parsed = cls.parse(data)
        except InvalidData as exc:
            message = str(exc)
        else:
            assert cls.parse(bytearray(data)) == parsed == cls.parse(memoryview(data))  # type: ignore[arg-type]
            continue
        for other in (bytearray(data), memoryview(data)):
            with pytest.raises(InvalidData, match=f"^{re.escape(message)}$"):
                cls.parse(other)  # type: ignore[arg-type]


names = st.binary(max_size=66)


@given(
    magic=st.integers(0, 2**32 - 1),
    signer=names,
    extra=st.binary(max_size=64),
    clock=st.tuples(
        st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
        st.booleans(),
    ),
    firmware=st.integers(0, 2**64 - 1),
    body=st.one_of(
        st.builds(
            TPMSQuoteInfo,
            st.builds(
                TPMLPCRSelection,
                st.lists(
                    st.builds(
                        TPMSPCRSelection,
                        st.sampled_from([TPM_ALG_SHA1, TPM_ALG_SHA256, 0x000C]),
                        st.frozensets(st.integers(0, 23)),
                    ),
                    max_size=3,
                ).map(tuple),
            ),
            st.binary(max_size=64),
        ),
        st.builds(TPMSCertifyInfo, names, names),
    ),
)  # fmt: skip
def test_any_attest_survives_marshal_and_parse(
    magic: int,
    signer: bytes,
    extra: bytes,
    clock: tuple[int, int, int, bool],
    firmware: int,
    body: TPMSQuoteInfo | TPMSCertifyInfo,
) -> None:
    kind = TPM_ST_ATTEST_QUOTE if isinstance(body, TPMSQuoteInfo) else TPM_ST_ATTEST_CERTIFY
    attest = TPMSAttest(magic, kind, signer, extra, TPMSClockInfo(*clock), firmware, body)
    assert TPMSAttest.parse(attest.to_bytes()) == attest


@st.composite
def pcr_selection_bytes(draw: st.DrawFn) -> bytes:
    """A well-formed TPML_PCR_SELECTION: up to 16 banks, any hash id, sizeofSelect 0 to 4 and
    any bitmap (each a parsable input)."""
    count = draw(st.integers(0, 16))
    out = count.to_bytes(4, "big")
    for _ in range(count):
        size = draw(st.integers(0, 4))
        select = draw(st.binary(min_size=size, max_size=size))
        out += draw(st.integers(0, 0xFFFF)).to_bytes(2, "big") + bytes([size]) + select
    return out


@given(data=pcr_selection_bytes())
def test_every_pcr_selection_marshals_back_to_its_bytes(data: bytes) -> None:
    """sizeofSelect is kept as parsed, 0 included (it was written back as 3)."""
    selection = TPMLPCRSelection.parse(data)
    assert selection.to_bytes() == data
    quote = TPMSAttest(
        TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, b"", bytes(8),
        TPMSClockInfo(1, 2, 3, True), 4, TPMSQuoteInfo(selection, bytes(32)),
    )  # fmt: skip
    assert TPMSAttest.parse(quote.to_bytes()).to_bytes() == quote.to_bytes()


def test_an_empty_select_stays_empty() -> None:
    data = bytes.fromhex("00000001000b00")  # sha256, sizeofSelect 0
    selection = TPMLPCRSelection.parse(data)
    assert selection.selections == (TPMSPCRSelection(TPM_ALG_SHA256, frozenset(), 0),)
    assert selection.to_bytes() == data


@given(r=st.binary(max_size=67), s=st.binary(max_size=67))
def test_ecdsa_der_is_what_cryptography_encodes(r: bytes, s: bytes) -> None:
    der = TPMTSignature(TPM_ALG_ECDSA, TPM_ALG_SHA256, b"", r, s).to_der()
    expected = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert der == expected


def test_pcr_selection_helpers() -> None:
    selection = TPMLPCRSelection.of({"sha256": [0, 1, 7], "sha1": [23]})
    data = selection.to_bytes()
    assert data == bytes.fromhex("00000002000b03830000000403000080")
    assert TPMLPCRSelection.parse(data) == selection
    assert selection.as_dict() == {TPM_ALG_SHA256: {0, 1, 7}, TPM_ALG_SHA1: {23}}
    twice = TPMLPCRSelection.of({"sha256": [0]}).selections * 2
    with pytest.raises(InvalidData, match="selected twice"):
        TPMLPCRSelection(twice).as_dict()
    with pytest.raises(InvalidData, match="PCR 24 does not fit a 3-byte select"):
        TPMLPCRSelection.of({"sha256": [24]}).to_bytes()
    assert parse_tpm2b(b"\x00\x02ab") == b"ab"


# --- tpm2-tools PCR files ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["quote_rsa", "quote_ecc"])
def test_tpm2_quote_pcr_files_parse_and_rebuild_byte_for_byte(which: str) -> None:
    data = vec(which, "pcrs_file")
    selection, values = parse_tpm2_pcrs_file(data)
    attest = TPMSAttest.parse(vec(which, "attest"))
    assert isinstance(attest.attested, TPMSQuoteInfo)
    assert selection == attest.attested.pcr_select
    assert values[TPM_ALG_SHA256][0] == bytes(32)
    assert values[TPM_ALG_SHA256][16].hex().startswith("debb3e7a")  # PCR 16 extended with ab*32
    assert tpm2_pcrs_file(selection, values) == data
    with pytest.raises(InvalidData, match="tpm2-tools PCR file"):
        parse_tpm2_pcrs_file(data[:-1])


def test_pcr_file_with_more_than_eight_values_splits_digest_lists() -> None:
    selection = TPMLPCRSelection.of({"sha256": range(10)})
    values = {TPM_ALG_SHA256: {i: bytes([i]) * 32 for i in range(10)}}
    data = tpm2_pcrs_file(selection, values)
    assert len(data) == 132 + 4 + 2 * 532
    assert struct.unpack_from("<I", data, 132) == (2,)
    assert parse_tpm2_pcrs_file(data) == (selection, values)


# --- the software provider's public areas and EK -------------------------------------------------


def test_software_public_area_matches_the_tpm_providers(tpm_provider: Provider) -> None:
    """The software provider gives a key the TPMT_PUBLIC the TPM provider's key of that kind has
    (everything but the key itself)."""
    software = open_provider("software")
    for key_type, usage in [
        (KeyType.RSA2048, KeyUsage.SIGN),
        (KeyType.RSA2048, KeyUsage.DECRYPT),
        (KeyType.ECC256, KeyUsage.SIGN),
        (KeyType.RSA2048, KeyUsage.ATTEST),
        (KeyType.ECC256, KeyUsage.ATTEST),
    ]:
        tpm_key: EntraPrivateKey = cached_key(tpm_provider, key_type, usage)
        tpm_public = TPMTPublic.parse(tpm_key.tpm_public)
        sw_key = software.create_key(key_type, usage)
        ours = TPMTPublic.parse(software_tpmt_public(sw_key.public_key(), usage))
        assert (ours.type, ours.name_alg, ours.object_attributes, ours.parameters) == (
            tpm_public.type, tpm_public.name_alg, tpm_public.object_attributes,
            tpm_public.parameters,
        ), (key_type, usage)  # fmt: skip


def test_software_ek_has_the_template_layout_and_no_certificate() -> None:
    ek = software_endorsement_key(rsa.generate_private_key(65537, 2048))
    assert ek.certificate is None and not ek.hardware_backed and ek.key_type is KeyType.RSA2048
    public = TPMTPublic.parse(ek.public)
    real = TPMTPublic.parse(vec("ek_rsa", "public"))
    assert (public.object_attributes, public.auth_policy, public.parameters) == (
        real.object_attributes, real.auth_policy, real.parameters,
    )  # fmt: skip
    p384 = software_endorsement_key(ec.generate_private_key(ec.SECP384R1()))
    real_ecc = TPMTPublic.parse(vec("ek_ecc", "public"))
    assert TPMTPublic.parse(p384.public).parameters == real_ecc.parameters
    assert TPMTPublic.parse(p384.public).auth_policy == real_ecc.auth_policy
    p256 = TPMTPublic.parse(
        software_endorsement_key(ec.generate_private_key(ec.SECP256R1())).public
    )
    assert p256.parameters.curve_id == TPM_ECC_NIST_P256  # type: ignore[union-attr]
    assert p256.parameters.scheme.scheme == TPM_ALG_NULL  # type: ignore[union-attr]


# --- JSON --------------------------------------------------------------------------------------


def test_json_forms_round_trip_with_base64_fields() -> None:
    provider = open_provider("software")
    ak = provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    quote = provider.quote(ak, [0, 7], b"nonce-16-bytes!!")
    text = quote_to_json(quote)
    body = json.loads(text)
    assert base64.b64decode(body["attest"]) == quote.attest
    assert body["pcr_values"]["7"] == base64.b64encode(bytes(32)).decode()
    assert quote_from_json(text) == quote
    key = provider.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    cert = provider.certify(key, ak, b"another nonce")
    assert certification_from_json(certification_to_json(cert)) == cert
    ek = provider.endorsement_keys()[0]
    assert endorsement_key_from_json(endorsement_key_to_json(ek)) == ek


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "certification"}, "'kind' is 'certification', not 'quote'"),
        ({"version": 2}, "version 2 is not 1"),
        ({"extra": 1}, r"unknown members \['extra'\]"),
        ({"attest": "not base64!"}, "'attest' is not valid base64"),
        ({"nonce": 5}, "'nonce' is a string, not a number"),
        ({"pcr_values": {"24": ""}}, "PCR index '24' is not 0..23"),
        ({"pcr_values": {"07": ""}}, "PCR index '07' is not 0..23"),
        ({"hardware_backed": "yes"}, "'hardware_backed' is a boolean, not a string"),
    ],
)
def test_quote_json_is_read_strictly(change: dict[str, Any], message: str) -> None:
    good = json.loads(
        quote_to_json(
            open_provider("software").quote(
                open_provider("software").create_key(KeyType.ECC256, KeyUsage.ATTEST),
                [0],
                b"a 16-byte nonce.",
            )
        )
    )
    with pytest.raises(InvalidData, match=message):
        quote_from_json({**good, **change})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.just("AAAA"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
KINDS = {
    "quote": ["attest", "signature", "pcr_bank", "pcr_values", "nonce", "hardware_backed"],
    "certification": ["attest", "signature", "key_public", "nonce", "hardware_backed"],
    "endorsement_key": ["key_type", "public", "certificate", "nv_index", "handle",
                        "hardware_backed"],
}  # fmt: skip
member_values = json_values | st.dictionaries(st.sampled_from(["0", "7", "24", "x"]), json_values)
# Members an endorsement_key document may carry since version 1 ("chain": true was a TypeError).
LATER = {"endorsement_key": ["certificate_repairs", "certificate_error", "chain", "chain_errors"]}
json_objects = st.sampled_from(sorted(KINDS)).flatmap(
    lambda kind: st.fixed_dictionaries(
        {"kind": st.just(kind), "version": st.just(1)}
        | {member: member_values for member in KINDS[kind]},
        optional={member: member_values for member in LATER.get(kind, [])},
    )
)


@given(
    text=st.text(max_size=80) | st.binary(max_size=80) | json_objects | json_objects.map(json.dumps)
)
def test_json_readers_raise_only_invalid_data(text: Any) -> None:
    for reader in (quote_from_json, certification_from_json, endorsement_key_from_json):
        try:
            reader(text)
        except InvalidData:
            pass
        except EntraKeysError as exc:  # pragma: no cover - the assertion says which
            raise AssertionError(f"{reader.__name__} raised {exc!r}") from exc


def test_exported_names_are_complete() -> None:
    """Every public name of the attestation modules is exported, and every export resolves."""
    import entra_keys.attestation as package
    from entra_keys.attestation import verifier
    from entra_keys.providers import software_attest as software
    from entra_keys.tcg import credential, structures

    for module in (credential, software, structures, verifier):
        public = {
            name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
            and callable(value)
        }  # fmt: skip
        assert public <= set(module.__all__), (module.__name__, public - set(module.__all__))
    assert all(hasattr(package, name) for name in package.__all__)
