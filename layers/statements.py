"""Running a composed read statement, with database complaints about request values as 4xx."""

import logging

from sqlalchemy.exc import DBAPIError

from twin.errors import ApiError

log = logging.getLogger("layers.statements")


async def fetch_one(conn, statement):
    """The first row of `statement`. Data errors (a value PostgreSQL or PostGIS cannot use, e.g. a
    coordinate that does not project) are 400s; a statement timeout is a 503."""
    try:
        return (await conn.execute(statement)).first()
    except RecursionError as e:  # compiling a deeply nested filter
        raise ApiError(400, "invalid_query", "The request is nested too deeply to evaluate") from e
    except DBAPIError as e:
        state = getattr(e.orig, "sqlstate", None) or ""
        message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
        if state == "57014":
            raise ApiError(503, "query_timeout", "The query took too long; narrow it (bbox, filter, limit)") from e
        if state.startswith("22") or state == "XX000":
            log.info("request value rejected by the database: %s (%s)", message, state)
            raise ApiError(400, "invalid_query", f"The database cannot evaluate this request: {message}") from e
        raise
