"""The console's pages: every `/console/…` URL is the same shell, which draws the page its
path names (so a page can be reloaded and shared); the files it loads are static."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from core.errors import NotFound

HERE = Path(__file__).parent
STATIC = "/console/static"
SHELL = HERE / "templates" / "shell.html"
router = APIRouter(prefix="/console", include_in_schema=False)


def static_files() -> StaticFiles:
    """The console's ES modules, CSS and vendored files."""
    return StaticFiles(directory=HERE / "static")


@router.get("")
@router.get("/{page:path}")
def shell(page: str = "") -> FileResponse:
    """The shell: no data and no secrets in it; the page's script asks the API with the key
    the person signed in with."""
    if page.startswith("static/"):
        raise NotFound(f"/console/{page} not found")
    return FileResponse(SHELL, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})
