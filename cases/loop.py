"""The loop's states and steps: 上报 → 立案 | 不予立案 → 派遣 → 处置 → 反馈 → 核查 → 结案, with 退回 (a department
sends a case that is not its own back to dispatch) and a failed 核查 (back to 处置). Which role may take which
step, and the deadline each step starts (an hours column of the responsibility table, cases.routing)."""

from typing import NamedTuple

REPORTED, REGISTERED, REJECTED, DISPATCHED, HANDLING, FED_BACK, VERIFIED, CLOSED = (
    "上报", "立案", "不予立案", "派遣", "处置", "反馈", "核查", "结案")
STATES = (REPORTED, REGISTERED, REJECTED, DISPATCHED, HANDLING, FED_BACK, VERIFIED, CLOSED)
FINAL = (REJECTED, CLOSED)
OPEN = tuple(s for s in STATES if s not in FINAL)
# the open cases as a constant SQL condition (layers.cases), so the planner can use the partial index on them
OPEN_SQL = "state NOT IN ('结案', '不予立案')"
HANDLERS = ("department", "contractor")  # act only on their own department's cases
CONTACT_READERS = ("dispatcher", "supervisor")  # may read a reporter's contact


class Step(NamedTuple):
    action: str
    zh: str
    sources: tuple[str, ...]
    target: str
    roles: tuple[str, ...]
    deadline: str | None  # the responsibility column giving the hours of the stage it starts; None: keep the due time
    needs_note: bool = False  # a reason or result, in words


STEPS = {s.action: s for s in (
    Step("register", "立案", (REPORTED,), REGISTERED, ("dispatcher",), "dispatch_h"),
    Step("reject", "不予立案", (REPORTED,), REJECTED, ("dispatcher",), None, True),
    Step("dispatch", "派遣", (REGISTERED,), DISPATCHED, ("dispatcher",), "handle_h"),
    Step("accept", "处置", (DISPATCHED,), HANDLING, HANDLERS, None),
    Step("return", "退回", (DISPATCHED, HANDLING), REGISTERED, HANDLERS, "dispatch_h", True),
    Step("feedback", "反馈", (HANDLING,), FED_BACK, HANDLERS, "verify_h", True),
    Step("verify", "核查通过", (FED_BACK,), VERIFIED, ("supervisor",), "close_h"),
    Step("rework", "核查不通过", (FED_BACK,), HANDLING, ("supervisor",), "handle_h", True),
    Step("close", "结案", (VERIFIED,), CLOSED, ("dispatcher",), None),
)}
REPORT_DEADLINE = "register_h"


def allowed_from(state: str) -> list[str]:
    """The steps a case in `state` may take next."""
    return [s.action for s in STEPS.values() if state in s.sources]
