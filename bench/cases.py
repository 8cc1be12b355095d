"""The case loop at 100,000 cases with their full histories: a department's open queue (first page), statistics for
all grids over a quarter, and an Open311 listing with filters, over HTTP from a running server, each beside the
raw SQL floor (the same statement run straight on the database: no HTTP, no JSON).

`--seed` first writes the cases into the configured database, through the layer's change tracking: every case is
inserted as 上报, then moved through the loop by set-based UPDATEs (each one a version in `history.cases` and a row
of `twin.change`) with its stage log in `cases.step`. The steps' times are synthetic, spread over the past year
(a step happens only if its time has come, so recent cases are still open); their versions carry the real clock.
The district (grids, streets) must be loaded (`twin sample` or the test bundle).

    .venv/bin/python -m bench.cases --seed --cases 100000   # once, then start the server
    .venv/bin/python -m bench.cases --url http://127.0.0.1:8000 --runs 30
"""

import asyncio
import statistics
import time
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import typer
from sqlalchemy import text

from cases import loop, routing
from cases.statistics import CASES as STATISTICS
from cases.store import CASE_COLUMNS
from twin.auth import create_key
from twin.db import async_engine, database_url, sync_engine
from twin.settings import get_settings

CLASSES = ["E0101", "E0102", "E0103", "E0104", "E0201", "E0301", "E0302", "E0401", "E0404", "E0501", "E0503",
           "E0505", "C0101", "C0102", "C0106", "C0118", "C0216", "C0401"]
# (action, from, to, share of the cases in `from` that take it, mean hours it takes, the deadline it starts)
WALK = [("register", "上报", "立案", 0.96, 1.0, "dispatch_h"), ("reject", "上报", "不予立案", 1.0, 1.0, None),
        ("dispatch", "立案", "派遣", 0.99, 0.8, "handle_h"), ("accept", "派遣", "处置", 0.98, 2.0, None),
        ("feedback", "处置", "反馈", 0.97, 20.0, "verify_h"), ("rework", "反馈", "处置", 0.12, 6.0, "handle_h"),
        ("feedback", "处置", "反馈", 0.97, 12.0, "verify_h"), ("verify", "反馈", "核查", 0.98, 8.0, "close_h"),
        ("close", "核查", "结案", 0.99, 4.0, None)]
NOW = datetime.now(timezone.utc)


def _seed(engine, cases: int) -> None:
    """In one session, one transaction per step of the walk, each followed by a VACUUM as autovacuum would do
    between them: the layer keeps the size it has in use, not ten versions of every row."""
    with engine.connect() as conn:
        with conn.begin():
            _report(conn, cases)
        _vacuum(engine)
        for step in WALK:
            with conn.begin():
                _walk(conn, *step)
            _vacuum(engine)
        with conn.begin():
            _tally(conn)
    _vacuum(engine)


def _report(conn, cases: int) -> None:
    conn.execute(text("SET twin.actor = 'bench'"))
    conn.execute(text(
        "CREATE TEMP TABLE spot ON COMMIT DROP AS "
        "SELECT g.code AS grid, g.street_code AS street, (ST_Dump(ST_GeneratePoints(g.geom, "
        "  greatest(1, ceil(CAST(:cases AS float) * ST_Area(g.geom) / (SELECT sum(ST_Area(geom)) FROM layers.grids)))::int,"
        "  1))).geom AS p FROM layers.grids g"), {"cases": cases})
    conn.execute(text(
        "CREATE TEMP TABLE born ON COMMIT DROP AS "
        "SELECT row_number() OVER () AS n, s.*, (CAST(:classes AS text[]))[1 + floor(random() * :k)::int] AS class, "
        "CAST(:now AS timestamptz) - random() * interval '365 days' AS at FROM spot s LIMIT :cases"),
        {"classes": CLASSES, "k": len(CLASSES), "now": NOW, "cases": cases})
    conn.execute(text(
        "INSERT INTO layers.cases (case_no, class_code, class_name, kind, description, source, state, grid_code, "
        "street_code, department, reported_at, stage_due, rework, geom) "
        "SELECT 'BENCH' || lpad(b.n::text, 7, '0'), b.class, b.class, CASE WHEN b.class LIKE 'C%' THEN '部件' "
        "ELSE '事件' END, '基准', '监督员', '上报', b.grid, b.street, r.department, b.at, "
        "b.at + r.register_h * interval '1 hour', 0, b.p FROM born b CROSS JOIN LATERAL ("
        "  SELECT department, register_h FROM cases.responsibility WHERE starts_with(b.class, class_prefix) "
        "  AND area IN (b.grid, b.street, '*') ORDER BY length(class_prefix) DESC, "
        "  CASE area WHEN b.grid THEN 0 WHEN b.street THEN 1 ELSE 2 END LIMIT 1) r"))
    conn.execute(text(
        "CREATE TEMP TABLE clock AS SELECT fid, reported_at AS t, class_code, grid_code, street_code "
        "FROM layers.cases WHERE starts_with(case_no, 'BENCH')"))
    conn.execute(text("ALTER TABLE clock ADD PRIMARY KEY (fid)"))
    conn.execute(text("INSERT INTO cases.step (case_fid, action, to_state, actor, role, at) "
                      "SELECT fid, 'report', '上报', 'bench', '监督员', t FROM clock"))


def _walk(conn, action: str, source: str, target: str, share: float, hours: float, deadline: str | None) -> None:
    conn.execute(text("DROP TABLE IF EXISTS moving"))
    conn.execute(text(
        "CREATE TEMP TABLE moving ON COMMIT DROP AS SELECT c.fid, k.t AS entered, c.stage_due AS due, "
        "k.t + random() * 2 * :hours * interval '1 hour' AS at, r.* FROM layers.cases c JOIN clock k USING (fid) "
        "CROSS JOIN LATERAL (SELECT department AS routed, register_h, dispatch_h, handle_h, verify_h, close_h "
        "  FROM cases.responsibility WHERE starts_with(c.class_code, class_prefix) "
        "  AND area IN (c.grid_code, c.street_code, '*') ORDER BY length(class_prefix) DESC, "
        "  CASE area WHEN c.grid_code THEN 0 WHEN c.street_code THEN 1 ELSE 2 END LIMIT 1) r "
        "WHERE starts_with(c.case_no, 'BENCH') AND c.state = :source AND random() < :share"),
        {"hours": hours, "source": source, "share": share})
    conn.execute(text("DELETE FROM moving WHERE at > :now"), {"now": NOW})
    due = f"m.at + m.{deadline} * interval '1 hour'" if deadline else "c.stage_due"
    extra = {"rework": ", rework = c.rework + 1", "close": ", closed_at = m.at"}.get(action, "")
    conn.execute(text(f"UPDATE layers.cases c SET state = :target, stage_due = {due}{extra} "
                      "FROM moving m WHERE c.fid = m.fid"), {"target": target})
    conn.execute(text(
        "INSERT INTO cases.step (case_fid, action, from_state, to_state, actor, role, entered_at, due_at, at) "
        "SELECT fid, :action, :source, :target, 'bench', 'bench', entered, due, at FROM moving"),
        {"action": action, "source": source, "target": target})
    conn.execute(text("UPDATE clock k SET t = m.at FROM moving m WHERE k.fid = m.fid"))


def _tally(conn) -> None:
    states = list(loop.OPEN)
    spent = ", ".join(f"coalesce(sum(extract(epoch FROM at - entered_at)) FILTER (WHERE from_state = '{s}'), 0)"
                      for s in states)
    left = ", ".join(f"count(*) FILTER (WHERE from_state = '{s}')" for s in states)
    conn.execute(text(  # what cases.store.take_step keeps step by step, here from the whole stage log at once
        "INSERT INTO cases.tally SELECT case_fid, count(*) FILTER (WHERE action = 'feedback'), "
        "count(*) FILTER (WHERE action = 'feedback' AND at <= due_at), "
        "count(*) FILTER (WHERE action IN ('verify', 'rework')), count(*) FILTER (WHERE action = 'rework'), "
        f"ARRAY[{spent}], ARRAY[{left}] FROM cases.step WHERE case_fid IN (SELECT fid FROM clock) GROUP BY case_fid"))


def _vacuum(engine) -> None:
    """What autovacuum would do after the walk's bulk updates."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("layers.cases", "history.cases", "cases.step", "cases.tally", "twin.change"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))


async def _load_routing() -> None:
    """The responsibility table, as a server loads it at start-up."""
    engine = async_engine(get_settings())
    try:
        await routing.load(engine)
    finally:
        await engine.dispose()


def _median_ms(run, runs: int) -> tuple[float, object]:
    result, times = run(), []  # the first call warms up
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def main(url: str = typer.Option("http://127.0.0.1:8000", help="the server, on the configured database"),
         seed: bool = typer.Option(False, help="only write the cases (measure in another run, with the server up)"),
         cases: int = typer.Option(100_000), runs: int = typer.Option(30)):
    engine = sync_engine()
    if seed:
        asyncio.run(_load_routing())
        started = time.perf_counter()
        _seed(engine, cases)
        print(f"seeded {cases:,} cases in {time.perf_counter() - started:.0f} s")
        return
    with engine.begin() as conn:
        totals = conn.execute(text(
            "SELECT (SELECT count(*) FROM layers.cases), (SELECT count(*) FROM history.cases), "
            "(SELECT count(*) FROM cases.step), (SELECT department FROM layers.cases WHERE state = ANY(:open) "
            "GROUP BY department ORDER BY count(*) DESC LIMIT 1)"), {"open": ["派遣", "处置"]}).one()
        department = totals[3]
        handler = create_key(conn, department, [], role="department")
        dispatcher = create_key(conn, "bench", [], role="dispatcher")
    print(f"{totals[0]:,} cases, {totals[1]:,} past versions, {totals[2]:,} steps; queue of {department}")
    quarter_end = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
    quarter_start = quarter_end - timedelta(days=91)
    month_ago = (NOW - timedelta(days=30)).isoformat()
    queue_sql = (f"SELECT {CASE_COLUMNS} FROM layers.cases c WHERE c.department = %(d)s AND c.{loop.OPEN_SQL} "
                 "ORDER BY c.stage_due NULLS LAST, c.fid LIMIT 51")
    stats_sql = STATISTICS.format(group="c.grid_code", scope="true").replace(":start", "%(start)s") \
        .replace(":end", "%(end)s").replace(":now", "%(now)s").replace(":open", "%(open)s") \
        .replace(":reported", "%(reported)s").replace(":rejected", "%(rejected)s").replace(":closed", "%(closed)s")
    open311_sql = (f"SELECT {CASE_COLUMNS} FROM layers.cases WHERE reported_at >= %(start)s AND "
                   "class_code = ANY(%(codes)s) AND state <> ALL(%(final)s) ORDER BY reported_at DESC, fid DESC "
                   "LIMIT 1000")
    checks = [
        ("department's open queue, first page (50)", "/cases", {"open": "true", "limit": 50}, handler, queue_sql,
         {"d": department}, 50),
        ("statistics, all grids, one quarter", "/cases/statistics",
         {"by": "grid", "start": quarter_start.isoformat(), "end": quarter_end.isoformat()}, dispatcher, stats_sql,
         {"start": quarter_start, "end": quarter_end, "now": NOW, "open": list(loop.OPEN), "reported": "上报",
          "rejected": "不予立案", "closed": "结案"}, 200),
        ("Open311 requests.json, service_code + status + start_date", "/open311/v2/requests.json",
         {"service_code": "E0102,C0118", "status": "open", "start_date": month_ago}, None, open311_sql,
         {"start": month_ago, "codes": ["E0102", "C0118"], "final": list(loop.FINAL)}, 100),
    ]
    print(f"| case | server (median of {runs}) | SQL floor | target |\n| --- | ---: | ---: | ---: |")
    with httpx.Client(base_url=url, timeout=60) as http, \
            psycopg.connect(database_url().replace("postgresql+psycopg://", "postgresql://")) as raw:
        for name, path, params, key, sql, bound, target in checks:
            headers = {"Authorization": f"Bearer {key}"} if key else {}

            def fetch():
                response = http.get(path, params=params, headers=headers)
                response.raise_for_status()
                return response.json()

            server_ms, body = _median_ms(fetch, runs)
            floor_ms, rows = _median_ms(lambda: raw.execute(sql, bound).fetchall(), runs)
            size = len(body.get("cases", body.get("groups", []))) if isinstance(body, dict) else len(body)
            print(f"| {name} ({size} items; SQL {len(rows)} rows) | {server_ms:.1f} ms | {floor_ms:.1f} ms | "
                  f"≤ {target} ms |")


if __name__ == "__main__":
    typer.run(main)
