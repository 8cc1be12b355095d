"""Reading entities: a filtered, ordered, paged set, its $expand (per-parent windows), and their JSON."""

import gc
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from operator import itemgetter

import orjson
from sqlalchemy import func, select, union_all
from sqlalchemy.exc import DBAPIError

from layers.catalog import get_layer
from layers.tables import current
from sensing import tables as t
from sensing import water_quality as wq
from sensing.sta import filters
from sensing.sta.entities import ENTITIES, OBSERVATION_COLUMNS, Entity
from sensing.sta.options import Options
from twin.errors import ApiError


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat()[:-6] + "Z"  # an aware UTC time's isoformat ends +00:00


def utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(timezone.utc)


def dump(body) -> bytes:
    """The JSON of entities, whose times are left as UTC datetimes for orjson to write as `iso` would: at a
    seventh of isoformat's cost, which was a third of a 10,000-entity page's time."""
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


async def run(conn, statement):
    """Rows of `statement`; what the database cannot evaluate for a request's values is a 400."""
    return (await execute(conn, statement)).mappings().all()


async def execute(conn, statement):
    """The result of `statement`, its rows not read yet; the database's refusals as in `run`."""
    try:
        return await conn.execute(statement)
    except RecursionError as e:
        raise ApiError(400, "invalid_query", "The request is nested too deeply to evaluate") from e
    except DBAPIError as e:
        state = getattr(e.orig, "sqlstate", None) or ""
        if state[:2] in ("22", "42") or state == "XX000":
            message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
            raise ApiError(400, "invalid_query", f"The database cannot evaluate this request: {message}",
                           where="query") from None
        raise


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector held off over a page's rows, from reading them to rendering them (no
    await in between, so nothing else runs meanwhile). Each row is a tracked object (SQLAlchemy's row); alive
    together, the 10,000 of a page were scanned by collection after collection and moved up the generations into
    the full collections (most of a page's time before start-up's objects were frozen, twin.app;
    docs/benchmarks.md). Freed before the collector runs again, they are never scanned."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Reader:
    def __init__(self, conn, base: str, hidden: frozenset[str]):
        self.conn, self.base, self.hidden = conn, base, hidden

    def source(self, entity: Entity, key: int | None = None):
        return entity.source(self.hidden, key)

    def _columns(self, options: Options, source) -> list:
        """What rendering and expanding `options` reads: every column, or under a $select only the id, the
        selected properties' columns and the keys its to-one $expand follows."""
        entity, wanted = options.entity, None
        if options.select is not None:
            wanted = {"id"} | {entity.properties[n] for n in options.select if n in entity.properties} | {
                nav.fk for name, nav in entity.navs.items() if name in options.expand and not nav.many}
            if "phenomenon_time" in wanted:  # an Observation's phenomenonTime may be an interval
                wanted.add("phenomenon_time_end")
        columns = [c for c in source.c if wanted is None or c.key in wanted]
        extra = [func.ST_AsGeoJSON(source.c[g], 9, 0).label(f"_{g}") for g in entity.geometries
                 if wanted is None or g in wanted]
        return [*columns, *extra]

    def _conditions(self, options: Options, source, where) -> list:
        conditions = list(where)
        if options.filter:
            conditions.append(filters.where(options.entity, source, options.filter, self.hidden))
        return conditions

    def _order(self, options: Options, source) -> list:
        order = [source.c[c].desc().nulls_last() if desc else source.c[c].asc() for c, desc in options.orderby]
        return order + [source.c.id.asc()]

    async def collection(self, options: Options, where=lambda source: [], key: int | None = None
                         ) -> tuple[list[dict], int | None, bool]:
        """(entities, count if asked, more to come) of the set; `where(source)` narrows it (a navigation path),
        `key` to at most the entity of that id."""
        source = self.source(options.entity, key)
        conditions = self._conditions(options, source, where(source))
        page = source
        if options.entity.name == "Observation" and key is None and not conditions and not options.orderby:
            page = first_observations(self.hidden, options.skip + options.top + 1)
        statement = (select(*self._columns(options, page)).where(*conditions)
                     .order_by(*self._order(options, page)).offset(options.skip).limit(options.top + 1))
        result = await execute(self.conn, statement)
        with collector_paused():
            entities, more, rows = self._rendered(options, result)
        count = None
        if options.count:
            count = (await run(self.conn, select(func.count().label("n")).select_from(source).where(*conditions)))[0]["n"]
        await self.expand(options, rows, entities)
        return entities, count, more

    def _rendered(self, options: Options, result) -> tuple[list[dict], bool, list[dict]]:
        """(entities, more to come, their rows by name if a $expand needs them) of a page's result. Its rows are
        freed on return, before the collector runs again (collector_paused)."""
        keys, rows = list(result.keys()), result.all()
        render = self.renderer(options, keys)
        entities = [render(row) for row in rows[:options.top]]
        return entities, len(rows) > options.top, _named(keys, rows[:options.top]) if options.expand else []

    async def expand(self, options: Options, rows, entities: list[dict]) -> None:
        for name, inner in options.expand.items():
            nav = options.entity.navs[name]
            if not nav.many:
                ids = {row[nav.fk] for row in rows if row[nav.fk] is not None}
                found, _, _ = await self.collection(
                    _all(inner, len(ids)), lambda s: [s.c.id.in_(ids)]) if ids else ([], None, False)
                by_id = {e["@iot.id"]: e for e in found}
                if inner.select is not None and "id" not in inner.select:  # read by id, shown without it
                    for entity in found:
                        del entity["@iot.selfLink"], entity["@iot.id"]
                for row, entity in zip(rows, entities):
                    entity[name] = by_id.get(row[nav.fk])
                continue
            await self._expand_many(options.entity, name, nav, inner, rows, entities)

    async def _expand_many(self, parent_entity: Entity, name, nav, inner: Options, rows, entities) -> None:
        parents = [row["id"] for row in rows]
        if not parents:
            return
        target = ENTITIES[nav.target]
        source = self.source(target)
        if nav.link:
            link, mine, theirs = nav.link
            joined, parent = source.join(link, link.c[theirs] == source.c.id), link.c[mine]
        else:
            joined, parent = source, source.c[nav.back]
        conditions = self._conditions(inner, source, [parent.in_(parents)])
        ranked = (select(*self._columns(inner, source), parent.label("_parent"),
                         func.row_number().over(partition_by=parent, order_by=self._order(inner, source))
                         .label("_rank")).select_from(joined).where(*conditions).subquery())
        window = (select(ranked).where(ranked.c._rank > inner.skip, ranked.c._rank <= inner.skip + inner.top + 1)
                  .order_by(ranked.c._parent, ranked.c._rank))
        result = await execute(self.conn, window)
        keys = list(result.keys())
        found, parent_at = defaultdict(list), keys.index("_parent")
        for row in result.all():
            found[row[parent_at]].append(row)
        counts = {}
        if inner.count:
            counted = select(parent, func.count()).select_from(joined).where(*conditions).group_by(parent)
            counts = {r[0]: r[1] for r in (await self.conn.execute(counted)).all()}
        render = self.renderer(inner, keys)
        for row, entity in zip(rows, entities):
            children = found.get(row["id"], [])
            rendered = [render(child) for child in children[:inner.top]]
            await self.expand(inner, _named(keys, children[:inner.top]) if inner.expand else [], rendered)
            entity[name] = rendered
            if inner.count:
                entity[f"{name}@iot.count"] = counts.get(row["id"], 0)
            if len(children) > inner.top:
                entity[f"{name}@iot.nextLink"] = (f"{self.base}/{parent_entity.plural}({row['id']})/{name}"
                                                  f"?$top={inner.top}&$skip={inner.skip + inner.top}")

    def renderer(self, options: Options, keys: list[str]):
        """row -> entity JSON for `options` (its entity type and $select) and rows of columns `keys`, the
        per-property decisions made once and the columns read by position: rendering is the read path's cost per
        entity (8,640 of them for one datastream's month)."""
        at = {key: i for i, key in enumerate(keys)}
        entity, select_ = options.entity, options.select
        keep = None if select_ is None else set(select_) | {f"{n}@iot.navigationLink" for n in select_ if n in entity.navs}
        with_id = keep is None or "id" in keep
        fields = []
        for name, column in entity.properties.items():
            if name == "id" or keep is not None and name not in keep:
                continue
            if entity.name == "Observation" and name == "phenomenonTime":
                fields.append((name, _interval_of(at["phenomenon_time"], at["phenomenon_time_end"])))
            elif column in entity.geometries:
                fields.append((name, _geometry_of(at[f"_{column}"])))
            elif column in entity.times:
                fields.append((name, _time_of(at[column])))
            else:
                fields.append((name, itemgetter(at[column])))
        navs = [(f"{n}@iot.navigationLink", f"/{n}") for n in entity.navs
                if keep is None or f"{n}@iot.navigationLink" in keep]
        prefix, id_at = f"{self.base}/{entity.plural}(", at["id"]

        def render(row) -> dict:
            key = row[id_at]
            link = f"{prefix}{key})"
            out = {"@iot.selfLink": link, "@iot.id": key} if with_id else {}
            for name, value_of in fields:
                out[name] = value_of(row)
            for name, suffix in navs:
                out[name] = link + suffix
            return out
        return render


def first_observations(hidden: frozenset[str], count: int):
    """The first `count` Observations in id order, as a source: each part of the union (stored observations,
    positive ids; the readings' unpivoted parameters, negative ids -(fid * STRIDE + position), so ascending id is
    descending fid and position) read in its own index order and cut to `count` before the union is sorted."""
    o = t.observation
    stored = select(*(o.c[c] for c in OBSERVATION_COLUMNS)).order_by(o.c.id).limit(count)
    if wq.LAYER in hidden:
        return stored.subquery("observations")
    readings, parameter = current(get_layer(wq.LAYER)), t.water_quality_parameter
    first = wq.observations().order_by(readings.c.fid.desc(), parameter.c.position.desc()).limit(count)
    return union_all(stored, first).subquery("observations")


def _interval_of(start_at: int, end_at: int):
    def interval(row) -> datetime | str:
        start, end = row[start_at], row[end_at]
        return utc(start) if end is None else f"{iso(start)}/{iso(end)}"
    return interval


def _time_of(at: int):
    return lambda row: utc(row[at])


def _geometry_of(at: int):
    return lambda row: orjson.loads(row[at]) if row[at] else None


def _named(keys: list[str], rows) -> list[dict]:
    return [dict(zip(keys, row)) for row in rows]


def _all(options: Options, size: int) -> Options:
    """A to-one expansion: every target asked for, whatever $top says, each with its id (to be found by)."""
    select = None if options.select is None or "id" in options.select else [*options.select, "id"]
    return Options(options.entity, top=max(size, 1), skip=0, select=select, filter=options.filter,
                   expand=options.expand)
