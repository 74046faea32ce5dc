"""Server-rendered pages: Jinja2 with autoescaping on for every template, so whatever a user
typed (a name with <script> in it, say) is shown as text. No JavaScript; the one stylesheet is
served by the portal itself and the Content-Security-Policy allows nothing else."""

from datetime import datetime
from importlib import resources

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    # Pages show one organization's data to one person: no shared caches, no back-button copies.
    "cache-control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


class Pages:
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(resources.files("yggdrasil.portal.api") / "templates")),
            autoescape=True,  # every template, whatever its file name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters["when"] = _when

    def render(self, request: Request, template: str, status_code: int = 200,
               headers: dict[str, str] | None = None, **context: object) -> HTMLResponse:
        context.setdefault("viewer", None)
        context.setdefault("org", None)
        context.setdefault("role", None)
        html = self.env.get_template(template).render(request=request, **context)
        return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})

    def stylesheet(self) -> str:
        return (resources.files("yggdrasil.portal.api") / "templates" / "portal.css").read_text(encoding="utf-8")
