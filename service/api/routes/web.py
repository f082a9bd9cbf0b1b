"""The web page at ``/`` (static files of the package, no build step) and ``/v1/info``, what
the page asks first. The page talks to the public ``/v1`` API only; a strict Content
Security Policy keeps it to this origin."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.staticfiles import StaticFiles

from isvos import __version__
from isvos.config import get_config
from service.api.deps import GatewayDep
from service.jobs.models import OUTPUT_FILES

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
# Nothing from another origin: scripts, styles, images, connections, frames, forms.
CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")  # fmt: skip
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}  # fmt: skip

router = APIRouter()


class ServiceInfo(BaseModel):
    version: str
    config: str = Field(description="the model config served (the only one a job may name)")
    default_size: int
    max_size: int
    auth: bool
    outputs: list[str]


@router.get("/v1/info", response_model=ServiceInfo, tags=["system"],
            summary="The model, size limits and whether API keys are required")  # fmt: skip
async def info(gw: GatewayDep) -> ServiceInfo:
    settings = gw.settings
    return ServiceInfo(
        version=__version__, config=settings.backend.config,
        default_size=get_config(settings.backend.config).default_short_side,
        max_size=settings.limits.max_short_side, auth=settings.auth.enabled,
        outputs=list(OUTPUT_FILES),
    )  # fmt: skip


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/index.html", include_in_schema=False)
async def index() -> RedirectResponse:
    return RedirectResponse("/")


class PageFiles(StaticFiles):
    """The page's scripts and styles, with the page's security headers."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def mount(app) -> None:
    app.include_router(router)
    app.mount("/static", PageFiles(directory=STATIC), name="static")
