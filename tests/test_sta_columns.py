"""A dataArray item checked column by column (sensing.sta.columns) makes exactly the rows the row-by-row check
makes, and leaves to it every item it would refuse or read otherwise (an interval, a missing time)."""

from datetime import datetime, timedelta, timezone

import pytest

from sensing.sta import columns, create
from twin.auth import Principal
from twin.errors import ApiError

NOW = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
MEASUREMENT, COUNT = create.b.OBSERVATION_TYPES
STREAM = {"id": 7, "wq_field": None, "observation_type": MEASUREMENT, "_feature": 3, "department": "d", "thing_id": 1}
T = ["2026-05-01T07:00:00+08:00", "2026-04-30T23:00:00.5Z", "2026-05-02T07:59:59.999999Z", "20260501T070000Z"]


def row_by_row(stream, components, values) -> list | ApiError:
    """What data_array_rows made of an item before: observation_row for each entry."""
    principal, rows = Principal(1, "k", "d", (), False), []
    try:
        for j, value in enumerate(values):
            if not isinstance(value, list) or len(value) != len(components):
                raise create.b.bad(f"body[0].dataArray[{j}]", f"must be an array of {len(components)} values")
            rows.append(create.observation_row(None, principal, dict(zip(components, value)),
                                               f"body[0].dataArray[{j}]", stream["id"], {stream["id"]: stream}, NOW))
    except ApiError as e:
        return e
    return rows


ACCEPTED = [
    (["phenomenonTime", "result"], [[T[0], 1.5], [T[1], 2], [T[2], -0.0], [T[3], 10**15]]),
    (["result", "phenomenonTime", "resultQuality"], [[1.0, T[0], "N"], [2.0, T[1], None], [3.0, T[2], "x" * 64]]),
    (["phenomenonTime", "result", "resultTime"], [[T[0], 1.0, T[1]], [T[1], 2.0, None], [T[2], 3.0, T[3]]]),
    (["phenomenonTime", "result", "result"], [[T[0], "ignored", 1.0]]),  # a repeated component: the last one
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[0], 2.0]]),  # a repeated key: both rows (the store keeps one)
]


@pytest.mark.parametrize("components, values", ACCEPTED)
def test_an_accepted_item_makes_the_same_rows(components, values):
    made = columns.item_rows(STREAM, components, values, NOW)
    assert made is not None and made == row_by_row(STREAM, components, values)
    assert [r.phenomenon_time.utcoffset() for r in made] == [r.phenomenon_time.utcoffset()
                                                              for r in row_by_row(STREAM, components, values)]
    assert all(type(r.result) is float for r in made)


def test_a_count_datastream_takes_whole_numbers_column_by_column():
    count = STREAM | {"observation_type": COUNT}
    assert columns.item_rows(count, ["phenomenonTime", "result"], [[T[0], 3], [T[1], 4.0]], NOW) == row_by_row(
        count, ["phenomenonTime", "result"], [[T[0], 3], [T[1], 4.0]])
    assert columns.item_rows(count, ["phenomenonTime", "result"], [[T[0], 3], [T[1], 4.5]], NOW) is None


# each bad value sits in the middle of its column, between good ones
REFUSED = [
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1], "x"], [T[2], 2.0]], "body[0].dataArray[1].result"),
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1], True], [T[2], 2.0]], "body[0].dataArray[1].result"),
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1], None], [T[2], 2.0]], "body[0].dataArray[1].result"),
    (["phenomenonTime", "result"], [[T[0], 1.0], ["2026-13-01T00:00:00Z", 1.0], [T[2], 2.0]],
     "body[0].dataArray[1].phenomenonTime"),
    (["phenomenonTime", "result"], [[T[0], 1.0], ["2026-05-01T08:00:00", 1.0], [T[2], 2.0]],
     "body[0].dataArray[1].phenomenonTime"),  # no time zone
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1], 1.0], ["2026-05-02T08:00:01Z", 2.0]],
     "body[0].dataArray[2].phenomenonTime"),  # more than a day in the future
    (["phenomenonTime", "result"], [[T[0], 1.0], ["2026-05-01/07:00:00Z", 1.0], [T[2], 2.0]],
     "body[0].dataArray[1].phenomenonTime"),  # "/" is an interval's, not fromisoformat's any separator
    (["phenomenonTime", "result"], [[T[0], 1.0], [5, 1.0], [T[2], 2.0]], "body[0].dataArray[1].phenomenonTime"),
    (["phenomenonTime", "result", "resultQuality"], [[T[0], 1.0, "N"], [T[1], 1.0, "x" * 65], [T[2], 2.0, "N"]],
     "body[0].dataArray[1].resultQuality"),
    (["phenomenonTime", "result", "resultQuality"], [[T[0], 1.0, "N"], [T[1], 1.0, 3], [T[2], 2.0, "N"]],
     "body[0].dataArray[1].resultQuality"),
    (["phenomenonTime", "result", "resultTime"], [[T[0], 1.0, None], [T[1], 1.0, "yesterday"], [T[2], 2.0, None]],
     "body[0].dataArray[1].resultTime"),
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1]], [T[2], 2.0]], "body[0].dataArray[1]"),
    (["phenomenonTime", "result"], [[T[0], 1.0], "x", [T[2], 2.0]], "body[0].dataArray[1]"),
    (["phenomenonTime", "result"], [[T[0], 1.0], [T[1], "x"], ["bad", 2.0]], "body[0].dataArray[1].result"),
]


@pytest.mark.parametrize("components, values, where", REFUSED)
def test_an_item_to_refuse_is_left_to_the_row_by_row_check(components, values, where):
    assert columns.item_rows(STREAM, components, values, NOW) is None
    refusal = row_by_row(STREAM, components, values)
    assert isinstance(refusal, ApiError) and refusal.where == where


@pytest.mark.parametrize("components, values", [
    (["phenomenonTime", "result"], [[T[0], 1.0], [f"{T[0]}/{T[1]}", 2.0]]),  # an interval
    (["phenomenonTime", "result"], [[T[0], 1.0], [None, 2.0]]),  # no time: the clock's
    (["result"], [[1.0]]),
    (["phenomenonTime", "result"], [[T[0], 1e308], [T[1], 1e308]]),  # finite, though their sum is not
    (["phenomenonTime", "result", "resultTime"], [[T[0], 1.0, ""]]),  # an empty resultTime is none
])
def test_what_it_is_not_sure_of_is_read_row_by_row_as_before(components, values):
    assert columns.item_rows(STREAM, components, values, NOW) is None
    assert not isinstance(row_by_row(STREAM, components, values), ApiError)


def test_water_quality_and_feature_columns_are_read_row_by_row():
    assert columns.item_rows(STREAM | {"wq_field": "cod"}, ["phenomenonTime", "result"], [[T[0], 1.0]], NOW) is None
    assert columns.item_rows(STREAM, ["phenomenonTime", "result", "FeatureOfInterest/id"], [[T[0], 1.0, 3]],
                             NOW) is None
