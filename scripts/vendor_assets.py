#!/usr/bin/env python3
"""Vendored front-end assets: pinned npm packages copied into allot/web/static/vendor/.

Deployments are offline, so every browser asset is served from our own static dir.
The pins below are the source of truth; MANIFEST.json records what was copied and
the sha256 of every copied file.

    python scripts/vendor_assets.py verify   # check files against MANIFEST.json
    python scripts/vendor_assets.py fetch    # re-download the pins with `npm pack`

To bump a package: edit its version in PINS, run `fetch`, review the diff, run the tests
(tests/web/test_no_external_urls.py scans the new files for external loads).

Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = REPO_ROOT / "allot" / "web" / "static" / "vendor"
MANIFEST_NAME = "MANIFEST.json"


@dataclass(frozen=True)
class Pin:
    """One npm package to vendor. Paths in `files` and licence fields are inside the tarball
    (relative to its `package/` dir); each file is copied flat into vendor/<name>/."""

    name: str
    npm_package: str
    version: str
    licence: str  # SPDX id
    files: tuple[str, ...]
    licence_file: str
    # NOTICE files and the third-party licence texts webpack extracts from bundles.
    extra_licence_files: tuple[str, ...] = field(default=())


PINS: tuple[Pin, ...] = (
    Pin(
        name="htmx",
        npm_package="htmx.org",
        version="2.0.11",
        licence="0BSD",
        files=("dist/htmx.min.js",),
        licence_file="LICENSE",
    ),
    Pin(
        name="htmx-ext-sse",
        npm_package="htmx-ext-sse",
        version="2.2.4",
        licence="0BSD",  # package.json has no "license"; its LICENSE file is 0BSD
        files=("dist/sse.js",),
        licence_file="LICENSE",
    ),
    Pin(
        name="pico",
        npm_package="@picocss/pico",
        version="2.1.1",
        licence="MIT",
        files=("css/pico.min.css",),
        licence_file="LICENSE.md",
    ),
    Pin(
        name="swagger-ui",
        npm_package="swagger-ui-dist",
        version="5.35.0",
        licence="Apache-2.0",
        files=("swagger-ui-bundle.js", "swagger-ui.css"),
        licence_file="LICENSE",
        extra_licence_files=("NOTICE", "swagger-ui-bundle.js.LICENSE.txt"),
    ),
    Pin(
        name="redoc",
        npm_package="redoc",
        version="2.5.4",
        licence="MIT",
        files=("bundles/redoc.standalone.js",),
        licence_file="LICENSE",
        extra_licence_files=("bundles/redoc.standalone.js.LICENSE.txt",),
    ),
)

REQUIRED_KEYS = ("name", "version", "npm_package", "licence", "files", "licence_file")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(vendor_dir: Path = VENDOR_DIR) -> list[dict]:
    return json.loads((vendor_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


def licence_paths(entry: dict) -> list[str]:
    """Every licence/notice file an entry declares (relative to the vendor dir)."""
    return [entry["licence_file"], *entry.get("extra_licence_files", [])]


def _is_safe_relative(rel: str) -> bool:
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def verify(vendor_dir: Path = VENDOR_DIR, pins: tuple[Pin, ...] | None = PINS) -> list[str]:
    """Return a list of problems (empty when everything matches the manifest).

    Checks: every manifest entry is complete; every listed file exists with the recorded
    sha256; every licence file exists; no file under vendor_dir is unlisted; and, when
    `pins` is given, the manifest records exactly the pinned names and versions.
    """
    manifest_path = vendor_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return [f"{manifest_path}: missing"]
    try:
        entries = load_manifest(vendor_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{manifest_path}: unreadable ({exc})"]
    if not isinstance(entries, list):
        return [f"{manifest_path}: top level must be a list of entries"]

    problems: list[str] = []
    known = {MANIFEST_NAME}
    for entry in entries:
        label = entry.get("name", "<unnamed entry>")
        missing_keys = [key for key in REQUIRED_KEYS if not entry.get(key)]
        if missing_keys:
            problems.append(f"{label}: manifest entry lacks {', '.join(missing_keys)}")
            continue
        for item in entry["files"]:
            rel, expected = item.get("path", ""), item.get("sha256", "")
            if not _is_safe_relative(rel):
                problems.append(f"{label}: bad file path {rel!r}")
                continue
            known.add(rel)
            path = vendor_dir / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_of(path) != expected:
                problems.append(f"{rel}: sha256 mismatch (manifest says {expected})")
        for rel in licence_paths(entry):
            if not _is_safe_relative(rel):
                problems.append(f"{label}: bad licence path {rel!r}")
                continue
            known.add(rel)
            if not (vendor_dir / rel).is_file():
                problems.append(f"{rel}: licence file missing")

    for path in sorted(p for p in vendor_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(vendor_dir).as_posix()
        if rel not in known:
            problems.append(f"{rel}: not listed in {MANIFEST_NAME}")

    if pins is not None:
        recorded = {e.get("name"): e.get("version") for e in entries}
        wanted = {pin.name: pin.version for pin in pins}
        if recorded != wanted:
            problems.append(
                f"{MANIFEST_NAME} does not match PINS in {Path(__file__).name} "
                f"(manifest {recorded}, pins {wanted}); run `fetch`"
            )
    return problems


def npm_pack(spec: str, dest: Path) -> dict:
    """Download `spec` (name@version) into dest with `npm pack`; return npm's JSON record."""
    result = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)[0]


def fetch(vendor_dir: Path = VENDOR_DIR, pins: tuple[Pin, ...] = PINS) -> None:
    """Re-download every pin, replace vendor/<name>/ and rewrite MANIFEST.json."""
    old = {}
    if (vendor_dir / MANIFEST_NAME).is_file():
        old = {(e["name"], e["version"]): e for e in load_manifest(vendor_dir)}

    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for pin in pins:
            spec = f"{pin.npm_package}@{pin.version}"
            print(f"fetching {spec}")
            packed = npm_pack(spec, Path(tmp))
            previous = old.get((pin.name, pin.version))
            if previous and previous.get("npm_integrity") not in (None, packed["integrity"]):
                raise SystemExit(f"{spec}: registry tarball differs from the recorded one")

            target = vendor_dir / pin.name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            # Read only the members we need; nothing else from the tarball touches disk.
            with tarfile.open(Path(tmp) / packed["filename"], "r:gz") as tar:
                for member in (*pin.files, pin.licence_file, *pin.extra_licence_files):
                    source = tar.extractfile(f"package/{member}")
                    if source is None:
                        raise SystemExit(f"{spec}: {member} is not a regular file")
                    (target / Path(member).name).write_bytes(source.read())

            def rel(member: str, pin: Pin = pin) -> str:
                return f"{pin.name}/{Path(member).name}"

            entries.append(
                {
                    "name": pin.name,
                    "version": pin.version,
                    "npm_package": pin.npm_package,
                    "npm_integrity": packed["integrity"],
                    "licence": pin.licence,
                    "files": [
                        {"path": rel(f), "sha256": sha256_of(vendor_dir / rel(f))}
                        for f in pin.files
                    ],
                    "licence_file": rel(pin.licence_file),
                    "extra_licence_files": [rel(f) for f in pin.extra_licence_files],
                }
            )

    manifest = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
    (vendor_dir / MANIFEST_NAME).write_text(manifest, encoding="utf-8")
    print(f"wrote {vendor_dir / MANIFEST_NAME}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor-dir", type=Path, default=VENDOR_DIR, help="default: %(default)s")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("verify", help="check vendored files against MANIFEST.json")
    commands.add_parser("fetch", help="re-download the pinned versions and rewrite the manifest")
    args = parser.parse_args(argv)

    if args.command == "fetch":
        fetch(args.vendor_dir)
    problems = verify(args.vendor_dir)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {args.vendor_dir} matches {MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
