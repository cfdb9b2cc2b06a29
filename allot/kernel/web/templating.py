"""Jinja2 templates for every context: shell templates in `allot/web/templates`, each context's in
`allot/contexts/<ctx>/templates/<ctx>/`. htmx requests get a block, others the full page.

Values every page needs (the principal, CSRF token, flash messages, navigation) come from
"template processors": functions `request -> dict` listed in `app.state.template_processors`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.responses import Response

from allot.kernel import i18n

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def template_dirs() -> list[Path]:
    dirs = [PACKAGE_ROOT / "web" / "templates"]
    dirs += sorted(p for p in (PACKAGE_ROOT / "contexts").glob("*/templates") if p.is_dir())
    return dirs


@lru_cache(maxsize=1)
def get_templates() -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=[str(d) for d in template_dirs()])
    env = templates.env
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=True
    )
    env.filters["datetime"] = i18n.format_datetime
    env.filters["money"] = i18n.format_money
    env.globals["current_locale"] = i18n.locale_var.get
    env.autoescape = True
    return templates


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a page; for an htmx request with `block` given, only that block."""
    values: dict[str, Any] = {"request": request, **(context or {})}
    for processor in getattr(request.app.state, "template_processors", []):
        values.update(processor(request))
    kwargs: dict[str, Any] = {}
    if block is not None and is_htmx(request):
        kwargs["block_name"] = block
    response: Response = get_templates().TemplateResponse(
        request, template, values, status_code=status_code, headers=headers, **kwargs
    )
    return response
