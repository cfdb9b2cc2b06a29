"""Contexts depend on each other only through their public package (`allot.contexts.<ctx>`)."""

from __future__ import annotations

import grimp

from tests.architecture.boundaries import cross_context_imports


def test_contexts_import_only_each_others_public_package() -> None:
    graph = grimp.build_graph("allot", cache_dir=None)
    violations = cross_context_imports(graph)
    assert not violations, "Imports into another context's inner modules:\n" + "\n".join(
        str(v) for v in violations
    )


def test_the_check_reports_an_import_of_another_contexts_inner_module() -> None:
    graph = grimp.ImportGraph()
    for module in (
        "allot.contexts.leads",
        "allot.contexts.leads.service",
        "allot.contexts.identity",
        "allot.contexts.identity.models",
        "allot.contexts.identity.service",
        "allot.kernel.errors",
    ):
        graph.add_module(module)
    graph.add_import(
        importer="allot.contexts.leads.service",
        imported="allot.contexts.identity.models",
        line_number=7,
        line_contents="from allot.contexts.identity.models import User",
    )
    # Allowed: the public package, the kernel, and a context's own modules.
    graph.add_import(importer="allot.contexts.leads.service", imported="allot.contexts.identity")
    graph.add_import(importer="allot.contexts.leads.service", imported="allot.kernel.errors")
    graph.add_import(
        importer="allot.contexts.identity.service", imported="allot.contexts.identity.models"
    )

    violations = cross_context_imports(graph)

    assert [(v.importer, v.imported, v.line_number) for v in violations] == [
        ("allot.contexts.leads.service", "allot.contexts.identity.models", 7)
    ]
    assert "leads/service.py:7" in str(violations[0])
    assert "from allot.contexts.identity.models import User" in str(violations[0])
