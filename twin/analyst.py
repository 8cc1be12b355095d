"""A read-only database role for analysts (`twin db analyst-role`): SQL on the layers and their history.

The role may SELECT every table of the schemas `layers` and `history` (tables added later too, by
default privileges) and the twin tables in READABLE_TWIN_TABLES. It is never given twin.api_key
(key hashes and who holds which rights), owns nothing, creates nothing, and its sessions are
read-only by default besides. Running the command again refreshes the grants and sets a new
password: the old URL stops working.
"""

import re
import secrets

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

DEFAULT_ROLE = "twin_analyst"
READ_SCHEMAS = ("layers", "history")
READABLE_TWIN_TABLES = ("change", "etl_run", "etl_repair", "quarantine", "raster_source")
CONNECTION_LIMIT = 20
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class AnalystRoleError(ValueError):
    """The role cannot be made; the message says why."""


def _run(conn: Connection, statement: sql.Composable) -> None:
    """A composed statement on psycopg itself (role names and passwords cannot be bound parameters), in
    the transaction of `conn`."""
    conn.connection.driver_connection.execute(statement)


def grant_analyst_role(conn: Connection, role: str = DEFAULT_ROLE) -> str:
    """Create or refresh the read-only `role` with a new random password, which is returned."""
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
                      "CONNECTION LIMIT {} PASSWORD {}").format(sql.Literal(CONNECTION_LIMIT), sql.Literal(password))
    _run(conn, sql.SQL("ALTER ROLE {} WITH " if exists else "CREATE ROLE {} WITH ").format(name) + options)
    _run(conn, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
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
