"""A read-only database role for analysts (`twin db analyst-role`): SQL on the layers and their history.

The role may SELECT every table of the schemas `layers` and `history` (tables added later too, by
default privileges) and the twin tables in READABLE_TWIN_TABLES. It is never given twin.api_key
(key hashes and who holds which rights), owns nothing, creates nothing, and its sessions are
read-only by default besides. Running the command again refreshes the grants and sets a new
password: the old URL stops working.

Its sessions are bounded (migration 0014 bounds the roles made before it): a statement is cancelled after
the statement timeout, a transaction left idle is ended with its connection after the idle-in-transaction
timeout (so a forgotten notebook cannot hold back VACUUM of the history and the change log), an idle
connection is closed after the idle timeout, and the role has so many connections at most. The defaults are
the settings TWIN_ANALYST_*; `twin db analyst-role` options override them. 0 (timeouts) or -1 (connections)
means no limit.
"""

import re
import secrets
from dataclasses import dataclass

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from twin.settings import Settings, get_settings

DEFAULT_ROLE = "twin_analyst"
READ_SCHEMAS = ("layers", "history")
READABLE_TWIN_TABLES = ("change", "etl_run", "etl_repair", "quarantine", "raster_source")
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class AnalystRoleError(ValueError):
    """The role cannot be made; the message says why."""


@dataclass(frozen=True)
class SessionBounds:
    statement_timeout_s: int
    idle_in_transaction_timeout_s: int
    idle_session_timeout_s: int
    connection_limit: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionBounds":
        return cls(settings.analyst_statement_timeout_s, settings.analyst_idle_in_transaction_timeout_s,
                   settings.analyst_idle_session_timeout_s, settings.analyst_connection_limit)


def analyst_roles(conn: Connection) -> list[str]:
    """The roles `twin db analyst-role` made: read-only by default, able to log in, no superusers."""
    return list(conn.execute(text("SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND "
                                  "'default_transaction_read_only=on' = ANY(rolconfig) ORDER BY 1")).scalars())


def bound_role(conn: Connection, role: str, bounds: SessionBounds) -> None:
    name = sql.Identifier(role)
    _run(conn, sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(name, sql.Literal(bounds.connection_limit)))
    for setting, seconds in (("statement_timeout", bounds.statement_timeout_s),
                             ("idle_in_transaction_session_timeout", bounds.idle_in_transaction_timeout_s),
                             ("idle_session_timeout", bounds.idle_session_timeout_s)):
        _run(conn, sql.SQL("ALTER ROLE {} SET {} = {}").format(name, sql.Identifier(setting),
                                                               sql.Literal(f"{seconds}s")))


def _run(conn: Connection, statement: sql.Composable) -> None:
    """A composed statement on psycopg itself (role names and passwords cannot be bound parameters), in
    the transaction of `conn`."""
    conn.connection.driver_connection.execute(statement)


def grant_analyst_role(conn: Connection, role: str = DEFAULT_ROLE, bounds: SessionBounds | None = None) -> str:
    """Create or refresh the read-only `role`, its sessions bounded (by default as the settings say), with a new
    random password, which is returned."""
    if not ROLE_NAME.match(role) or role.startswith("pg_"):
        raise AnalystRoleError(f"{role[:80]!r} is not a usable role name: lower-case letters, digits and _, "
                               "not starting with pg_")
    me = conn.execute(text("SELECT current_user")).scalar()
    if role == me:
        raise AnalystRoleError(f"{role!r} is the role the server itself uses")
    exists = conn.execute(text("SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls "
                               "FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if exists and exists[0]:
        raise AnalystRoleError(f"Role {role!r} exists with powers beyond reading; choose another name")
    password = secrets.token_urlsafe(24)
    name = sql.Identifier(role)
    options = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS "
                      "PASSWORD {}").format(sql.Literal(password))
    _run(conn, sql.SQL("ALTER ROLE {} WITH " if exists else "CREATE ROLE {} WITH ").format(name) + options)
    _run(conn, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
    bound_role(conn, role, bounds or SessionBounds.from_settings(get_settings()))
    database = conn.execute(text("SELECT current_database()")).scalar()
    _run(conn, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), name))
    for schema in (sql.Identifier(s) for s in READ_SCHEMAS):
        _run(conn, sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, name))
        _run(conn, sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, name))
        _run(conn, sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, name))
    _run(conn, sql.SQL("GRANT USAGE ON SCHEMA twin TO {}").format(name))
    _run(conn, sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA twin FROM {}").format(name))
    present = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'twin' "
                                "AND tablename = ANY(:names)"), {"names": list(READABLE_TWIN_TABLES)}).scalars()
    for table in present:
        _run(conn, sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier("twin", table), name))
    return password


def analyst_url(database_url: str, role: str, password: str) -> str:
    """The server's database URL with the analyst's name and password instead."""
    url = make_url(database_url).set(username=role, password=password)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
