"""One pager for every paginated list: the macro in `_macros.html`, and no page of its own."""

from __future__ import annotations

from pathlib import Path

from allot.kernel.i18n import using_locale
from allot.kernel.web.templating import get_templates, template_dirs

PAGER_MARKUP = 'rel="next"'


def templates() -> list[Path]:
    return [path for folder in template_dirs() for path in folder.rglob("*.html")]


def test_pagination_markup_lives_only_in_the_shared_macro():
    with_pager = sorted(
        str(path.relative_to(path.parents[2]))
        for path in templates()
        if PAGER_MARKUP in path.read_text() and path.name != "_macros.html"
    )
    assert with_pager == [], "use ui.pager(...) from _macros.html instead"


def test_every_list_that_pages_uses_the_macro():
    users = {f"{p.parent.name}/{p.name}" for p in templates() if "ui.pager(" in p.read_text()}
    assert users >= {
        "leads/list.html", "customers/index.html", "audit/index.html", "identity/users.html"
    }  # fmt: skip


def render_pager(**arguments) -> str:
    template = get_templates().env.from_string(
        '{% import "_macros.html" as ui %}{{ ui.pager(**arguments) }}'
    )
    with using_locale("ru"):
        return template.render(arguments=arguments)


def test_the_pager_links_to_the_next_page_and_swaps_the_results_with_htmx():
    html = render_pager(next_url="/leads?cursor=abc", label="Older leads", target="#lead-results")
    assert 'href="/leads?cursor=abc"' in html
    assert 'hx-get="/leads?cursor=abc" hx-target="#lead-results"' in html
    assert 'hx-push-url="true" rel="next"' in html
    assert "Older leads →" in html
    assert 'aria-label="Страницы"' in html


def test_without_a_target_the_pager_is_a_plain_link_and_without_a_url_nothing():
    html = render_pager(next_url="/admin/users?cursor=x")
    assert "hx-get" not in html
    assert "Следующая страница →" in html
    assert render_pager(next_url=None).strip() == ""
