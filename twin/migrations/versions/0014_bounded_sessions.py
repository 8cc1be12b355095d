"""Bounded sessions for people and the app's roles (issue 24).

Until now every session could hold a transaction open for ever: one forgotten notebook transaction kept a
snapshot that stopped VACUUM on the history tables and the change log while observations streamed in.

- analyst roles (those `twin db analyst-role` made: read-only by default, able to log in) get a statement
  timeout, an idle-in-transaction timeout, an idle-session timeout and a connection limit: the settings
  TWIN_ANALYST_* (twin.analyst.SessionBounds). Roles made later get them from the command itself;
- the app's own role (the one migrating) gets an idle-in-transaction timeout, TWIN_APP_IDLE_IN_TRANSACTION_TIMEOUT_S:
  a transaction it leaves idle is a leak. No statement timeout at the role: the server bounds its statements per
  session (TWIN_STATEMENT_TIMEOUT_MS), and the ETL's loads and the migrations run as long as they must.

Settings are role defaults: a session started after this migration takes them; running ones keep theirs.

Revision ID: 0014
Revises: 0013
"""
from alembic import op

from twin.analyst import SessionBounds, analyst_roles, bound_role
from twin.settings import get_settings

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BEFORE = SessionBounds(0, 0, 0, 20)  # what `twin db analyst-role` gave before this migration


def upgrade() -> None:
    settings = get_settings()
    op.execute(f"ALTER ROLE CURRENT_USER SET idle_in_transaction_session_timeout = "
               f"'{int(settings.app_idle_in_transaction_timeout_s)}s'")
    bind = op.get_bind()
    for role in analyst_roles(bind):
        bound_role(bind, role, SessionBounds.from_settings(settings))


def downgrade() -> None:
    op.execute("ALTER ROLE CURRENT_USER RESET idle_in_transaction_session_timeout")
    bind = op.get_bind()
    for role in analyst_roles(bind):
        bound_role(bind, role, BEFORE)
