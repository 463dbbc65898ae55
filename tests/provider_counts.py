"""How many test functions run over every provider: ``python -m tests.provider_counts [--list]``.

Collects the suite (benchmarks included, nothing run) and sorts each test function (all its
parametrized items together) into the first group that fits:

- every provider: one of its parameters takes every kind in ``PROVIDERS`` (the ``provider``
  fixture and those built on it, or a ``kind`` parameter over the providers);
- TPM only: it needs a TPM (a fixture named for a TPM or tpm2-abrmd, the ``tpm`` mark, or its
  source or its fixtures' starts a swtpm or opens the TPM provider);
- software only: its source or its fixtures' opens the software provider or makes software keys
  or EKs;
- no provider: the rest (parsers, the verifier, the protocol's fields, KDFs, the layering).

The README's test section quotes these numbers; ``--list`` prints each function's group.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import io
import re
import sys
from pathlib import Path

import pytest

from .contract.providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("every provider", "TPM only", "software only", "no provider")
#: A fixture that is or gives a TPM (swtpm, own_swtpm, own_tpm, tpm_provider, tabrmd, ...).
TPM_FIXTURE = re.compile(r"tpm|tabrmd")
#: Source that starts a swtpm or opens the TPM provider.
TPM_SOURCE = re.compile(r'Swtpm\(|open_provider\("tpm"|"--provider", "tpm"')
SOFTWARE_SOURCE = re.compile(
    r'open_provider\("software"\)|"--provider", "software"|SoftwareProvider|software_key\('
    r"|software_endorsement_key|software_tpmt_public"
)


def _sources(item: pytest.Item) -> str:
    """The source of the test function and of every fixture it uses (conftest's too)."""
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)  # pytest keeps the fixture definitions here
    for definitions in info.name2fixturedefs.values() if info else ():
        functions += [definition.func for definition in definitions]
    texts = []
    for function in functions:
        if function is not None and not getattr(function, "__module__", "").startswith("_pytest"):
            with contextlib.suppress(OSError, TypeError):
                texts.append(inspect.getsource(function))
    return "\n".join(texts)


def group(items: list[pytest.Item]) -> str:
    """The group of one test function, from its collected items."""
    values: dict[str, set[object]] = collections.defaultdict(set)
    for item in items:
        callspec = getattr(item, "callspec", None)
        for name, value in callspec.params.items() if callspec else ():
            values[name].add(value if isinstance(value, str) else None)
    if any(set(PROVIDERS) <= seen for seen in values.values()):
        return "every provider"
    source = _sources(items[0])
    if (
        any(TPM_FIXTURE.search(name) for item in items for name in item.fixturenames)
        or any(item.get_closest_marker("tpm") for item in items)
        or TPM_SOURCE.search(source)
    ):
        return "TPM only"
    if SOFTWARE_SOURCE.search(source):
        return "software only"
    return "no provider"


class Counter:
    """A pytest plugin that sorts the collected test functions into GROUPS."""

    def __init__(self) -> None:
        self.functions: dict[str, list[pytest.Item]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        functions: dict[str, list[pytest.Item]] = collections.defaultdict(list)
        for item in items:
            functions[item.nodeid.split("[")[0]].append(item)
        self.functions = dict(functions)


def main(argv: list[str]) -> int:
    counter = Counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = pytest.main(
            ["--collect-only", "-q", "-m", "", "-p", "no:cacheprovider", str(ROOT / "tests")],
            plugins=[counter],
        )
    if code != 0:
        print(out.getvalue())
        return int(code)
    groups = {name: group(items) for name, items in counter.functions.items()}
    total = len(groups)
    counts = collections.Counter(groups.values())
    contract = sum(1 for name in groups if name.startswith("tests/contract/"))
    items = sum(len(items) for items in counter.functions.values())
    print(f"{total} test functions ({items} items); providers: {', '.join(PROVIDERS)}")
    for name in GROUPS:
        note = f" ({contract} of them in tests/contract/)" if name == "every provider" else ""
        print(f"  {name:15} {counts[name]:4}{note}")
    if "--list" in argv:
        for name in GROUPS:
            print(f"\n{name}:")
            for function in sorted(n for n, g in groups.items() if g == name):
                print(f"  {function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
