"""The console at `/console`: one HTML shell, plain ES modules and CSS, under a strict CSP."""

from fastapi import FastAPI

from api.console.headers import ConsoleHeaders
from api.console.routes import STATIC, router, static_files


def install(app: FastAPI) -> None:
    """Serve the console's static files and pages, each answer with the console's headers."""
    app.mount(STATIC, static_files(), name="console-static")
    app.include_router(router)
    app.add_middleware(ConsoleHeaders)
