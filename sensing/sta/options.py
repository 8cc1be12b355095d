"""The query options ($top, $skip, $count, $orderby, $select, $filter, $expand), parsed and checked once.

$expand is split here (nested parentheses and quotes respected); $filter is parsed by odata-query and
turned into SQL in sensing.sta.filters. Every refusal is a 400 naming the option.
"""

from dataclasses import dataclass, field

from sensing.sta.entities import ENTITIES, Entity
from twin.errors import ApiError

DEFAULT_TOP, MAX_TOP = 100, 10_000
KNOWN = {"$top", "$skip", "$count", "$orderby", "$select", "$filter", "$expand", "$resultFormat"}


@dataclass
class Options:
    entity: Entity
    top: int = DEFAULT_TOP
    skip: int = 0
    count: bool = False
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    select: list[str] | None = None
    filter: str | None = None
    expand: dict[str, "Options"] = field(default_factory=dict)


def _bad(option: str, detail: str) -> ApiError:
    return ApiError(400, "invalid_query_option", f"{option}: {detail}", where=f"query.{option}")


def _split(text: str, separator: str, option: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'":
            quote = not quote
        elif quote:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise _bad(option, f"unbalanced ')' at position {i}")
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise _bad(option, "unbalanced parentheses or quotes")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _integer(option: str, value: str, low: int, high: int) -> int:
    if not value.strip().isdigit() or not low <= int(value) <= high:
        raise _bad(option, f"{value[:40]!r} is not a whole number from {low} to {high}")
    return int(value)


def parse(entity: Entity, params: dict[str, str], depth: int = 0) -> Options:
    unknown = [k for k in params if k.startswith("$") and k not in KNOWN]
    if unknown:
        raise _bad(unknown[0], f"unknown query option; known: {', '.join(sorted(KNOWN))}")
    if depth > 5:
        raise _bad("$expand", "nested more than 5 levels deep")
    out = Options(entity)
    if "$top" in params:
        out.top = _integer("$top", params["$top"], 0, MAX_TOP)
    if "$skip" in params:
        out.skip = _integer("$skip", params["$skip"], 0, 2**53)
    if "$count" in params:
        if params["$count"] not in ("true", "false"):
            raise _bad("$count", "must be true or false")
        out.count = params["$count"] == "true"
    if params.get("$resultFormat") not in (None, "default"):
        raise _bad("$resultFormat", "only the default format is served")
    for item in _split(params["$orderby"], ",", "$orderby") if "$orderby" in params else []:
        name, _, direction = item.partition(" ")
        if name not in entity.properties or direction.strip().lower() not in ("", "asc", "desc"):
            raise _bad("$orderby", f"{item[:60]!r}: order by one of {', '.join(entity.properties)} [asc|desc]")
        out.orderby.append((entity.properties[name], direction.strip().lower() == "desc"))
    if "$select" in params:
        out.select = _split(params["$select"], ",", "$select")
        wrong = [s for s in out.select if s not in entity.properties and s not in entity.navs]
        if wrong:
            raise _bad("$select", f"{wrong[0][:60]!r} is not a property of {entity.name}")
    if "$filter" in params:
        out.filter = params["$filter"]
    for item in _split(params["$expand"], ",", "$expand") if "$expand" in params else []:
        _expand(out, item, depth)
    return out


def _expand(parent: Options, item: str, depth: int) -> None:
    path, _, rest = item.partition("(")
    if rest and not rest.endswith(")"):
        raise _bad("$expand", f"{item[:60]!r}: options go in parentheses at the end")
    names = [n.strip() for n in path.split("/")]
    entity, holder = parent.entity, parent
    for i, name in enumerate(names):
        nav = entity.navs.get(name)
        if nav is None:
            raise _bad("$expand", f"{name[:60]!r} is not a navigation property of {entity.name}; "
                       f"it has {', '.join(entity.navs)}")
        target = ENTITIES[nav.target]
        last = i == len(names) - 1
        if name not in holder.expand or last:
            params = {}
            if last and rest:
                for option in _split(rest[:-1], ";", "$expand"):
                    key, eq, value = option.partition("=")
                    if not eq:
                        raise _bad("$expand", f"{option[:60]!r} is not $option=value")
                    params[key.strip()] = value.strip()
            previous = holder.expand.get(name)
            holder.expand[name] = parse(target, params, depth + 1)
            if previous is not None:
                holder.expand[name].expand = previous.expand | holder.expand[name].expand
        holder, entity = holder.expand[name], target
