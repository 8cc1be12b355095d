"""Validators for the codes that key our layers.

Each check takes the raw value and returns None when it is valid, or a short reason
(Chinese, then English) when it is not. Layer specs refer to checks by their key in
`CHECKS`. Code tables are data in `layers/data/`. For a million rows, `SURELY_VALID`
holds column-wise tests that clear the common valid values at once; only the rest go
through the check one by one (for its reason).
"""

import csv
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).parent / "data"


class ComponentClass(NamedTuple):
    major_code: str
    major_name: str
    minor_code: str
    minor_name: str


def _read_csv(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@cache
def _classes() -> dict[tuple[str, str], ComponentClass]:
    rows = (ComponentClass(**row) for row in _read_csv("component_classes.csv"))
    return {(c.major_code, c.minor_code): c for c in rows}


def component_classes() -> list[ComponentClass]:
    """GB/T 30428.2 component classes, in table order."""
    return list(_classes().values())


@cache
def _industries() -> dict[str, str]:
    return {row["code"]: row["name"] for row in _read_csv("industries.csv")}


def industries() -> dict[str, str]:
    """GB/T 4754-2017 class code -> name, for the industries we track."""
    return dict(_industries())


def _wrong_type(value: object) -> str:
    return f"应为字符串 (expected a string, got {type(value).__name__})"


def _component_shape(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type(value)
    if len(value) != 16 or not (value.isascii() and value.isdigit()):
        return f"部件标识码应为16位数字 (expected 16 digits, got {value!r})"
    return None


def split_component_code(code: str) -> tuple[str, str, str, str]:
    """(county, major, minor, serial) of a 16-digit component id."""
    if reason := _component_shape(code):
        raise ValueError(reason)
    return code[:6], code[6:8], code[8:10], code[10:]


def component_code(value: str) -> str | None:
    """GB/T 30428 component id: county code (6) + 大类 (2) + 小类 (2) + serial (6)."""
    if reason := _component_shape(value):
        return reason
    county, major, minor, _ = split_component_code(value)
    # Administrative division codes start with the region digit 1–8; "xxxx00" is a
    # province or prefecture, not the county that assigns component ids.
    if county[0] not in "12345678" or county.endswith("00"):
        return f"区县代码 {county} 不是县级行政区划代码 (not a county-level division code)"
    if (major, minor) not in _classes():
        known_majors = {c.major_code for c in _classes().values()}
        if major not in known_majors:
            return f"部件大类 {major} 不存在 (unknown major class {major})"
        return f"部件小类 {major}{minor} 不在分类表中 (unknown class {major}/{minor})"
    return None


CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100: no I, O, Z, S, V
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_code_check_char(first17: str) -> str:
    """The 18th (check) character of a unified social credit code."""
    if len(first17) != 17 or any(c not in CREDIT_ALPHABET for c in first17):
        raise ValueError(f"expected 17 characters from {CREDIT_ALPHABET}, got {first17!r}")
    total = sum(CREDIT_ALPHABET.index(c) * w for c, w in zip(first17, CREDIT_WEIGHTS))
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


def credit_code(value: str) -> str | None:
    """GB 32100-2015 unified social credit code (统一社会信用代码)."""
    if not isinstance(value, str):
        return _wrong_type(value)
    if len(value) != 18:
        return f"统一社会信用代码应为18位 (expected 18 characters, got {len(value)})"
    for i, c in enumerate(value, start=1):
        if c not in CREDIT_ALPHABET:
            return (
                f"统一社会信用代码第{i}位含非法字符 {c!r} "
                "(allowed: digits and upper-case letters except I, O, Z, S, V)"
            )
    if not value[2:8].isdigit():
        return f"第3–8位应为行政区划码数字 (positions 3–8 must be digits, got {value[2:8]})"
    expected = credit_code_check_char(value[:17])
    if value[17] != expected:
        return f"统一社会信用代码校验位错误 (check digit should be {expected}, got {value[17]})"
    return None


_INDUSTRY_SHAPE = re.compile(r"[A-T][0-9]{4}")


def industry_code(value: str) -> str | None:
    """GB/T 4754-2017 class: section letter + 4 digits, present in industries.csv."""
    if not isinstance(value, str):
        return _wrong_type(value)
    if not _INDUSTRY_SHAPE.fullmatch(value):
        return f"行业代码应为门类字母加4位数字 (expected e.g. C3982, got {value!r})"
    if value not in _industries():
        return f"行业代码 {value} 不在行业表中 (not in the industries table)"
    return None


_STATION_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def station_code(value: str) -> str | None:
    """Monitoring-station code: 1–32 ASCII letters, digits, '-' or '_'."""
    if not isinstance(value, str):
        return _wrong_type(value)
    if not _STATION_SHAPE.fullmatch(value):
        return f"站点编码应为1–32位字母、数字、-或_ (expected 1–32 of A-Z a-z 0-9 - _, got {value!r})"
    return None


# GB/T 28181-2016 统一编码规则: type codes 131 (camera) and 132 (IP camera) are the front-end devices that give video;
# network identifiers 0–8 are assigned (9 is reserved).
CAMERA_TYPES = ("131", "132")


def camera_id(value: str) -> str | None:
    """GB/T 28181-2016 camera id: 中心编码 (division code 6 + 基层单位 2) + 行业 (2) + 类型 (3) + 网络 (1) + serial (6)."""
    if not isinstance(value, str):
        return _wrong_type(value)
    if len(value) != 20 or not (value.isascii() and value.isdigit()):
        return f"设备编码应为20位数字 (GB/T 28181 device id: expected 20 digits, got {value!r})"
    if value[0] not in "12345678":
        return f"中心编码 {value[:8]} 不以行政区划代码开头 (the centre code must start with a division code)"
    if value[10:13] not in CAMERA_TYPES:
        return (f"类型编码 {value[10:13]} 不是摄像机 (type code must be {' or '.join(CAMERA_TYPES)}: "
                "a camera or an IP camera)")
    if value[13] == "9":
        return "网络标识 9 为预留值 (network identifier 9 is reserved)"
    return None


def _valid_component_codes(values: pd.Series) -> np.ndarray:
    text = values.astype("string")
    shaped = text.str.fullmatch(r"[0-9]{16}").fillna(False).to_numpy(dtype=bool)
    county_ok = text.str.slice(0, 1).isin(list("12345678")) & ~text.str.slice(4, 6).eq("00")
    classes = text.str.slice(6, 10).isin([major + minor for major, minor in _classes()])
    return shaped & (county_ok & classes).fillna(False).to_numpy(dtype=bool)


def _valid_station_codes(values: pd.Series) -> np.ndarray:
    return values.astype("string").str.fullmatch(_STATION_SHAPE.pattern).fillna(False).to_numpy(dtype=bool)


SURELY_VALID: dict[str, Callable[[pd.Series], np.ndarray]] = {
    "component_code": _valid_component_codes,
    "station_code": _valid_station_codes,
}

CHECKS: dict[str, Callable[[str], str | None]] = {
    "camera_id": camera_id,
    "component_code": component_code,
    "credit_code": credit_code,
    "industry_code": industry_code,
    "station_code": station_code,
}
