#!/usr/bin/env python3
"""Build or check the bundle of TPM makers' CA certificates that entra_keys ships
(src/entra_keys/attestation/cas/: tpm-cas.pem and manifest.json). It downloads nothing.

To update the bundle:
1. Fetch the new PEM (or DER) files from their publishers or the repositories that collect them
   (loicsikidi/tpm-ca-certificates' MIRROR.*.pem, google/go-tpm-tools' server/ca-certs,
   keylime's tpm_cert_store) and check them as you would any trust anchor.
2. Name each input in a sources file (scripts/ca_bundle_sources.json is the one the shipped
   bundle was built from): its path (relative to --base), what it is for ("ek": EK
   certificates, "ak": AK certificates, or both) and where it came from (repository, path,
   commit, licence).
3. ``PYTHONPATH=src python scripts/ca_bundle.py build scripts/ca_bundle_sources.json --base DIR``
   reads every certificate with entra_keys' own reader (non-strict DER included), reports and
   leaves out any it cannot read, keeps each certificate once (by SHA-256; the uses of its
   copies merged), and writes tpm-cas.pem and manifest.json. A certificate whose issuer is in
   the bundle (same name, its signature verifies) is an intermediate for its uses; any other
   (a root, a vendor's issuing CA whose root is not published, or one whose link to its root
   is signed with SHA-1, which entra_keys does not verify) is a trust anchor.
4. ``python scripts/ca_bundle.py check`` (also run by the tests) re-reads the shipped files and
   checks every fingerprint and every manifest entry against them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import ssl
import sys
from pathlib import Path
from typing import Any

from entra_keys.attestation.cabundle import BUNDLE_USES, load_ca_bundle
from entra_keys.attestation.ekcert import ReadCertificate

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "entra_keys" / "attestation" / "cas"
PEM_NAME = "tpm-cas.pem"


def _issued_within(cert: ReadCertificate, bundle: list[ReadCertificate]) -> bool:
    """True when another certificate of the bundle issued ``cert`` (name and signature)."""
    for ca in bundle:
        if ca is cert or ca.certificate.subject != cert.certificate.issuer:
            continue
        try:
            cert.check_signed_by(ca)
        except Exception:  # noqa: BLE001, S112 - any failure: not this issuer
            continue
        return True
    return False


def build(sources: Path, base: Path, out: Path) -> int:
    spec = json.loads(sources.read_text())
    found: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    problems = 0
    for item in spec["inputs"]:
        path = base / item["file"]
        certificates, bad = load_ca_bundle(path.read_bytes(), item["file"])
        for problem in bad:
            print(f"left out: {problem}", file=sys.stderr)
            problems += 1
        for cert in certificates:
            fingerprint = hashlib.sha256(cert.der).hexdigest()
            if fingerprint not in found:
                found[fingerprint] = {"cert": cert, "purposes": set(), "sources": []}
                order.append(fingerprint)
            found[fingerprint]["purposes"].update(item["purposes"])
            found[fingerprint]["sources"].append(item["source"])
    bundle = [found[f]["cert"] for f in order]
    entries, blocks = [], []
    for fingerprint in order:
        record = found[fingerprint]
        cert: ReadCertificate = record["cert"]
        level = "intermediate" if _issued_within(cert, bundle) else "root"
        uses = [u for u in BUNDLE_USES if u.split("-")[0] in record["purposes"]]
        uses = [u for u in uses if u.endswith(level)]
        source = record["sources"][0]
        subject = cert.certificate.subject.rfc4514_string()
        issuer = cert.certificate.issuer.rfc4514_string()
        not_after = cert.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        entries.append({
            "file": PEM_NAME, "subject": subject, "issuer": issuer, "sha256": fingerprint,
            "not_after": not_after, "uses": uses, "source": source,
            "also_in": record["sources"][1:],
        })  # fmt: skip
        where = f"{source['repository']}@{source['commit'][:12]} {source['path']}"
        blocks.append(
            f"# Subject: {subject}\n# Issuer: {issuer}\n# Not after: {not_after}\n"
            f"# SHA-256: {fingerprint}\n# Uses: {', '.join(uses)}\n"
            f"# Source: {where} ({source['licence']})\n"
            + ssl.DER_cert_to_PEM_cert(cert.der)
        )
    out.mkdir(parents=True, exist_ok=True)
    header = (
        "# TPM makers' CA certificates shipped with entra_keys: see manifest.json for each\n"
        "# certificate's source and licence, and scripts/ca_bundle.py to rebuild it.\n\n"
    )
    (out / PEM_NAME).write_text(header + "\n".join(blocks))
    manifest = {"format": 1, "sources": spec["inputs"], "certificates": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(entries)} certificates written to {out} ({problems} left out)")
    return 0


def check(out: Path) -> int:
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {e["sha256"]: e for e in manifest["certificates"]}
    errors = []
    shipped: set[str] = set()
    for name in {e["file"] for e in manifest["certificates"]}:
        certificates, problems = load_ca_bundle((out / name).read_bytes(), name)
        errors += [str(p) for p in problems]
        for cert in certificates:
            fingerprint = hashlib.sha256(cert.der).hexdigest()
            shipped.add(fingerprint)
            entry = listed.get(fingerprint)
            if entry is None:
                errors.append(f"{name}: {cert.name!r} ({fingerprint}) is not in the manifest")
            elif entry["subject"] != cert.certificate.subject.rfc4514_string():
                errors.append(f"{fingerprint}: the manifest's subject is not the certificate's")
    errors += [f"{f}: in the manifest, not in the files" for f in set(listed) - shipped]
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(shipped)} certificates, {len(errors)} problems")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write tpm-cas.pem and manifest.json")
    make.add_argument("sources", type=Path, help="the sources file (JSON)")
    make.add_argument("--base", type=Path, required=True, help="where the inputs' paths start")
    make.add_argument("--out", type=Path, default=OUT)
    verify = commands.add_parser("check", help="check the shipped files against the manifest")
    verify.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.sources, args.base, args.out)
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
