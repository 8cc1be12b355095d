"""Privileges: only the owner of the change log may serialise writers.

Migration 0003 serialised writers with `pg_advisory_xact_lock(1953982830)`, taken by
`twin.claim_change_log()`, a function every role could call; and advisory locks are open to
every role besides. So a read-only analyst could hold the writers' lock in an idle transaction
and stall every write of the district. Now:

- the writers' lock is an EXCLUSIVE lock on the empty table `twin.writer_lock`. LOCK TABLE in any
  mode but ACCESS SHARE needs write privileges on the table (ACCESS SHARE needs SELECT) and no role
  but its owner has any; ACCESS SHARE would not conflict anyway;
- `twin.claim_change_log()` is no longer executable by PUBLIC: its owner (the app's role, which
  ran the migrations) calls it; superusers bypass the check;
- the trigger `begin_change` calls it with the owner's rights (SECURITY DEFINER), so a write by
  any role allowed to write a layer is still serialised and recorded. Trigger functions need no
  EXECUTE privilege of whoever fires them.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CLAIM = r"""
CREATE OR REPLACE FUNCTION twin.claim_change_log() RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    stamp text := current_setting('twin.change_time', true);
BEGIN
    IF coalesce(stamp, '') = '' THEN
        %s
        stamp := clock_timestamp()::text;
        PERFORM set_config('twin.change_time', stamp, true);
    END IF;
    RETURN stamp::timestamptz;
END $$
"""
TABLE_LOCK = "LOCK TABLE twin.writer_lock IN EXCLUSIVE MODE;  -- held until commit"
ADVISORY_LOCK = "PERFORM pg_advisory_xact_lock(1953982830);  -- 'twin' in ASCII; held until commit"


def upgrade() -> None:
    op.execute("CREATE TABLE twin.writer_lock ()")
    op.execute("REVOKE ALL ON twin.writer_lock FROM PUBLIC")
    op.execute(CLAIM % TABLE_LOCK)
    op.execute("REVOKE EXECUTE ON FUNCTION twin.claim_change_log() FROM PUBLIC")
    # search_path pinned: a definer-rights function must not resolve names through the caller's path
    op.execute("ALTER FUNCTION twin.begin_change() SECURITY DEFINER SET search_path = pg_catalog, pg_temp")


def downgrade() -> None:
    op.execute("ALTER FUNCTION twin.begin_change() SECURITY INVOKER RESET search_path")
    op.execute("GRANT EXECUTE ON FUNCTION twin.claim_change_log() TO PUBLIC")
    op.execute(CLAIM % ADVISORY_LOCK)
    op.execute("DROP TABLE twin.writer_lock")
