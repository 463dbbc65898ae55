"""The package's layers, read from the source: each layer imports only those below it, no cycle.

The import graph is built from the AST of every module in src/entra_keys (and benchmarks/): every
import statement counts, at module level, in functions and under ``if TYPE_CHECKING`` alike, so
a lazy import cannot hide an arrow that runs back up. Importing ``a.b.c`` also runs ``a.b``'s
``__init__``, so an edge goes to each package of the target that is not one of the importer's
own. Run this file as a script to print the cycles and the upward arrows
(``python tests/test_layering.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = "entra_keys"

#: The layers of src/entra_keys, bottom up: a module may import its own layer and those below.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer)
    for layer in (
        {"errors"},
        {"_json"},
        {"tcg"},
        {"formats"},
        {"attestation"},
        {"provider"},
        {"providers"},
        {"store"},
        {"session"},
        {"protocol"},
        {"testing"},
        {"cli"},
    )
)


def layer_of(module: str) -> int | None:
    """The layer of a module of the package (None for the package itself, the public face)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    for index, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _module_names(root: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(module: str, is_package: bool, node: ast.stmt, modules: set[str]) -> set[str]:
    """The modules an import statement names, absolute (a ``from`` target's submodules too)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    found = {f"{target}.{alias.name}" for alias in node.names} & modules
    if len(found) < len(node.names):
        found.add(target)
    return found


def _edges(module: str, path: Path, modules: set[str]) -> Iterator[str]:
    """Every module of ``modules`` an import anywhere in the file runs, with the packages on
    the way (their ``__init__`` runs too) that are not the importer's own."""
    own = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in _imported(module, path.name == "__init__.py", node, modules):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in modules and (name not in own or i == len(parts)):
                    yield name


def import_graph(names: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of the same tree that its imports (anywhere in it) run."""
    paths = names if names is not None else _module_names()
    modules = set(paths)
    return {module: set(_edges(module, path, modules)) - {module} for module, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports a layer above its own."""
    arrows = []
    for module, targets in graph.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                arrows.append((module, target))
    return sorted(arrows)


def all_imports(path: Path) -> set[str]:
    """Every module an import anywhere in the file names (functions included), absolute."""
    names = _module_names()
    module = next(name for name, p in names.items() if p == path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        found |= _imported(module, path.name == "__init__.py", node, set(names))
    return found


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_benchmarks_have_no_import_cycle() -> None:
    assert cycles(import_graph(_module_names(ROOT, "benchmarks"))) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The control: a graph with a cycle is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_runs_down_the_layers() -> None:
    assert upward_arrows(import_graph()) == []


def test_the_layer_check_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The control: an import inside a function or under TYPE_CHECKING is an arrow too."""
    package = tmp_path / PACKAGE
    (package / "tcg").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tcg" / "__init__.py").write_text("")
    (package / "store.py").write_text("")
    (package / "cli.py").write_text("")
    (package / "tcg" / "low.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .. import cli\n"
        "def f():\n    from ..store import x\n"
    )
    graph = import_graph(_module_names(tmp_path))
    assert upward_arrows(graph) == [
        (f"{PACKAGE}.tcg.low", f"{PACKAGE}.cli"),
        (f"{PACKAGE}.tcg.low", f"{PACKAGE}.store"),
    ]


def _in(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_verifier_imports_no_key_layer() -> None:
    """The pure verifier (attestation/) and what the specifications define (tcg/) import
    neither the key layer nor the stores above it: a verifier needs no provider."""
    key_layer = {f"{PACKAGE}.provider", f"{PACKAGE}.providers", f"{PACKAGE}.store"}
    for name, path in _module_names().items():
        if _in(name, {f"{PACKAGE}.attestation", f"{PACKAGE}.tcg"}):
            assert not {m for m in all_imports(path) if _in(m, key_layer)}, name


def test_tpm2_pytss_only_in_the_tpm_provider() -> None:
    for name, path in _module_names().items():
        if not _in(name, {f"{PACKAGE}.providers.tpm"}):
            assert not {m for m in all_imports(path) if _in(m, {"tpm2_pytss"})}, name


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_entra_keys_does_not_load_x509() -> None:
    assert "cryptography.x509" not in _loaded_after("import entra_keys")


def test_the_sign_path_imports_only_what_it_needs() -> None:
    """A new process that opens a provider and reaches a key (what ``entra-keys sign`` and a
    join agent's first signature do) loads neither the session, the protocol, the verifier nor
    the software provider: the cold start stays near ``import tpm2_pytss``."""
    loaded = _loaded_after(
        "import entra_keys\n"
        "from entra_keys.providers.tpm import TPMProvider\n"
        "from entra_keys import KeyStore, open_provider"
    )
    unneeded = {
        f"{PACKAGE}.session",
        f"{PACKAGE}.formats",
        f"{PACKAGE}.protocol",
        f"{PACKAGE}.attestation.verifier",
        f"{PACKAGE}.providers.software",
        f"{PACKAGE}.cli",
        f"{PACKAGE}.tcg.structures",
        f"{PACKAGE}.providers.tpm._endorsement",
        f"{PACKAGE}.providers.tpm._sealing",
    }
    assert not unneeded & loaded, unneeded & loaded


def test_the_structures_do_not_load_the_verifier() -> None:
    loaded = _loaded_after("import entra_keys.tcg.structures")
    assert not {f"{PACKAGE}.attestation.verifier", f"{PACKAGE}.providers.software_attest"} & loaded


@pytest.mark.parametrize("package_name", ["attestation", "tcg"])
def test_lazy_packages_export_each_name_from_its_module(package_name: str) -> None:
    """A lazy package exports exactly ``__all__``, each name the object of its submodule."""
    import importlib

    package = importlib.import_module(f"{PACKAGE}.{package_name}")
    assert set(package._EXPORTS) == set(package.__all__)
    for name, module in package._EXPORTS.items():
        home = importlib.import_module(f"{package.__name__}.{module}")
        assert getattr(package, name) is getattr(home, name), name
    with pytest.raises(AttributeError):
        _ = package.no_such_name


def test_the_new_homes_export_their_names() -> None:
    """Every public function and class of the TPM facts, the records and the tpm2-tools files is
    in its module's ``__all__``."""
    import importlib

    for name in ("tcg.model", "tcg.records", "tcg.tpm2_tools"):
        module = importlib.import_module(f"{PACKAGE}.{name}")
        public = {
            key
            for key, value in vars(module).items()
            if not key.startswith("_")
            and callable(value)
            and getattr(value, "__module__", None) == module.__name__
        }
        assert public <= set(module.__all__), (name, public - set(module.__all__))
        assert all(hasattr(module, key) for key in module.__all__), name


def test_pem_labels_have_one_home() -> None:
    """The providers' labels and the key store's are the ones in tcg.model."""
    from entra_keys.providers.software import SoftwareProvider
    from entra_keys.providers.tpm import TPMProvider
    from entra_keys.tcg.model import ENCRYPTED_PEM_LABELS, KIND_BY_PEM_LABEL, PEM_LABELS

    for provider in (SoftwareProvider, TPMProvider):
        assert provider.pem_labels == PEM_LABELS[provider.kind]
    assert set(KIND_BY_PEM_LABEL) == PEM_LABELS["tpm"] | PEM_LABELS["software"]
    assert ENCRYPTED_PEM_LABELS.issubset(PEM_LABELS["software"])


if __name__ == "__main__":
    for cycle in cycles(import_graph()):
        print("cycle:", " -> ".join(cycle))
    for importer, imported in upward_arrows(import_graph()):
        print("upward:", importer, "->", imported)


def test_structures_exports_the_wire_names_and_its_own() -> None:
    """``structures`` re-exports every name of ``wire`` (its ``__all__`` derives from it), each
    the same object, and its own structures; no name twice, none missing."""
    from entra_keys.tcg import structures
    from entra_keys.tcg import wire as _wire

    assert len(structures.__all__) == len(set(structures.__all__))
    assert set(_wire.__all__) <= set(structures.__all__)
    for name in _wire.__all__:
        assert getattr(structures, name) is getattr(_wire, name), name
    own = set(structures.__all__) - set(_wire.__all__)
    assert {"TPMSAttest", "TPMTPublic", "TPMTSignature", "TPMLPCRSelection"} <= own
    assert all(hasattr(structures, name) for name in own)
    star: dict[str, object] = {}
    exec("from entra_keys.tcg.structures import *", star)
    assert set(star) - {"__builtins__"} == set(structures.__all__)
