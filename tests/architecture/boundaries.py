"""Checks on the shape of the code base, written as plain functions so tests can run them on
the real code and on small synthetic inputs (proving each check can fail)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grimp
from sqlalchemy import MetaData

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTEXTS_PACKAGE = "allot.contexts"


@dataclass(frozen=True)
class ImportViolation:
    importer: str
    imported: str
    line_number: int | None
    line_contents: str

    def __str__(self) -> str:
        return (
            f"{module_path(self.importer)}:{self.line_number}: {self.importer} imports "
            f"{self.imported} ({self.line_contents.strip()}); import the package "
            f"{'.'.join(self.imported.split('.')[:3])} instead"
        )


def module_path(module: str) -> str:
    """The file of a module, relative to the repository (best effort for synthetic graphs)."""
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return str(candidate.relative_to(REPO_ROOT))
    return module.replace(".", "/") + ".py"


def context_of(module: str, contexts_package: str = CONTEXTS_PACKAGE) -> str | None:
    """`allot.contexts.leads.service` -> `leads`; None outside the contexts."""
    prefix = contexts_package + "."
    if not module.startswith(prefix):
        return None
    return module[len(prefix) :].split(".")[0]


def cross_context_imports(
    graph: grimp.ImportGraph, contexts_package: str = CONTEXTS_PACKAGE
) -> list[ImportViolation]:
    """Imports from one context into ANOTHER context's inner modules (only its package
    `allot.contexts.<other>`, the public interface, may be imported)."""
    violations = []
    for importer in sorted(graph.modules):
        own = context_of(importer, contexts_package)
        if own is None:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            other = context_of(imported, contexts_package)
            if other is None or other == own:
                continue
            if imported == f"{contexts_package}.{other}":
                continue
            for detail in graph.get_import_details(importer=importer, imported=imported) or [
                {"line_number": None, "line_contents": ""}
            ]:
                violations.append(
                    ImportViolation(
                        importer=importer,
                        imported=imported,
                        line_number=detail["line_number"],
                        line_contents=detail["line_contents"] or "",
                    )
                )
    return violations


def table_context(table_name: str) -> str:
    """The owner of a table: its name up to the first underscore (`leads_leads` -> `leads`)."""
    return table_name.split("_", 1)[0]


def cross_context_foreign_keys(metadata: MetaData) -> list[str]:
    problems = []
    for table in metadata.sorted_tables:
        for fk in sorted(table.foreign_keys, key=lambda fk: fk.target_fullname):
            target = fk.target_fullname.split(".")[0]
            if table_context(target) != table_context(table.name):
                problems.append(
                    f"{table.name}.{fk.parent.name} -> {fk.target_fullname}: a foreign key into "
                    f"another context's table; store the id without a foreign key"
                )
    return problems


def unowned_tables(metadata: MetaData, owners: set[str]) -> list[str]:
    return [
        f"{table.name}: name must start with one of {sorted(f'{o}_' for o in owners)}"
        for table in metadata.sorted_tables
        if table_context(table.name) not in owners or "_" not in table.name
    ]
