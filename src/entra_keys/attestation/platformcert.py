"""TCG platform certificates (IWG Platform Certificate Profile): what they say about the
platform, read with asn1crypto; and the directoryName reader EK certificates share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidData
from ..tcg.nvcert import ASN1_ERRORS
from ..tcg.wire import readable_bytes

__all__ = ["PlatformCertificateInfo", "directory_names", "parse_platform_certificate"]

# platformManufacturerStr, platformModel, platformVersion, platformSerial
_PLATFORM_OIDS = frozenset({"2.23.133.5.1.1", "2.23.133.5.1.4", "2.23.133.5.1.5", "2.23.133.5.1.6"})


def directory_names(general_names: Any) -> dict[str, str]:
    """{OID: text} of every attribute in the directoryName entries of a GeneralNames."""
    found: dict[str, str] = {}
    for general_name in general_names or ():
        if general_name.name != "directory_name":
            continue
        for rdn in general_name.chosen.chosen:
            for attribute in rdn:
                value = attribute["value"].native
                if isinstance(value, str):
                    found[attribute["type"].dotted] = value
    return found


@dataclass(frozen=True)
class PlatformCertificateInfo:
    """What a TCG platform certificate says about the platform (IWG Platform Certificate
    Profile): maker, model, version and serial, and the certificate's own identity."""

    #: "attribute" for an RFC 5755 attribute certificate (the profile's form), "x509" for the
    #: public-key certificate form older swtpm_localca writes.
    form: str
    manufacturer: str | None
    model: str | None
    version: str | None
    serial: str | None
    issuer: str
    serial_number: int
    #: The serial number of the EK certificate an attribute certificate's holder names.
    holder_serial_number: int | None


def parse_platform_certificate(data: bytes) -> PlatformCertificateInfo:
    """Reads a TCG platform certificate (DER): an attribute certificate, or the X.509 form of
    swtpm's local CA; InvalidData when it is neither. The signature is not checked here."""
    from asn1crypto import cms, parser
    from asn1crypto import x509 as asn1_x509

    try:
        _, _, _, _, outer, _ = parser.parse(
            readable_bytes(data, "a platform certificate"), strict=True
        )
        _, _, _, _, tbs, _ = parser.parse(outer, strict=False)
        first_class, _, first_tag, _, _, _ = parser.parse(tbs, strict=False)
        if (first_class, first_tag) == (2, 0):  # [0] version: an X.509 certificate
            cert = asn1_x509.Certificate.load(bytes(data), strict=True)
            subject_names = directory_names(cert.subject_alt_name_value)
            issuer = cert.issuer.human_friendly
            return _platform_info("x509", subject_names, issuer, cert.serial_number)
        acert = cms.AttributeCertificateV2.load(bytes(data), strict=True)
        info = acert["ac_info"]
        names: dict[str, str] = {}
        for ext in info["extensions"] or ():
            if ext["extn_id"].dotted == "2.5.29.17":
                names.update(directory_names(ext["extn_value"].parsed))
        for attribute in info["attributes"]:
            oid = attribute["type"].dotted
            if oid in _PLATFORM_OIDS and oid not in names and len(attribute["values"]):
                value = attribute["values"][0].native
                if isinstance(value, str | bytes):
                    names[oid] = value.decode() if isinstance(value, bytes) else value
        holder = info["holder"]["base_certificate_id"]
        issuer = info["issuer"]
        issuer_names = issuer.chosen["issuer_name"] if issuer.name == "v2_form" else issuer.chosen
        issuer_text = ", ".join(
            n.chosen.human_friendly for n in issuer_names if n.name == "directory_name"
        )
        holder_serial = None if holder.native is None else int(holder["serial"].native)
        serial = int(info["serial_number"].native)
        return _platform_info("attribute", names, issuer_text, serial, holder_serial)
    except ASN1_ERRORS as exc:
        raise InvalidData(f"not a TCG platform certificate ({exc})") from exc


def _platform_info(
    form: str, names: Mapping[str, str], issuer: str, serial: int, holder: int | None = None
) -> PlatformCertificateInfo:
    return PlatformCertificateInfo(
        form=form,
        manufacturer=names.get("2.23.133.5.1.1"),
        model=names.get("2.23.133.5.1.4"),
        version=names.get("2.23.133.5.1.5"),
        serial=names.get("2.23.133.5.1.6"),
        issuer=issuer,
        serial_number=int(serial),
        holder_serial_number=holder,
    )
