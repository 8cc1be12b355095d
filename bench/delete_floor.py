"""How near can a delete that keeps what it deletes come to a bare DELETE? (issue #5's 0.7× target)

    .venv/bin/python -m bench.delete_floor     # about a minute on the bench database of bench/tiles.py

On the 1,000,000 city components of the tile bench's database, 100,000 rows are deleted three ways, each
in a transaction that is rolled back, interleaved, three rounds, medians:
- untracked: every trigger of the layer disabled (what the target compares with);
- kept, no index: triggers disabled, the deleted rows moved into a plain table shaped like the history
  with no index at all (`DELETE … RETURNING` into `INSERT`): the least any history-keeping delete writes;
- tracked: the layer as shipped (history with its GiST indexes, change log, tile-cell counts).
"""

import statistics
import time

import psycopg

from bench import tile_peers

PICK = "fid IN (SELECT fid FROM layers.city_components ORDER BY fid LIMIT 100000)"
CASES = {
    "untracked DELETE (all triggers disabled)": [
        "ALTER TABLE layers.city_components DISABLE TRIGGER USER",
        f"DELETE FROM layers.city_components WHERE {PICK}"],
    "rows kept in a table with no index (triggers disabled)": [
        "ALTER TABLE layers.city_components DISABLE TRIGGER USER",
        "CREATE TABLE public.kept (LIKE history.city_components)",
        f"WITH gone AS (DELETE FROM layers.city_components WHERE {PICK} RETURNING *) "
        "INSERT INTO public.kept SELECT *, tstzrange(updated_at, now()) FROM gone"],
    "tracked DELETE (as shipped)": [f"DELETE FROM layers.city_components WHERE {PICK}"],
}


def main() -> None:
    url, _ = tile_peers.bench_database(1_000_000, fresh=False)
    seconds = {name: [] for name in CASES}
    with psycopg.connect(url) as conn:
        for _ in range(3):
            for name, statements in CASES.items():
                with conn.transaction(force_rollback=True):
                    for statement in statements[:-1]:
                        conn.execute(statement)
                    start = time.perf_counter()
                    conn.execute(statements[-1])
                    seconds[name].append(time.perf_counter() - start)
    untracked = statistics.median(seconds["untracked DELETE (all triggers disabled)"])
    print("| 100,000 of 1,000,000 points | seconds | throughput vs untracked |\n| --- | ---: | ---: |")
    for name, times in seconds.items():
        print(f"| {name} | {statistics.median(times):.3f} | {untracked / statistics.median(times):.2f}× |")


if __name__ == "__main__":
    main()
