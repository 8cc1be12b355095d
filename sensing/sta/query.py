"""Reading entities: a filtered, ordered, paged set, its $expand (per-parent windows), and their JSON."""

from collections import defaultdict
from datetime import datetime, timezone

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


async def run(conn, statement):
    """Rows of `statement`; what the database cannot evaluate for a request's values is a 400."""
    try:
        return (await conn.execute(statement)).mappings().all()
    except RecursionError as e:
        raise ApiError(400, "invalid_query", "The request is nested too deeply to evaluate") from e
    except DBAPIError as e:
        state = getattr(e.orig, "sqlstate", None) or ""
        if state[:2] in ("22", "42") or state == "XX000":
            message = str(getattr(e.orig, "diag", None) and e.orig.diag.message_primary or e.orig).strip()
            raise ApiError(400, "invalid_query", f"The database cannot evaluate this request: {message}",
                           where="query") from None
        raise


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
        rows = await run(self.conn, statement)
        count = None
        if options.count:
            count = (await run(self.conn, select(func.count().label("n")).select_from(source).where(*conditions)))[0]["n"]
        more = len(rows) > options.top
        render = self.renderer(options)
        entities = [render(row) for row in rows[:options.top]]
        await self.expand(options, rows[:options.top], entities)
        return entities, count, more

    async def expand(self, options: Options, rows, entities: list[dict]) -> None:
        for name, inner in options.expand.items():
            nav = options.entity.navs[name]
            if not nav.many:
                ids = {row[nav.fk] for row in rows if row[nav.fk] is not None}
                found, _, _ = await self.collection(
                    _all(inner, len(ids)), lambda s: [s.c.id.in_(ids)]) if ids else ([], None, False)
                by_id = {e["@iot.id"]: e for e in found}
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
        found = defaultdict(list)
        for row in await run(self.conn, window):
            found[row["_parent"]].append(row)
        counts = {}
        if inner.count:
            counted = select(parent, func.count()).select_from(joined).where(*conditions).group_by(parent)
            counts = {r[0]: r[1] for r in (await self.conn.execute(counted)).all()}
        render = self.renderer(inner)
        for row, entity in zip(rows, entities):
            children = found.get(row["id"], [])
            rendered = [render(child) for child in children[:inner.top]]
            await self.expand(inner, children[:inner.top], rendered)
            entity[name] = rendered
            if inner.count:
                entity[f"{name}@iot.count"] = counts.get(row["id"], 0)
            if len(children) > inner.top:
                entity[f"{name}@iot.nextLink"] = (f"{self.base}/{parent_entity.plural}({row['id']})/{name}"
                                                  f"?$top={inner.top}&$skip={inner.skip + inner.top}")

    def renderer(self, options: Options):
        """row -> entity JSON for `options` (its entity type and $select), the per-property decisions made once:
        rendering is the read path's cost per entity (8,640 of them for one datastream's month)."""
        entity, select_ = options.entity, options.select
        keep = None if select_ is None else set(select_) | {f"{n}@iot.navigationLink" for n in select_ if n in entity.navs}
        with_id = keep is None or "id" in keep
        fields = []
        for name, column in entity.properties.items():
            if name == "id" or keep is not None and name not in keep:
                continue
            if entity.name == "Observation" and name == "phenomenonTime":
                fields.append((name, _interval_of))
            elif column in entity.geometries:
                fields.append((name, _geometry_of(f"_{column}")))
            elif column in entity.times:
                fields.append((name, _time_of(column)))
            else:
                fields.append((name, _value_of(column)))
        navs = [(f"{n}@iot.navigationLink", f"/{n}") for n in entity.navs
                if keep is None or f"{n}@iot.navigationLink" in keep]
        prefix = f"{self.base}/{entity.plural}("

        def render(row) -> dict:
            link = f"{prefix}{row['id']})"
            out = {"@iot.selfLink": link, "@iot.id": row["id"]} if with_id else {}
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


def _interval_of(row) -> str:
    start, end = row["phenomenon_time"], row["phenomenon_time_end"]
    return iso(start) if end is None else f"{iso(start)}/{iso(end)}"


def _time_of(column: str):
    return lambda row: iso(row[column])


def _value_of(column: str):
    return lambda row: row[column]


def _geometry_of(column: str):
    return lambda row: orjson.loads(row[column]) if row[column] else None


def _all(options: Options, size: int) -> Options:
    """A to-one expansion: every target asked for, whatever $top says."""
    return Options(options.entity, top=max(size, 1), skip=0, select=options.select, filter=options.filter,
                   expand=options.expand)
