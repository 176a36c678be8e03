"""The page: ``/`` serves ``ui/index.html``, ``/ui/…`` its scripts, styles and strings.

All of it is public (the sign-in form must load without credentials) and none of it is private:
what a user may see comes from the API, with their session. Nothing is fetched from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8")


def mount(app: FastAPI) -> None:
    """The page's routes on ``app`` (the assets as static files, no directory listing)."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=UI_DIR, check_dir=False), name="ui")
