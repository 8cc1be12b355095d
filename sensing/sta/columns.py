"""A dataArray item checked column by column: one pass per component over all its entries, without a dict or the
`where` texts of every entry, which row by row were most of the server's CPU in a bulk ingest (docs/benchmarks.md).

It accepts exactly what create.observation_row accepts row by row and makes the same rows. Whatever it is not
sure of (any refusal, an interval, a row without a time, a water-quality Datastream, a FeatureOfInterest/id
column) it leaves to the row-by-row check, which finds the first bad entry and says where and why, as before.
"""

import math
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat

from sensing.sta import bodies as b
from sensing.store import ObservationRow

COLUMNS = frozenset({"phenomenonTime", "result", "resultTime", "resultQuality"})  # those checked here


def item_rows(stream, components: list, values: list, now: datetime) -> list[ObservationRow] | None:
    """The rows of one dataArray item of `stream` (a datastream row with its `_feature`), or None: check it row
    by row."""
    if stream["wq_field"] is not None or not COLUMNS.issuperset(components) or "phenomenonTime" not in components:
        return None
    width = len(components)
    if not all(isinstance(entry, list) and len(entry) == width for entry in values):
        return None
    if not values:
        return []
    columns = dict(zip(components, zip(*values)))  # a repeated component: the last one, as a dict of an entry has
    starts = phenomenon_times(columns["phenomenonTime"], now)
    results = numbers(columns["result"], stream["observation_type"])
    qualities = result_qualities(columns.get("resultQuality"), len(values))
    result_times = optional_instants(columns.get("resultTime"), len(values))
    if starts is None or results is None or qualities is None or result_times is None:
        return None
    return list(map(ObservationRow, repeat(stream["id"]), starts, results, qualities, result_times, repeat(None),
                    repeat(stream["_feature"])))


def instants(column: Sequence) -> list[datetime] | None:
    """Each value read as bodies.instant reads one, or None if any is not a time with a zone."""
    try:
        moments = [b.parse_time(value) for value in column]
    except (AttributeError, TypeError, ValueError):  # AttributeError: not a string
        return None
    if any(moment.tzinfo is None for moment in moments):
        return None
    return moments


def phenomenon_times(column: Sequence, now: datetime) -> list[datetime] | None:
    """Instants no more than a day after `now`; an interval (any "/": fromisoformat would also take one as the
    date and time's separator) or a missing time is left to bodies.phenomenon_time."""
    moments = instants(column)
    if moments is None or "/" in "".join(column) or max(moments) > now + b.FUTURE:
        return None
    return moments


def numbers(column: Sequence, observation_type: str) -> list[float] | None:
    """The results as floats, as bodies.result makes each."""
    if not {type(value) for value in column} <= {int, float}:  # a bool is neither
        return None
    try:
        out = list(map(float, column))
    except OverflowError:
        return None
    if not math.isfinite(sum(out)):  # any inf or nan makes the sum one (and so may finite ones: then row by row)
        return None
    if b.OBSERVATION_TYPES.get(observation_type) == "integer" and not all(n.is_integer() for n in out):
        return None
    return out


def result_qualities(column: Sequence | None, count: int) -> Sequence | None:
    if column is None:
        return repeat(None, count)
    if not all(value is None or isinstance(value, str) and len(value) <= b.LONGEST_QUALITY for value in column):
        return None
    return column


def optional_instants(column: Sequence | None, count: int) -> Sequence | None:
    """resultTimes: None for a null one, as observation_row reads them."""
    if column is None:
        return repeat(None, count)
    moments = instants([value for value in column if value is not None])
    if moments is None:
        return None
    found = iter(moments)
    return [None if value is None else next(found) for value in column]
