"""The layering contracts in `.importlinter` hold, and would catch a violation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.architecture.boundaries import REPO_ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(
    cwd: Path, config: Path, extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(config), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    result = lint_imports(REPO_ROOT, REPO_ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_catch_kernel_and_context_imports_upward(tmp_path: Path) -> None:
    # A miniature Allot named `fakeallot`, checked by OUR contracts with the name swapped.
    files = {
        "__init__.py": "",
        "app.py": "",
        "cli/__init__.py": "",
        "kernel/__init__.py": "",
        "kernel/bad.py": "import fakeallot.cli\n",
        "contexts/__init__.py": "",
        "contexts/leads/__init__.py": "",
        "contexts/leads/service.py": "from fakeallot import app\n",
    }
    for name, text in files.items():
        path = tmp_path / "fakeallot" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = (REPO_ROOT / ".importlinter").read_text()
    config = config.replace("root_package = allot", "root_package = fakeallot")
    config = config.replace("allot.", "fakeallot.")
    (tmp_path / ".importlinter").write_text(config)

    result = lint_imports(tmp_path, tmp_path / ".importlinter", extra_path=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 broken" in result.stdout
    assert "fakeallot.kernel.bad -> fakeallot.cli" in result.stdout
    assert "fakeallot.contexts.leads.service -> fakeallot.app" in result.stdout
