"""The vendored front-end assets match MANIFEST.json (see scripts/vendor_assets.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "vendor_assets.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_assets", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


va = _load_script()


def test_vendor_dir_matches_manifest() -> None:
    # Every listed file exists with its sha256, every licence file exists, no file is
    # unlisted, every entry has name/version/licence/files, and the manifest matches PINS.
    assert va.verify() == []


def test_cli_verify_exits_zero() -> None:
    assert va.main(["verify"]) == 0


def test_expected_packages_are_vendored() -> None:
    entries = {e["name"]: e for e in va.load_manifest()}
    majors = {"htmx": "2", "htmx-ext-sse": "2", "pico": "2", "swagger-ui": "5", "redoc": "2"}
    assert set(entries) == set(majors)
    for name, major in majors.items():
        assert entries[name]["version"].split(".")[0] == major, name
    known_spdx = {"0BSD", "MIT", "Apache-2.0"}
    for entry in entries.values():
        assert entry["licence"] in known_spdx, entry["name"]
        assert entry["npm_integrity"].startswith("sha512-"), entry["name"]


# --- verify() catches problems ----------------------------------------------------------


def _make_vendor_dir(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "lib.js").write_text("var a = 1;\n", encoding="utf-8")
    (root / "lib" / "LICENSE").write_text("MIT\n", encoding="utf-8")
    (root / "lib" / "NOTICE").write_text("notice\n", encoding="utf-8")
    digest = hashlib.sha256(b"var a = 1;\n").hexdigest()
    manifest = [
        {
            "name": "lib",
            "version": "1.0.0",
            "npm_package": "lib",
            "licence": "MIT",
            "files": [{"path": "lib/lib.js", "sha256": digest}],
            "licence_file": "lib/LICENSE",
            "extra_licence_files": ["lib/NOTICE"],
        }
    ]
    (root / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def _rewrite_manifest(root: Path, change) -> None:
    manifest = json.loads((root / "MANIFEST.json").read_text(encoding="utf-8"))
    change(manifest[0])
    (root / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_verify_accepts_a_consistent_dir(tmp_path: Path) -> None:
    assert va.verify(_make_vendor_dir(tmp_path), pins=None) == []


def test_verify_names_a_modified_file(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    (root / "lib" / "lib.js").write_text("var a = 2;\n", encoding="utf-8")
    [problem] = va.verify(root, pins=None)
    assert problem.startswith("lib/lib.js: sha256 mismatch")


def test_verify_names_a_missing_file(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    (root / "lib" / "lib.js").unlink()
    assert va.verify(root, pins=None) == ["lib/lib.js: missing"]


def test_verify_flags_unlisted_files(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    (root / "lib" / "extra.css").write_text("a{}", encoding="utf-8")
    (root / "stray.js").write_text("", encoding="utf-8")
    assert va.verify(root, pins=None) == [
        "lib/extra.css: not listed in MANIFEST.json",
        "stray.js: not listed in MANIFEST.json",
    ]


def test_verify_flags_missing_licence_file(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    (root / "lib" / "NOTICE").unlink()
    assert va.verify(root, pins=None) == ["lib/NOTICE: licence file missing"]


def test_verify_flags_incomplete_entry(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    _rewrite_manifest(root, lambda entry: entry.pop("version"))
    problems = va.verify(root, pins=None)
    assert "lib: manifest entry lacks version" in problems


def test_verify_rejects_paths_outside_the_vendor_dir(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path / "vendor")
    _rewrite_manifest(root, lambda entry: entry["files"].append({"path": "../x", "sha256": ""}))
    assert "lib: bad file path '../x'" in va.verify(root, pins=None)


def test_verify_flags_manifest_out_of_date_with_pins(tmp_path: Path) -> None:
    root = _make_vendor_dir(tmp_path)
    pins = (va.Pin("lib", "lib", "2.0.0", "MIT", ("lib.js",), "LICENSE"),)
    [problem] = va.verify(root, pins=pins)
    assert "does not match PINS" in problem


def test_verify_reports_a_missing_manifest(tmp_path: Path) -> None:
    [problem] = va.verify(tmp_path, pins=None)
    assert problem.endswith("MANIFEST.json: missing")
