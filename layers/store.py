"""The feature store: bulk upsert of validated features into a layer's table.

Rows are staged with COPY and merged by the layer's natural key in set-based SQL:
an unchanged row is left alone (no new version), a changed one is updated (the change
tracking triggers bump its version), a new one inserted; in replace mode, rows missing from the input are
deleted. Into an empty layer the rows are copied straight in (the triggers still record
every insert), and the layer's indexes are built once after the copy instead of row by row,
when the layer can be locked without waiting (readers of the empty layer wait for the commit).
Identifiers come from the catalog, never from user input, and are quoted. A merge that changed a
table in bulk analyzes it before it commits.

The rows may come as a stream of frames (e.g. validated chunk by chunk): each is encoded and sent
while the database is still storing the previous one, so the client's work and the server's overlap.
"""

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import shapely
from psycopg import errors, sql
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import text
from sqlalchemy.engine import Connection

from layers.catalog import SRID, LayerSpec

COPY_CHUNK = 50_000
CSV_OPTIONS = pa_csv.WriteOptions(include_header=False)
EWKB_SRID = pa.scalar("20" + SRID.to_bytes(4, "little").hex().upper())  # little-endian EWKB: flag byte, SRID


@dataclass
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def columns(spec: LayerSpec) -> list[str]:
    return [f.name for f in spec.fields] + (["geom"] if spec.geometry else [])


def set_write_context(conn: Connection, actor: str, run_id: int | None = None) -> None:
    """Who is writing, for the change log; lasts until the end of the transaction."""
    conn.exec_driver_sql("SELECT set_config('twin.actor', %(actor)s, true), set_config('twin.run_id', %(run)s, true)",
                         {"actor": actor, "run": "" if run_id is None else str(run_id)})


def _csv(frames: Iterable[pd.DataFrame], cols: list[str], sent: list[int]) -> Iterator[bytes]:
    """The frames as CSV for COPY, in chunks: NULL as an empty field, geometries as hex EWKB; counts the rows
    in `sent`. Arrow's writer (C++) is several times faster than pandas' for a million rows."""
    for frame in frames:
        sent[0] += len(frame)
        yield from _csv_chunks(frame, cols)


def _ewkb(geometries: np.ndarray) -> pa.Array:
    """Hex EWKB with the storage SRID, made from plain WKB: the type's high byte gets the SRID flag, the SRID
    follows it (much cheaper than giving each geometry an SRID before encoding)."""
    wkb = pa.array(shapely.to_wkb(geometries, hex=True, output_dimension=2, byte_order=1), type=pa.string())
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(wkb, 0, 8), EWKB_SRID,
                                       pc.utf8_slice_codeunits(wkb, 10), "")


def _csv_chunks(frame: pd.DataFrame, cols: list[str]) -> Iterator[bytes]:
    """`cols` has the geometry last, if at all."""
    for start in range(0, len(frame), COPY_CHUNK):
        chunk = frame.iloc[start:start + COPY_CHUNK]
        table = pa.Table.from_pandas(chunk[[c for c in cols if c != "geom"]], preserve_index=False)
        if "geom" in cols:
            table = table.append_column("geom", _ewkb(chunk["geom"].to_numpy()))
        out = io.BytesIO()
        pa_csv.write_csv(table, out, CSV_OPTIONS)
        yield out.getvalue()


def _copy(cursor, target: sql.Composable, frames: Iterable[pd.DataFrame], cols: list[str]) -> int:
    """COPY the frames' rows into `target`; returns how many."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        target, sql.SQL(", ").join(map(_ident, cols)))
    sent = [0]
    # a queued writer sends from its own thread, so the next chunk is made while the server stores this one
    with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        for block in _csv(frames, cols, sent):
            copy.write(block)
    return sent[0]


def _drop_indexes(cur, table: sql.Composable, regclass: str) -> list[sql.Composable] | None:
    """Drop the layer's indexes (and the key constraints they back), returning the SQL that builds them
    again; None, with nothing dropped, when another session is using the layer."""
    cur.execute("SAVEPOINT lock_layer")
    try:
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(table))
    except errors.LockNotAvailable:
        cur.execute("ROLLBACK TO SAVEPOINT lock_layer")
        return None
    cur.execute("RELEASE SAVEPOINT lock_layer")
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # each index is sorted once, in memory
    cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype IN ('p', 'u')", (regclass,))
    constraints = cur.fetchall()
    cur.execute("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = %s::regclass AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)", (regclass,))
    indexes = cur.fetchall()
    rebuild = []
    for name, definition in constraints:
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, _ident(name)))
        rebuild.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, _ident(name),
                                                                            sql.SQL(definition)))
    for name, definition in indexes:
        cur.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
        rebuild.append(sql.SQL(definition))
    return rebuild


def merge(conn: Connection, spec: LayerSpec, frames: pd.DataFrame | Iterable[pd.DataFrame],
          replace: bool = False) -> MergeCounts:
    """Upsert `frames` (validated, typed; one frame or a stream of them, no key twice) into the layer by its
    natural key, inside the caller's transaction."""
    if isinstance(frames, pd.DataFrame):
        frames = [frames]
    cols = columns(spec)
    table = sql.SQL("{}.{}").format(_ident("layers"), _ident(spec.id))
    col_list = sql.SQL(", ").join(map(_ident, cols))
    key_match = sql.SQL(" AND ").join(
        sql.SQL("t.{k} = s.{k}").format(k=_ident(k)) for k in spec.key)
    t_cols = sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(c)) for c in cols)
    s_cols = sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(c)) for c in cols)

    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        # Writers queue on the change log's lock; holding it first keeps "the layer is empty" true until commit.
        cur.execute("SELECT twin.claim_change_log()")
        cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(table))
        if not cur.fetchone()[0]:
            rebuild = _drop_indexes(cur, table, f"layers.{spec.id}")
            inserted = _copy(cur, table, frames, cols)
            for statement in rebuild or []:
                cur.execute(statement)
            analyze_bulk(conn, spec.id, inserted, 0)
            return MergeCounts(inserted=inserted)
        cur.execute(sql.SQL("CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                    .format(col_list, table))
        staged = _copy(cur, sql.SQL("pg_temp.stage"), frames, cols)
        cur.execute("ANALYZE pg_temp.stage")
        cur.execute(sql.SQL(
            "UPDATE {table} t SET ({cols}) = ROW({s_cols}) "
            "FROM pg_temp.stage s WHERE {match} AND ROW({t_cols}) IS DISTINCT FROM ROW({s_cols})").format(
            table=table, cols=col_list, s_cols=s_cols, t_cols=t_cols, match=key_match))
        updated = cur.rowcount
        cur.execute(sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {s_cols} FROM pg_temp.stage s "
            "WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})").format(
            table=table, cols=col_list, s_cols=s_cols, match=key_match))
        inserted = cur.rowcount
        deleted = 0
        if replace:
            cur.execute(sql.SQL(
                "DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM pg_temp.stage s WHERE {match})").format(
                table=table, match=key_match))
            deleted = cur.rowcount
        cur.execute("DROP TABLE pg_temp.stage")
    analyze_bulk(conn, spec.id, inserted + updated + deleted, updated + deleted)
    return MergeCounts(inserted, updated, staged - inserted - updated, deleted)


def changed_in_bulk(conn: Connection, table: str, rows: int, share: float = 0.1) -> bool:
    """Whether `rows` written to `table` pass autovacuum's default analyze rule (50 + 10% of its rows; `share`
    for another fraction): then the writer analyzes it itself, inside its transaction, so the statistics commit
    with the rows and no reader plans from an empty or far smaller table's statistics while autovacuum has yet to
    come round."""
    return rows > 50 and rows > 50 + share * conn.execute(
        text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()


def analyze(conn: Connection, table: str) -> None:
    """ANALYZE `table` ("schema.name", a name from the catalog, never from input)."""
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(text("ANALYZE " + ".".join(map(quote, table.split(".")))))


def analyze_bulk(conn: Connection, layer: str, written: int, superseded: int) -> None:
    """ANALYZE what a bulk write to a layer changed in bulk (`changed_in_bulk`). `written`: the layer's rows
    inserted, updated or deleted; `superseded`: those of them whose old versions went to the history."""
    for table, rows in ((f"layers.{layer}", written), (f"history.{layer}", superseded), ("twin.change", written)):
        if changed_in_bulk(conn, table, rows):
            analyze(conn, table)
