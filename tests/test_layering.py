"""The package's layers, read from the source: no import cycle, and each layer imports down.

The import graph is built from the AST of every module in src/entra_keys, with the imports that
run when the module is imported (module level, in class bodies and under ``if``/``try``; not in
functions, not under ``if TYPE_CHECKING``). Importing ``a.b.c`` also runs ``a.b``'s
``__init__``, so an edge goes to each package of the target that is not one of the importer's
own. Run this file as a script to print the cycles (``python tests/test_layering.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "entra_keys"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run on import: not function bodies, not ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _import_time_statements(block)
            yield from _import_time_statements(node.finalbody)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _import_time_statements(node.body)
        else:
            yield node


def _imported(module: str, is_package: bool, node: ast.stmt, modules: set[str]) -> set[str]:
    """The modules of src/ an import statement names (a ``from`` target's submodules too)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    found = {f"{target}.{alias.name}" for alias in node.names} & modules
    if len(found) < len(node.names) and target in modules:
        found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of src/ that importing it runs (module-level imports only)."""
    paths = _module_names()
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        is_package = path.name == "__init__.py"
        own = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
        edges: set[str] = set()
        for node in _import_time_statements(ast.parse(path.read_text(), str(path)).body):
            for target in _imported(module, is_package, node, modules):
                parts = target.split(".")
                packages = {".".join(parts[:i]) for i in range(1, len(parts))}
                edges |= {target, *(packages - own)}
        edges.discard(module)
        graph[module] = edges
    return graph


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


def all_imports(path: Path) -> set[str]:
    """Every module an import anywhere in the file names (functions included), absolute."""
    module = next(name for name, p in _module_names().items() if p == path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= _imported(module, path.name == "__init__.py", node, set(_module_names()))
            if not node.level and node.module:
                names.add(node.module)
    return names


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The control: a graph with a cycle is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _in(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_pure_verifier_is_below_the_key_layer() -> None:
    """Only the software producer in attestation/ imports the key layer (it signs with a key);
    the TPM facts and the records import neither the key layer nor the verifier."""
    key_layer = {f"{PACKAGE}.provider", f"{PACKAGE}.providers"}
    for name, path in _module_names().items():
        if _in(name, {f"{PACKAGE}.attestation"}) and name != f"{PACKAGE}.attestation.software":
            assert not {m for m in all_imports(path) if _in(m, key_layer)}, name
    above = key_layer | {f"{PACKAGE}.attestation.verifier", f"{PACKAGE}.attestation.software"}
    for name in (f"{PACKAGE}.tpm_model", f"{PACKAGE}.attestation.records"):
        assert not {m for m in all_imports(_module_names()[name]) if _in(m, above)}, name


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
        f"{PACKAGE}.attestation.structures",
        f"{PACKAGE}.providers.tpm._endorsement",
        f"{PACKAGE}.providers.tpm._sealing",
    }
    assert not unneeded & loaded, unneeded & loaded


def test_the_structures_do_not_load_the_verifier() -> None:
    loaded = _loaded_after("import entra_keys.attestation.structures")
    assert not {f"{PACKAGE}.attestation.verifier", f"{PACKAGE}.attestation.software"} & loaded


def test_attestation_exports_each_name_from_its_module() -> None:
    """The lazy package exports exactly ``__all__``, each name the object of its submodule."""
    import importlib

    import entra_keys.attestation as package

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

    for name in ("tpm_model", "attestation.records", "attestation.tpm2_tools"):
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
    """The providers' labels and the key store's are the ones in tpm_model."""
    from entra_keys.providers.software import SoftwareProvider
    from entra_keys.providers.tpm import TPMProvider
    from entra_keys.tpm_model import ENCRYPTED_PEM_LABELS, KIND_BY_PEM_LABEL, PEM_LABELS

    for provider in (SoftwareProvider, TPMProvider):
        assert provider.pem_labels == PEM_LABELS[provider.kind]
    assert set(KIND_BY_PEM_LABEL) == PEM_LABELS["tpm"] | PEM_LABELS["software"]
    assert ENCRYPTED_PEM_LABELS.issubset(PEM_LABELS["software"])


if __name__ == "__main__":
    for cycle in cycles(import_graph()):
        print(" -> ".join(cycle))


def test_structures_exports_the_wire_names_and_its_own() -> None:
    """``structures`` re-exports every name of ``_wire`` (its ``__all__`` derives from it), each
    the same object, and its own structures; no name twice, none missing."""
    from entra_keys.attestation import _wire, structures

    assert len(structures.__all__) == len(set(structures.__all__))
    assert set(_wire.__all__) <= set(structures.__all__)
    for name in _wire.__all__:
        assert getattr(structures, name) is getattr(_wire, name), name
    own = set(structures.__all__) - set(_wire.__all__)
    assert {"TPMSAttest", "TPMTPublic", "TPMTSignature", "TPMLPCRSelection"} <= own
    assert all(hasattr(structures, name) for name in own)
    star: dict[str, object] = {}
    exec("from entra_keys.attestation.structures import *", star)
    assert set(star) - {"__builtins__"} == set(structures.__all__)
