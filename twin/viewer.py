"""The built-in one-map viewer: `GET /map`, its static files under `/map/static/`, and MapLibre GL JS
under `/map/vendor/` straight from `node_modules` (installed by `make setup`, never from a CDN)."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from twin.settings import REPO_ROOT

STATIC = Path(__file__).parent / "static"
MAPLIBRE = REPO_ROOT / "node_modules" / "maplibre-gl" / "dist"


def install(app: FastAPI) -> None:
    @app.get("/map", include_in_schema=False)
    async def viewer():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/map/static", StaticFiles(directory=STATIC), name="viewer-static")
    # check_dir=False: without `make setup` the page still loads and says what is missing.
    app.mount("/map/vendor", StaticFiles(directory=MAPLIBRE, check_dir=False), name="viewer-vendor")
