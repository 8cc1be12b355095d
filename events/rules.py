"""Alert rules are data: a spec file per department (`events/rules/*.toml`) and `/alerts/rules` for its key.

Kinds (judged in the database as readings are stored, migration 0018's `events.judge`):
- `threshold`: a Datastream's result above or below `limit`;
- `rate`: its change per hour since the previous reading above or below `limit`;
- `permit`: an HJ 212 factor above the source's permitted limit, `permit_limits.<factor>` of its Thing;
- `water_class`: a station's GB 3838 class worse than its `target_class`;
- `silence`: no reading of the Datastream for `readings` times `expected_s` (a device offline); a clock, not a
  reading, opens it (events.silence), the next reading closes it.
Every kind raises after `readings` consecutive offending readings spanning at least `duration_s`; a reading
within `hysteresis` of the limit neither offends nor clears; an alert closes once the readings have stayed
clear for `clear_s`. A rule that is new or changed is judged over the readings of the last
`alert_replay_hours` (its open alerts closed first), so a restart or an edit never loses an offence.
With `open_case = true` and a `case_class` (a case class code of the cases room, E0105 or C0118), each alert of
the rule opens one case (the cases room follows the alerts: cases.from_alerts); stored as `case_class`.
"""

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.engine import Connection

RULE_DIR = Path(__file__).parent / "rules"


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    kind: Literal["threshold", "water_class", "permit", "rate", "silence"]
    severity: Literal["info", "warning", "critical"] = "warning"
    parameter: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,32}$",
                                  description="a water-quality field (nh3n) or an HJ 212 factor code (w21003)")
    things: list[str] | None = Field(None, min_length=1, description="station codes, HJ 212 device numbers or "
                                                                     "Thing names; every Thing when absent")
    op: Literal["above", "below"] = "above"
    limit: float | None = Field(None, allow_inf_nan=False)
    hysteresis: float = Field(0, ge=0, allow_inf_nan=False)
    readings: int = Field(1, ge=1, le=10_000)
    duration_s: float = Field(0, ge=0, le=366 * 86400)
    clear_s: float = Field(0, ge=0, le=366 * 86400)
    expected_s: float | None = Field(None, gt=0, le=366 * 86400, description="silence: the reporting interval")
    enabled: bool = True
    open_case: bool = False
    case_class: str | None = Field(None, pattern=r"^[EC][0-9]{4}$", description="open_case: the class of the "
                                   "cases the rule's alerts open (GET /open311/v2/services.json lists them)")

    @model_validator(mode="after")
    def _fits_kind(self):
        if self.open_case != (self.case_class is not None):
            raise ValueError("open_case = true needs a case_class, and a case_class is only for open_case = true")
        if self.kind in ("threshold", "rate", "permit", "silence") and self.parameter is None:
            raise ValueError(f"a {self.kind} rule needs a parameter")
        if self.kind in ("threshold", "rate") and self.limit is None:
            raise ValueError(f"a {self.kind} rule needs a limit")
        if self.kind in ("permit", "water_class") and self.limit is not None:
            raise ValueError(f"a {self.kind} rule takes its limit from the Thing, not from the rule")
        if (self.kind == "silence") != (self.expected_s is not None):
            raise ValueError("expected_s is for silence rules, and every silence rule needs it")
        if self.kind == "silence" and self.limit is not None:
            raise ValueError("a silence rule has no limit: it counts expected readings")
        if self.kind == "water_class" and (self.parameter is not None or self.op != "above"):
            raise ValueError("a water_class rule has no parameter and no op: a class above the target offends")
        return self


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    department: str
    rules: list[Rule] = []


def spec_files() -> list[tuple[str, RuleFile]]:
    return [(p.name, RuleFile(**tomllib.loads(p.read_text("utf-8")))) for p in sorted(RULE_DIR.glob("*.toml"))]


def _values(rule: Rule, department: str, source: str) -> dict:
    return {"name": rule.name, "department": department, "kind": rule.kind, "severity": rule.severity,
            "parameter": rule.parameter, "things": rule.things, "op": rule.op, "limit": rule.limit,
            "hysteresis": rule.hysteresis, "readings": rule.readings, "duration": f"{rule.duration_s} seconds",
            "clear": f"{rule.clear_s} seconds", "enabled": rule.enabled, "source": source,
            "expected": None if rule.expected_s is None else f"{rule.expected_s} seconds",
            "case_class": rule.case_class}


UPSERT = text(
    'INSERT INTO events.rule AS r (name, department, kind, severity, parameter, things, op, "limit", hysteresis, '
    "readings, duration, clear, expected, enabled, source, case_class) VALUES (:name, :department, :kind, :severity, "
    ":parameter, CAST(:things AS text[]), :op, :limit, :hysteresis, :readings, CAST(:duration AS interval), "
    "CAST(:clear AS interval), CAST(:expected AS interval), :enabled, :source, :case_class) "
    'ON CONFLICT (name) DO UPDATE SET department = excluded.department, kind = excluded.kind, '
    'severity = excluded.severity, parameter = excluded.parameter, things = excluded.things, op = excluded.op, '
    '"limit" = excluded."limit", hysteresis = excluded.hysteresis, readings = excluded.readings, '
    "duration = excluded.duration, clear = excluded.clear, expected = excluded.expected, enabled = excluded.enabled, "
    "source = excluded.source, case_class = excluded.case_class, updated_at = now() "
    'WHERE (r.department, r.kind, r.severity, r.parameter, r.things, r.op, r."limit", r.hysteresis, r.readings, '
    "r.duration, r.clear, r.expected, r.enabled, r.case_class) IS DISTINCT FROM (excluded.department, excluded.kind, "
    'excluded.severity, excluded.parameter, excluded.things, excluded.op, excluded."limit", excluded.hysteresis, '
    "excluded.readings, excluded.duration, excluded.clear, excluded.expected, excluded.enabled, "
    "excluded.case_class) "
    "RETURNING id, (xmax = 0) AS created")


def close_open_alerts(conn: Connection, rule_id: int, note: str) -> None:
    conn.execute(text("UPDATE layers.alerts a SET state = 'closed', closed_at = now(), "
                      "note = coalesce(a.note || ' / ', '') || :note "
                      "FROM events.rule r WHERE r.id = :id AND a.rule = r.name AND a.state <> 'closed'"),
                 {"id": rule_id, "note": note})


def save(conn: Connection, rule: Rule, department: str, source: str, replay_hours: float) -> tuple[int, bool] | None:
    """Create or change a rule; None when it was stored as it is. A changed rule starts afresh: its open
    alerts close, its state goes, and it is judged over the recent stored readings."""
    row = conn.execute(UPSERT, _values(rule, department, source)).first()
    if row is None:
        return None
    if not row.created:
        close_open_alerts(conn, row.id, "rule changed")
        conn.execute(text("DELETE FROM events.rule_state WHERE rule_id = :id"), {"id": row.id})
    conn.execute(text("SELECT events.replay(:id, now() - make_interval(secs => :hours * 3600))"),
                 {"id": row.id, "hours": replay_hours})
    return row.id, row.created


def load_specs(conn: Connection, replay_hours: float) -> int:
    """At start-up: every rule of the spec files stored (several workers start at once: one loads, the
    others find it done); returns how many were new or changed."""
    conn.execute(text("LOCK TABLE events.rule IN SHARE ROW EXCLUSIVE MODE"))
    changed = 0
    for name, spec in spec_files():
        for rule in spec.rules:
            changed += save(conn, rule, spec.department, f"spec:{name}", replay_hours) is not None
    return changed


def rule_json(row) -> dict:
    return {"name": row.name, "department": row.department, "kind": row.kind, "severity": row.severity,
            "parameter": row.parameter, "things": row.things, "op": row.op, "limit": row.limit,
            "hysteresis": row.hysteresis, "readings": row.readings,
            "duration_s": row.duration.total_seconds(), "clear_s": row.clear.total_seconds(),
            "expected_s": None if row.expected is None else row.expected.total_seconds(),
            "enabled": row.enabled, "open_case": row.case_class is not None, "case_class": row.case_class,
            "source": row.source, "updated_at": row.updated_at}
