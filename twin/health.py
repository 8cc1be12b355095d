"""`/health`: is the database reachable, which PostGIS, how many features per layer."""

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text


def router(tables: Callable[[], list]) -> APIRouter:
    """`tables` gives the layer specs (each with `.id` and `.table`) whose rows to count."""
    api = APIRouter(tags=["operations"])

    @api.get("/health")
    async def health(request: Request):
        try:
            async with request.app.state.engine.connect() as conn:
                postgis = (await conn.execute(text("SELECT postgis_full_version()"))).scalar()
                counts = {}
                for spec in tables():
                    counts[spec.id] = (await conn.execute(text(f"SELECT count(*) FROM {spec.table}"))).scalar()
        except Exception as e:  # any database failure means "not healthy", reported, not raised
            return JSONResponse({"status": "unavailable", "database": "unreachable",
                                   "reason": type(e).__name__}, status_code=503, headers={"Retry-After": "5"})
        version = postgis.split('"')[1] if '"' in postgis else postgis
        return {"status": "ok", "database": "ok", "postgis": version, "features": counts}

    return api
