"""Resource paths: `/Things(1)/Datastreams(5)/Observations`, `/Observations(7)/Datastream/name/$value`."""

import re
from dataclasses import dataclass, field

from sqlalchemy import select

from sensing.sta.entities import BY_PLURAL, ENTITIES, Entity
from twin.errors import ApiError

SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((-?\d{1,19})\))?$")


@dataclass
class Resolved:
    entity: Entity
    single: bool
    conditions: list = field(default_factory=list)  # functions of the entity's source -> SQL conditions
    parent: "Resolved | None" = None
    nav: str | None = None
    property: str | None = None
    value: bool = False  # /$value
    key: int | None = None  # the id the last segment names, if any

    def where(self, source) -> list:
        return [c for make in self.conditions for c in make(source)]


def _unknown(path: str, detail: str) -> ApiError:
    return ApiError(404, "not_found", f"{path}: {detail}", where="path")


def resolve(path: str, hidden: frozenset[str]) -> Resolved:
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise _unknown(path, "no entity set")
    match = SEGMENT.match(segments[0])
    if not match or match[1] not in BY_PLURAL:
        raise _unknown(path, f"{segments[0][:40]!r} is not an entity set; see the service root")
    current = Resolved(BY_PLURAL[match[1]], match[2] is not None)
    if match[2] is not None:
        current.conditions.append(_by_id(int(match[2])))
        current.key = int(match[2])
    for i, segment in enumerate(segments[1:], start=1):
        if segment == "$value" and current.property and i == len(segments) - 1:
            current.value = True
            continue
        match = SEGMENT.match(segment)
        if not current.single or not match or current.property:
            raise _unknown(path, f"{segment[:40]!r} cannot follow here")
        name, key = match[1], match[2]
        if name in current.entity.properties and key is None:
            current.property = name
            continue
        nav = current.entity.navs.get(name)
        if nav is None:
            raise _unknown(path, f"{name!r} is not a property or navigation property of {current.entity.name}")
        parent, target = current, ENTITIES[nav.target]
        parent_source = parent.entity.source(hidden, parent.key)
        if not nav.many:
            ids = select(parent_source.c[nav.fk]).where(*parent.where(parent_source)).scalar_subquery()
            current = Resolved(target, True, [lambda s, ids=ids: [s.c.id == ids]], parent, name)
        else:
            parents = select(parent_source.c.id).where(*parent.where(parent_source))
            if nav.link:
                link, mine, theirs = nav.link
                make = (lambda s, p=parents, link=link, mine=mine, theirs=theirs:
                        [s.c.id.in_(select(link.c[theirs]).where(link.c[mine].in_(p)))])
            else:
                make = lambda s, p=parents, back=nav.back: [s.c[back].in_(p)]  # noqa: E731
            current = Resolved(target, key is not None, [make], parent, name)
        if key is not None:
            if not nav.many:
                raise _unknown(path, f"{name} is a single entity: no id after it")
            current.conditions.append(_by_id(int(key)))
            current.key = int(key)
    return current


def _by_id(key: int):
    return lambda s: [s.c.id == key]
