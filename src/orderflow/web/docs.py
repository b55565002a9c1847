"""The API's documentation page (/docs), served whole from the package: no CDN, works offline.

Swagger UI's script, style sheet and icon come from the `swagger-ui-py` package's files
(FastAPI's "self-hosting JavaScript and CSS for docs"); ReDoc, which has no such package, is
not offered.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS = Path(swagger_ui.__file__).parent / "static"
SERVED = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
PREFIX = "/docs/assets"


def install(app: FastAPI) -> None:
    """/docs with Swagger UI from the package (create the app with docs_url=None)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        )

    @app.get(PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media_type = SERVED.get(name)
        if media_type is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return FileResponse(ASSETS / name, media_type=media_type, headers=headers)
