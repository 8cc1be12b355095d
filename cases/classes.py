"""Case classes: events in the style of GB/T 30428.2 (cases/data/event_classes.csv, codes `E` + 大类 + 小类) and
component problems, one per component class that layers.codes knows (codes `C` + 大类 + 小类, linked to a
`city_components` code). The class code is the Open311 service_code."""

import csv
from functools import cache
from pathlib import Path
from typing import NamedTuple

from layers.codes import component_classes

DATA_DIR = Path(__file__).parent / "data"
EVENT, COMPONENT = "事件", "部件"


class CaseClass(NamedTuple):
    code: str
    name: str
    kind: str  # 事件 or 部件
    group: str  # the 大类's name


@cache
def case_classes() -> dict[str, CaseClass]:
    with open(DATA_DIR / "event_classes.csv", encoding="utf-8", newline="") as f:
        events = [CaseClass(f"E{r['major_code']}{r['minor_code']}", r["minor_name"], EVENT, r["major_name"])
                  for r in csv.DictReader(f)]
    components = [CaseClass(f"C{c.major_code}{c.minor_code}", c.minor_name, COMPONENT, c.major_name)
                  for c in component_classes()]
    return {c.code: c for c in events + components}


def component_class_code(component_code: str) -> str:
    """The case class of a problem with the component `component_code` (a valid 16-digit id)."""
    return f"C{component_code[6:10]}"
