"""Observations on the event stream (issue 20): readings stored in `sensing.observation` (HJ 212, MQTT and HTTP
readings of Datastreams that are not water quality, which are the `water_quality` layer's changes already) get
an event id in the change log's own order, so SSE, webhooks and MQTT resume them by id like every other event.

- `events.observation_event`: one row per stored (or replaced) observation, its `event_id` drawn from the
  change log's identity sequence after taking the change log's writer lock (`twin.claim_change_log()`, 0005),
  held until commit:
  event ids and change ids together are allocated in commit order, so "after id N" is exact across both.
- Statement triggers on `sensing.observation` (named to run after `raise_alerts_*`, which may take the same
  lock through the alerts it writes) fill it and notify `twin_change` at commit, as the change log does.
- Rows older than the event stream keeps them (events/feed.py) are deleted by the servers.

Revision ID: 0020
Revises: 0019
"""
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

TABLE = """
CREATE TABLE events.observation_event (
    event_id bigint PRIMARY KEY,
    observation_id bigint NOT NULL,
    datastream_id bigint NOT NULL,
    phenomenon_time timestamptz NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX observation_event_logged_brin ON events.observation_event USING brin (logged_at);
"""
LOG = """
CREATE FUNCTION events.log_observations() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids regclass := pg_get_serial_sequence('twin.change', 'change_id')::regclass;
BEGIN
    PERFORM twin.claim_change_log();  -- the change log's writer lock (0005), held until commit: ids in commit order
    INSERT INTO events.observation_event (event_id, observation_id, datastream_id, phenomenon_time)
    SELECT nextval(ids), n.id, n.datastream_id, n.phenomenon_time
    FROM (SELECT id, datastream_id, phenomenon_time FROM new_rows ORDER BY phenomenon_time, id) n;
    IF FOUND THEN
        PERFORM pg_notify('twin_change', 'observations');  -- delivered at commit
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(TABLE)
    op.execute(LOG)
    for operation in ("INSERT", "UPDATE"):
        op.execute(f"CREATE TRIGGER stream_observations_{operation.lower()} AFTER {operation} ON sensing.observation "
                   "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events.log_observations()")


def downgrade() -> None:
    for operation in ("insert", "update"):
        op.execute(f"DROP TRIGGER stream_observations_{operation} ON sensing.observation")
    op.execute("DROP FUNCTION events.log_observations()")
    op.execute("DROP TABLE events.observation_event")
