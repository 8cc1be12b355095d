"""`twin db backup FILE` / `twin db restore FILE`: the whole database in pg_dump's custom format.

Everything is in it: the layers, their history, the change log, ETL runs and quarantine, department
keys (hashed), the migration revision, and the privileges of migration 0005. pg_dump reads one
consistent snapshot, so a backup taken while the server writes is a moment of the database.

A backup is written to FILE.partial and renamed when complete: a FILE is always whole. A restore
loads schema and data in one transaction (all or nothing) with the restoring role as owner, then
the grants (best effort: a grant to a role that this cluster lacks, an analyst role say, is
skipped and named). It refuses a database that already holds a twin database unless forced;
forced, it drops the twin's schemas and loads the backup in one transaction (anything else the database
holds stays).
"""

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from twin.cluster import ClusterError, find_postgis_bindir

OURS = ("layers", "history", "twin", "sensing", "cases", "events")  # every schema the migrations make
MISSING_ROLE = re.compile(r'role "([^"]+)" does not exist')


class BackupError(RuntimeError):
    """The backup or restore did not happen; the message says why."""


@dataclass
class Restored:
    revision: str | None
    tables: int
    skipped_roles: list[str] = field(default_factory=list)


def pg_tool(name: str) -> str:
    """pg_dump/pg_restore of the PostgreSQL that runs the managed cluster, else the one on PATH."""
    try:
        tool = find_postgis_bindir() / name
        if tool.exists():
            return str(tool)
    except ClusterError:
        pass
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found: install the PostgreSQL client (apt-get install -y postgresql-client)")
    return found


def _connection(url: str) -> tuple[str, dict]:
    """(conninfo without the password, environment carrying it): no password in the process list."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise BackupError(f"Not a usable database URL: {e}") from e
    password = params.pop("password", None)
    env = os.environ | ({"PGPASSWORD": password} if password else {})
    return make_conninfo(**params), env


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _last_words(result: subprocess.CompletedProcess) -> str:
    """The tool's first error line (the cause; later ones follow from it), else its last line."""
    lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or [f"exit status {result.returncode}"])[0 if errors else -1]


def backup(url: str, file: Path) -> int:
    """Dump the database at `url` to `file`; return its size in bytes."""
    file = Path(file)
    partial = file.with_name(file.name + ".partial")
    conninfo, env = _connection(url)
    try:
        result = _run([pg_tool("pg_dump"), "--format=custom", "--file", str(partial), "--dbname", conninfo], env)
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {_last_words(result)}")
        partial.replace(file)
    except OSError as e:
        raise BackupError(f"Cannot write {file}: {e.strerror}") from e
    finally:
        partial.unlink(missing_ok=True)
    return file.stat().st_size


def _contents(file: Path, env: dict) -> list[str]:
    """The backup's table of contents, or a BackupError when FILE is not a twin backup."""
    if not file.is_file():
        raise BackupError(f"{file} does not exist or is not a file")
    result = _run([pg_tool("pg_restore"), "--list", str(file)], env)
    if result.returncode != 0:
        raise BackupError(f"{file} is not a backup in pg_dump's custom format: {_last_words(result)}")
    entries = [line for line in result.stdout.splitlines() if line and not line.startswith(";")]
    if not any(" TABLE twin change " in line for line in entries):
        raise BackupError(f"{file} is a PostgreSQL backup but not of a OneMap Twin database (no twin.change)")
    return entries


def _occupied(url: str) -> list[str]:
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
                                                  "ORDER BY nspname", [list(OURS)])]
            if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]:
                schemas.append("public.alembic_version")
    except psycopg.OperationalError as e:
        raise BackupError(f"Cannot reach the database: {str(e).strip().splitlines()[-1]}") from e
    return schemas


def _replace(conninfo: str, env: dict, file: Path) -> subprocess.CompletedProcess:
    """Our schemas dropped and the backup loaded in one transaction: pg_restore's script fed to psql -1, ended by
    an error if pg_restore did not write it whole, so a broken file rolls everything back. Not pg_restore
    --clean: it drops a partition's inherited constraints one by one, which PostgreSQL refuses (observations
    are partitioned)."""
    drop = f"DROP SCHEMA IF EXISTS {', '.join(OURS)} CASCADE; DROP TABLE IF EXISTS public.alembic_version;"
    with tempfile.TemporaryFile() as said, tempfile.TemporaryFile() as read_errors:
        psql = subprocess.Popen([pg_tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set",
                                 "ON_ERROR_STOP=1", "--dbname", conninfo, "--command", drop, "--file", "-"],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=said)
        script = subprocess.Popen([pg_tool("pg_restore"), "--no-owner", "--no-acl", "--file", "-", str(file)],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=read_errors)
        try:
            shutil.copyfileobj(script.stdout, psql.stdin)
            if script.wait() != 0:
                psql.stdin.write(b"\nDO $$ BEGIN RAISE EXCEPTION 'the backup could not be read whole'; END $$;\n")
            psql.stdin.close()
        except BrokenPipeError:  # psql stopped at an error: its message says which
            script.kill()
            script.wait()
        psql.wait()
        said.seek(0)
        read_errors.seek(0)
        errors = said.read().decode(errors="replace") + read_errors.read().decode(errors="replace")
    return subprocess.CompletedProcess(psql.args, psql.returncode or script.returncode, "", errors)


def restore(url: str, file: Path, force: bool = False) -> Restored:
    file = Path(file)
    conninfo, env = _connection(url)
    entries = _contents(file, env)
    occupied = _occupied(url)
    if occupied and not force:
        raise BackupError(f"The database already holds a twin database ({', '.join(occupied)}); restore into an "
                          "empty database, or pass --force to replace its contents with the backup's")
    restore_tool = [pg_tool("pg_restore"), "--no-owner", "--dbname", conninfo]
    result = (_replace(conninfo, env, file) if occupied else
              _run([*restore_tool, "--no-acl", "--single-transaction", "--exit-on-error", str(file)], env))
    if result.returncode != 0:
        raise BackupError(f"Restore failed, the database is as it was: {_last_words(result)}")
    grants = [line for line in entries if " ACL " in line]
    skipped: set[str] = set()
    if grants:
        with tempfile.NamedTemporaryFile("w", suffix=".list") as listing:
            listing.write("\n".join(grants) + "\n")
            listing.flush()
            result = _run([*restore_tool, "--use-list", listing.name, str(file)], env)
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        skipped = {m.group(1) for line in errors if (m := MISSING_ROLE.search(line))}
        others = [line for line in errors if not MISSING_ROLE.search(line)]
        if others:
            raise BackupError(f"The data was restored but some grants failed: {others[0]}")
    with psycopg.connect(url, connect_timeout=10) as conn:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = ANY(%s)", [list(OURS)]).fetchone()[0]
    return Restored(revision[0] if revision else None, tables, sorted(skipped))
