"""examples/join_agent.py runs as written (on a swtpm, and on software where tpm2-pytss is
missing), and the README's "In Python" is an excerpt of it: every line, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import entra_keys
from entra_keys.testing.swtpm import swtpm_available

from .helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "join_agent.py"
SRC = Path(entra_keys.__file__).resolve().parents[1]


def run_example(
    tmp_path: Path, *, hide_tpm2_pytss: bool = False
) -> subprocess.CompletedProcess[str]:
    path = [str(SRC)]
    if hide_tpm2_pytss:  # a package of that name that cannot be imported, first on the path
        hidden = tmp_path / "hidden" / "tpm2_pytss"
        hidden.mkdir(parents=True)
        (hidden / "__init__.py").write_text("raise ImportError('tpm2_pytss is not installed')\n")
        path.insert(0, str(hidden.parent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def lines_of(output: str) -> list[str]:
    return output.splitlines()


def test_the_join_agent_runs_on_a_swtpm(tmp_path: Path) -> None:
    if not swtpm_available():
        unavailable("swtpm is not installed")
    done = run_example(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = lines_of(done.stdout)
    assert out[0] == "provider: tpm"
    assert re.fullmatch(r"joined: DeviceId [0-9a-f-]{36}, attested True", out[1]), out
    assert out[2] == "PRT: token_type pop, session key in the TPM"
    assert out[-2] == "left: device deleted, 6 entries removed from the store"
    assert out[-1] == "done: joined, used the PRT and left"
    assert done.stderr == ""
    # the swtpm it started is gone, and the temporary directory with it
    assert list(tmp_path.iterdir()) == []


def test_the_join_agent_runs_on_software_without_tpm2_pytss(tmp_path: Path) -> None:
    done = run_example(tmp_path, hide_tpm2_pytss=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = lines_of(done.stdout)
    assert out[0].startswith("no swtpm for this run (")
    assert "tpm2-pytss is not usable" in out[0] or "swtpm is not installed" in out[0]
    assert out[1] == "provider: software"
    assert out[2].endswith("attested False")  # a software attestation proves nothing
    assert out[3] == "PRT: token_type pop, session key in software"
    assert out[-1] == "done: joined, used the PRT and left"


def readme_python() -> list[str]:
    """The lines of the README's "In Python" code block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## In Python\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "no python block in the README's In Python section"
    return found.group(1).splitlines()


def test_the_readme_snippet_is_an_excerpt_of_the_example_in_order() -> None:
    snippet = [line.strip() for line in readme_python() if line.strip()]
    assert len(snippet) > 40 and any("registration_request(" in line for line in snippet)
    example = iter(line.strip() for line in EXAMPLE.read_text().splitlines())
    for number, line in enumerate(snippet, 1):
        # consumes the example up to the line: each line must come after the one before
        assert any(line == candidate for candidate in example), (
            f"README In Python line {number} is not in examples/join_agent.py after the one "
            f"before it: {line!r}"
        )


def test_a_line_out_of_order_or_missing_is_found() -> None:
    """The check above fails for a snippet that is not an excerpt (its negative control)."""
    example = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    first, second = (
        'ak = store.create("ak", KeyType.RSA2048, KeyUsage.ATTEST)',
        ('device = store.create("device", KeyType.RSA2048, KeyUsage.SIGN)'),
    )
    assert first in example and second in example

    def is_excerpt(snippet: list[str]) -> bool:
        lines = iter(example)
        return all(any(line == c for c in lines) for line in snippet)

    assert is_excerpt([second, first])
    assert not is_excerpt([first, second])
    assert not is_excerpt([second, "send(leave_request(registration.device_id))"])
