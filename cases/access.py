"""Who may see and do what in the loop. A key's role (twin.auth.ROLES) says which steps it may take
(cases.loop.STEPS); its scope (grids, streets, class prefixes) which cases it sees at all; a department's and a
contractor's key see only the cases of their own department. An admin key may do everything."""

from cases import loop
from twin.auth import Principal
from twin.errors import ApiError

LOOP_ROLES = ("supervisor", "dispatcher", "department", "contractor")


def require_loop_role(principal: Principal) -> None:
    if not principal.is_admin and principal.role not in LOOP_ROLES:
        raise ApiError(403, "no_loop_role", f"The key of {principal.department} has no role in the case loop "
                       f"(role {principal.role}); the loop needs one of: {', '.join(LOOP_ROLES)}. Public reports go to "
                       "POST /cases or /open311/v2/requests.json.")


def sees(principal: Principal, case) -> bool:
    if principal.is_admin:
        return True
    if not principal.covers(case.grid_code, case.street_code, case.class_code):
        return False
    return principal.role not in loop.HANDLERS or case.department == principal.department


def require_sight(principal: Principal, case) -> None:
    require_loop_role(principal)
    if not sees(principal, case):
        raise ApiError(403, "outside_scope", f"Case {case.case_no} (grid {case.grid_code}, class {case.class_code}, "
                       f"department {case.department}) is outside the scope of the key of {principal.department} "
                       f"({principal.scope_text()}).", where="path.case_no")


def require_step(principal: Principal, case, step: loop.Step) -> None:
    require_sight(principal, case)
    if not principal.is_admin and principal.role not in step.roles:
        raise ApiError(403, "wrong_role", f"Step {step.action} ({step.zh}) is taken by a key of role "
                       f"{' or '.join(step.roles)}; this key's role is {principal.role}.", where="body.action")


def reads_contact(principal: Principal) -> bool:
    return principal.is_admin or principal.role in loop.CONTACT_READERS


def scope_filter(principal: Principal) -> tuple[str, dict]:
    """SQL conditions on layers.cases (alias c) keeping the cases the key sees, and their parameters."""
    if principal.is_admin:
        return "true", {}
    parts, bound = [], {}
    if principal.grids or principal.streets:
        parts.append("(c.grid_code = ANY(:scope_grids) OR c.street_code = ANY(:scope_streets))")
        bound |= {"scope_grids": list(principal.grids), "scope_streets": list(principal.streets)}
    if principal.classes:
        parts.append("EXISTS (SELECT 1 FROM unnest(CAST(:scope_classes AS text[])) p "
                     "WHERE starts_with(c.class_code, p))")
        bound["scope_classes"] = list(principal.classes)
    if principal.role in loop.HANDLERS:
        parts.append("c.department = :own_department")
        bound["own_department"] = principal.department
    return " AND ".join(parts) or "true", bound
