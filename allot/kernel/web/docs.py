"""Interactive API docs served from vendored assets (deployments are often offline)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

OPENAPI_URL = "/api/v1/openapi.json"
VENDOR = "/static/vendor"

router = APIRouter(include_in_schema=False)


@router.get("/api/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="Allot API",
        swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        # The bundle's default validator badge would call validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/api/redoc")
async def redoc() -> HTMLResponse:
    response = get_redoc_html(
        openapi_url=OPENAPI_URL,
        title="Allot API",
        redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
        redoc_favicon_url="/static/favicon.svg",
        with_google_fonts=False,
    )
    # ReDoc 2 always draws a footer logo from its CDN; forbid the request rather than leak it.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
    )
    return response
