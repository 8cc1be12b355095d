import os
from pathlib import Path

import pandas as pd
import pytest

from etl.factors import factor_aliases
from layers.factors import factors
from layers.water_class import CLASS_NAMES, classify, classify_frame, parse_class

REAL_DATA = Path(os.environ.get("TWIN_REAL_DATA_DIR", Path(__file__).parents[1] / "data" / "real"))
SHAZHU = REAL_DATA / "cnemc-water-quality" / "shazhu_daily_2020-05-10_to_2021-04-05.csv"


@pytest.fixture(scope="module")
def shazhu_normal():
    """Normal-status 沙渚 readings that carry a published class, columns renamed to field names."""
    df = pd.read_csv(SHAZHU, na_values=["--", "*"], keep_default_na=False)
    df = df[(df["status"] == "正常") & (df["water_class"] != "")]
    aliases = factor_aliases()
    return df.rename(columns=lambda c: aliases.get(c.lower(), c))


def test_reproduces_published_class(shazhu_normal):
    # 沙渚 is in Taihu, but CNEMC evaluates it with the river TP limits.
    published = shazhu_normal["water_class"].map(parse_class)
    ours = classify_frame(shazhu_normal, "river")
    mismatches = shazhu_normal[~ours["water_class"].eq(published).fillna(False)]
    assert len(shazhu_normal) > 200
    assert len(mismatches) == 0, mismatches[["file_date", "water_class", "do", "codmn", "nh3n", "tp"]]


def test_single_reading_agrees_with_frame(shazhu_normal):
    fields = ["do", "codmn", "nh3n", "tp"]
    frame = classify_frame(shazhu_normal, "river")
    for (_, row), (_, expected) in zip(shazhu_normal[fields].iterrows(), frame.iterrows()):
        assert classify(row.to_dict(), "river") == (expected["water_class"], expected["limiting"])


def test_lake_limits_do_not_reproduce_shazhu(shazhu_normal):
    published = shazhu_normal["water_class"].map(parse_class)
    assert (classify_frame(shazhu_normal, "lake")["water_class"] != published).sum() > 100


@pytest.mark.parametrize("values, expected", [
    ({"nh3n": 0.15}, (1, "nh3n")),
    ({"nh3n": 0.5}, (2, "nh3n")),
    ({"nh3n": 0.5001}, (3, "nh3n")),
    ({"nh3n": 2.0}, (5, "nh3n")),
    ({"nh3n": 2.01}, (6, "nh3n")),
    ({"do": 7.5}, (1, "do")),
    ({"do": 7.49}, (2, "do")),
    ({"do": 2.0}, (5, "do")),
    ({"do": 1.99}, (6, "do")),
    ({"codmn": 2}, (1, "codmn")),
    ({"codmn": 15}, (5, "codmn")),
    ({"codmn": 15.1}, (6, "codmn")),
    ({"tp": 0.02}, (1, "tp")),
    ({"tp": 0.4}, (5, "tp")),
    ({"tp": 0.41}, (6, "tp")),
    # Unrounded comparison, taken from published 沙渚 readings (rounding would give Ⅲ).
    ({"do": 4.999915, "codmn": 2, "nh3n": 0.19, "tp": 0.069}, (4, "do")),
    ({"do": 8.699847, "codmn": 6.04, "nh3n": 0.26, "tp": 0.1104}, (4, "codmn")),
])
def test_river_boundaries(values, expected):
    assert classify(values, "river") == expected


@pytest.mark.parametrize("tp, river, lake", [(0.01, 1, 1), (0.025, 2, 2), (0.05, 2, 3), (0.1, 2, 4), (0.2, 3, 5), (0.21, 4, 6)])
def test_tp_river_vs_lake(tp, river, lake):
    assert classify({"tp": tp}, "river") == (river, "tp")
    assert classify({"tp": tp}, "lake") == (lake, "tp")


def test_worst_parameter_wins_and_ties_are_all_reported():
    assert classify({"do": 8, "codmn": 5, "nh3n": 0.3, "tp": 0.15}, "river") == (3, "codmn,tp")
    assert classify({"do": 8, "codmn": 1, "nh3n": 0.1, "tp": 0.01}, "river") == (1, "do,codmn,nh3n,tp")


def test_missing_parameters_are_skipped():
    assert classify({"do": None, "codmn": 5, "nh3n": float("nan")}, "river") == (3, "codmn")
    assert classify({"codmn": 3, "ph": 12.0, "tn": 9.0}, "river") == (2, "codmn")


def test_all_missing():
    assert classify({}, "river") == (None, None)
    assert classify({"do": None, "tp": float("nan"), "ph": 7.0}, "lake") == (None, None)


def test_frame_keeps_index_and_marks_missing():
    df = pd.DataFrame({"do": [8.0, None], "tp": [0.3, None]}, index=[10, 20])
    out = classify_frame(df, "river")
    assert list(out.index) == [10, 20]
    assert out.loc[10].tolist() == [4, "tp"]
    assert out.loc[20].isna().all()


def test_unknown_evaluation_type():
    with pytest.raises(ValueError):
        classify({"do": 8}, "sea")


@pytest.mark.parametrize("text, expected", [
    ("Ⅰ", 1), ("Ⅱ", 2), ("Ⅲ", 3), ("Ⅳ", 4), ("Ⅴ", 5), ("劣Ⅴ", 6),
    ("I", 1), ("II", 2), ("III", 3), ("IV", 4), ("V", 5), ("劣V", 6),
    ("iii", 3), (" Ⅱ类 ", 2), ("劣Ⅴ类", 6),
    ("", None), ("--", None), ("VI", None), (None, None),
])
def test_parse_class(text, expected):
    assert parse_class(text) == expected


def test_class_names_round_trip():
    assert {k: parse_class(v) for k, v in CLASS_NAMES.items()} == {k: k for k in CLASS_NAMES}


@pytest.mark.parametrize("alias, field", [
    ("溶解氧", "do"), ("DO", "do"), ("w01009", "do"),
    ("高锰酸盐指数", "codmn"), ("CODMn", "codmn"), ("w01019", "codmn"),
    ("氨氮", "nh3n"), ("NH3-N", "nh3n"), ("w21003", "nh3n"),
    ("总磷", "tp"), ("TP", "tp"), ("w21011", "tp"),
    ("总氮", "tn"), ("TN", "tn"), ("w21001", "tn"),
    ("水温", "water_temp"), ("w01010", "water_temp"),
    ("pH值", "ph"), ("w01001", "ph"),
    ("电导率", "conductivity"), ("w01014", "conductivity"),
    ("浊度", "turbidity"), ("w01003", "turbidity"),
])
def test_factor_aliases(alias, field):
    assert factor_aliases()[alias.lower()] == field


def test_aliases_are_unique_per_field():
    declared = sum(len({a.lower() for a in [k, f["hj212"], *f["aliases"]]}) for k, f in factors().items())
    assert len(factor_aliases()) == declared
