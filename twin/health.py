"""`/health`: is the database reachable, which PostGIS, how many features per layer (of the layers the
caller may read: a private layer's size is its own business, twin.access)."""

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from twin.access import hidden_layers
from twin.errors import RETRY_AFTER_S, UNAVAILABLE


def router(tables: Callable[[], list]) -> APIRouter:
    """`tables` gives the layer specs (each with `.id` and `.table`) whose rows to count."""
    api = APIRouter(tags=["operations"])

    @api.get("/health")
    async def health(request: Request):
        try:
            hidden = await hidden_layers(request)
            async with request.app.state.engine.connect() as conn:
                postgis = (await conn.execute(text("SELECT postgis_full_version()"))).scalar()
                counts = {}
                for spec in (spec for spec in tables() if spec.id not in hidden):
                    counts[spec.id] = (await conn.execute(text(f"SELECT count(*) FROM {spec.table}"))).scalar()
        except (DBAPIError, *UNAVAILABLE) as e:  # unreachable, or reachable but not migrated
            cause = getattr(e, "orig", None) or e
            return JSONResponse({"status": "unavailable", "database": "unreachable", "reason": type(cause).__name__},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        version = postgis.split('"')[1] if '"' in postgis else postgis
        return {"status": "ok", "database": "ok", "postgis": version, "features": counts}

    return api
