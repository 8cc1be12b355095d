"""Surface-water class (GB 3838-2002 Ⅰ..劣Ⅴ) of a reading, as the CNEMC real-time publication assigns it.

The class limits are data in layers/data/gb3838.toml; see it for the rules and for why values are
compared unrounded. The ETL classifies each reading as it loads it, the series endpoint each period's means.
"""

import tomllib
import unicodedata
from functools import cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

_LIMITS = Path(__file__).parent / "data" / "gb3838.toml"
EVALUATION_TYPES = ("river", "lake")
CLASS_NAMES = {1: "Ⅰ", 2: "Ⅱ", 3: "Ⅲ", 4: "Ⅳ", 5: "Ⅴ", 6: "劣Ⅴ"}
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "劣V": 6}


@cache
def _limits(evaluation_type: str) -> dict[str, tuple[str, np.ndarray]]:
    """field -> (direction, class I..V limits) for the classifying parameters."""
    if evaluation_type not in EVALUATION_TYPES:
        raise ValueError(f"evaluation_type must be one of {EVALUATION_TYPES}, not {evaluation_type!r}")
    with open(_LIMITS, "rb") as f:
        parameters = tomllib.load(f)["parameters"]
    out = {}
    for field, p in parameters.items():
        limits = p["limits"]
        if isinstance(limits, dict):
            limits = limits[evaluation_type]
        out[field] = (p["direction"], np.asarray(limits, dtype=float))
    return out


def _grade(values: np.ndarray, direction: str, limits: np.ndarray) -> np.ndarray:
    """Class 1..6 of each value (NaN where missing): one plus the number of class limits it fails."""
    failed = values[:, None] < limits if direction == "at_least" else values[:, None] > limits
    return np.where(np.isnan(values), np.nan, 1 + failed.sum(axis=1))


def classify_frame(df: pd.DataFrame, evaluation_type: str) -> pd.DataFrame:
    """Class of every row of df (columns named by field, missing columns count as missing values).

    Returns columns water_class (Int64, 1..6 or <NA>) and limiting (the field(s) at that class,
    joined by ',', or None), indexed like df.
    """
    limits = _limits(evaluation_type)
    fields = np.array(list(limits))
    values = df.reindex(columns=fields).to_numpy(dtype=float, na_value=np.nan)
    grades = np.column_stack([_grade(values[:, i], *limits[f]) for i, f in enumerate(fields)])
    worst = np.fmax.reduce(grades, axis=1)
    return pd.DataFrame({
        "water_class": pd.array(worst, dtype="Int64"),
        "limiting": [",".join(fields[row]) or None for row in grades == worst[:, None]],
    }, index=df.index)


def classify(values: Mapping[str, float | None], evaluation_type: str) -> tuple[int | None, str | None]:
    """(class 1..6, limiting field(s) joined by ',') of one reading; (None, None) if nothing classifies it."""
    water_class, limiting = classify_frame(pd.DataFrame([values]), evaluation_type).iloc[0]
    return (None, None) if pd.isna(water_class) else (int(water_class), limiting)


def parse_class(text: str | None) -> int | None:
    """1..6 from 'Ⅲ', 'III', 'iii', '劣Ⅴ', '劣V', 'Ⅳ类' ...; None for anything else (e.g. '--', '')."""
    if text is None:
        return None
    # NFKC turns the Unicode roman numerals (Ⅲ) and full-width letters into plain ASCII.
    key = unicodedata.normalize("NFKC", str(text)).strip().upper().removesuffix("类")
    return _ROMAN.get(key)
