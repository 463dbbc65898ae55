"""What a user of the built package gets: a wheel whose metadata says what it is (classifiers,
the licence, a description that starts with the install line) and an sdist that holds the
licence and everything the tests need, so that ``pytest`` runs from it unpacked.

The dists are built once per session from a copy of the source tree, offline: setuptools (the
``test`` extra) builds them in this interpreter, without an isolated build environment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from importlib.metadata import version
from pathlib import Path

import pytest

from .helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
INSTALL = 'pip install "entra_keys[tpm]"'
#: The system packages the tpm extra builds against, named where the description starts.
BUILD_PACKAGES = ("libtss2-dev", "pkg-config")
CLASSIFIERS = {
    "Development Status :: 3 - Alpha",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Python :: 3.11",
    "Topic :: Security :: Cryptography",
    "Typing :: Typed",
}
#: The directories the sdist ships whole: the tests need all of them.
SHIPPED = ("tests", "benchmarks", "examples", "swtpm", "scripts")
_JUNK = ("__pycache__", ".pytest_cache", ".hypothesis")
_BUILD = (  # build_meta changes sys.argv: read the directory first
    "import sys; from setuptools import build_meta as b; out = sys.argv[1]; "
    "b.build_sdist(out); b.build_wheel(out)"
)


def _source_files(directory: Path) -> set[str]:
    """The files of a source directory, relative to the root, without caches and bytecode."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix not in (".pyc", ".pyo")
        and not any(part in _JUNK for part in path.parts)
    }


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) built from a copy of the source tree."""
    major = int(version("setuptools").split(".")[0])
    if major < 77:
        unavailable(f"setuptools {version('setuptools')} cannot build it (>= 77: the test extra)")
    tree = tmp_path_factory.mktemp("package") / "tree"
    shutil.copytree(
        ROOT,
        tree,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "bench-out", ".*_cache", *_JUNK
        ),
    )
    out = tree.parent / "dist"
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_the_wheel_metadata_says_what_the_package_is(dists: tuple[Path, Path]) -> None:
    metadata = _metadata(dists[0])
    assert set(metadata.get_all("Classifier", [])) >= CLASSIFIERS
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Author"] == "entra_keys developers"
    assert {"tpm", "entra", "attestation"} <= set(metadata["Keywords"].split(","))
    assert metadata["Requires-Python"] == ">=3.11"
    # PyPI takes only absolute http(s) project URLs; the repository's is not known yet.
    assert all(re.match(r"[^,]+, https://", url) for url in metadata.get_all("Project-URL", []))
    with zipfile.ZipFile(dists[0]) as archive:
        names = archive.namelist()
    licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    with zipfile.ZipFile(dists[0]) as archive:
        assert archive.read(licence) == (ROOT / "LICENSE").read_bytes()
    assert "entra_keys/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


def test_the_description_starts_with_the_install_line(dists: tuple[Path, Path]) -> None:
    """PyPI shows the description: the first thing after the title is how to install, with
    the system packages the tpm extra builds against before the first section."""
    metadata = _metadata(dists[0])
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = metadata.get_payload()
    assert isinstance(description, str)
    content = [
        line
        for line in description.splitlines()
        if line.strip() and not line.startswith(("# ", "```"))
    ]
    assert content[0].startswith(INSTALL)
    opening = description.split("\n## ", 1)[0]
    for package in BUILD_PACKAGES:
        assert package in opening


def test_the_sdist_holds_the_licence_and_what_the_tests_need(dists: tuple[Path, Path]) -> None:
    with tarfile.open(dists[1]) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "SECURITY.md", "pyproject.toml"} <= set(members)
    for directory in SHIPPED:
        missing = _source_files(ROOT / directory) - set(members)
        assert not missing, f"the sdist lacks {sorted(missing)}"
    assert {"tests/conftest.py", "tests/helpers.py", "tests/__init__.py"} <= set(members)
    assert any(name.startswith("tests/vectors/") for name in members)
    for script in ("swtpm/start", "swtpm/stop", "swtpm/provision", "scripts/setup.sh"):
        assert members[script].mode & 0o111, f"{script} is not executable in the sdist"


def test_the_readme_names_the_debian_packages_setup_installs() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    wanted = re.search(r"^want=\(([^)]*)\)", setup, re.MULTILINE)
    assert wanted is not None
    packages = wanted[1].split() + re.findall(r"want\+=\(([\w.-]+)\)", setup)
    assert "libtss2-dev" in packages and "python3-dev" in packages  # the parse found them
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("Both install what they need first") :].split("\n\n")[0]
    sentence = " ".join(sentence.split())
    assert [
        p for p in packages if not re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", sentence)
    ] == []
