"""The city-management case loop (issue 21): the `cases` layer, its private tables, routing, key roles and scopes.

`layers.cases` is a layer like the others (its public fields only), with the change tracking of 0003/0007, the
as-of index of 0011 and the kept count of 0012, so every step of a case is a version in `history.cases` and a
row of the change feed. Beside it, in schema `cases`:

- `reporter`: the reporter's contact and address, private (read through /cases with a key of the right role);
- `step`: one row per step of the loop (from and to state, actor, when the state left was entered and its
  deadline), for the timeline; `tally`: per case, the sums the statistics need, kept by each step;
- `photo`: photos by content hash (the files live under $TWIN_DATA_DIR/case-photos);
- `idempotency`: the Idempotency-Key of each report, so a report sent twice makes one case;
- `responsibility` (权责清单): case class prefix × area → department and the hours allowed per stage, loaded
  from cases/data/responsibility.csv at start-up when that file changed (`routing_source` keeps its hash);
- `alert_case`: the case each alert asking for one (its rule's open_case) opened, at most one per alert, or why
  none could be; `alert_follower` the change id up to which the alerts have been read (cases.from_alerts).

API keys gain a role and a scope (grids, streets, case/component class prefixes); empty means unrestricted.

Revision ID: 0016
Revises: 0015
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COLUMNS = [
    'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
    '"case_no" text NOT NULL',
    '"class_code" text',
    '"class_name" text',
    '"kind" text',
    '"component_code" text',
    '"description" text',
    '"source" text',
    '"state" text',
    '"grid_code" text',
    '"street_code" text',
    '"department" text',
    '"reported_at" timestamptz',
    '"stage_due" timestamptz',
    '"closed_at" timestamptz',
    '"reason" text',
    '"duplicate_of" text',
    '"rework" integer',
    'geom geometry(Point, 4490) NOT NULL',
    'version integer NOT NULL DEFAULT 1',
    'updated_at timestamptz NOT NULL DEFAULT twin.change_time()',
    'UNIQUE (case_no)',
]

TABLES = r"""
CREATE SCHEMA cases;
CREATE TABLE cases.reporter (
    case_fid bigint PRIMARY KEY,
    contact jsonb NOT NULL DEFAULT '{}',
    client text NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reporter_client_idx ON cases.reporter (client, reported_at);
CREATE TABLE cases.step (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_fid bigint NOT NULL,
    action text NOT NULL,
    from_state text,
    to_state text NOT NULL,
    actor text NOT NULL,
    role text,
    department text,
    entered_at timestamptz,
    due_at timestamptz,
    at timestamptz NOT NULL,
    note text
);
CREATE INDEX step_case_idx ON cases.step (case_fid, id);
CREATE INDEX step_at_idx ON cases.step (at);
-- per case, what the statistics add up (kept by each step, so they never scan the stage log): the handlers'
-- results (反馈) and how many were on time, the verifications (核查) and how many failed, and per state left
-- (in cases.loop.OPEN order) the seconds spent in it and how many times it was left
CREATE TABLE cases.tally (
    case_fid bigint PRIMARY KEY,
    results integer NOT NULL DEFAULT 0,
    results_on_time integer NOT NULL DEFAULT 0,
    verifications integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    spent_s double precision[] NOT NULL DEFAULT '{0,0,0,0,0,0}',
    times_left integer[] NOT NULL DEFAULT '{0,0,0,0,0,0}'
);
CREATE TABLE cases.photo (
    case_fid bigint NOT NULL,
    sha256 text NOT NULL,
    state text NOT NULL,
    content_type text NOT NULL,
    bytes integer NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    added_by text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_fid, sha256)
);
CREATE TABLE cases.idempotency (
    key text PRIMARY KEY,
    request_sha256 text NOT NULL,
    case_fid bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE cases.responsibility (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    class_prefix text NOT NULL,
    area text NOT NULL,
    department text NOT NULL,
    register_h real NOT NULL,
    dispatch_h real NOT NULL,
    handle_h real NOT NULL,
    verify_h real NOT NULL,
    close_h real NOT NULL,
    UNIQUE (class_prefix, area)
);
CREATE SEQUENCE cases.case_no_seq;
CREATE TABLE cases.alert_case (
    alert_fid bigint PRIMARY KEY,
    alert_code text NOT NULL,
    case_fid bigint UNIQUE,    -- NULL: no case could be opened, for `problem`
    problem text,
    CHECK ((case_fid IS NULL) <> (problem IS NULL))
);
CREATE TABLE cases.alert_follower (
    cursor bigint NOT NULL
);
INSERT INTO cases.alert_follower VALUES (0);
CREATE TABLE cases.routing_source (
    sha256 text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
"""

KEYS = ("ALTER TABLE twin.api_key "
        "ADD COLUMN role text CHECK (role IN ('reporter', 'supervisor', 'dispatcher', 'department', 'contractor')), "
        "ADD COLUMN scope_grids text[] NOT NULL DEFAULT '{}', "
        "ADD COLUMN scope_streets text[] NOT NULL DEFAULT '{}', "
        "ADD COLUMN scope_classes text[] NOT NULL DEFAULT '{}'")


def upgrade() -> None:
    op.execute("CREATE TABLE layers.cases (\n    " + ",\n    ".join(COLUMNS) + "\n)")
    op.execute("CREATE INDEX cases_geom_idx ON layers.cases USING gist (geom)")
    op.execute("CREATE INDEX cases_updated_at_idx ON layers.cases (updated_at)")
    # a department's queue by deadline; Open311 and statistics by report time
    op.execute("CREATE INDEX cases_queue_idx ON layers.cases (department, stage_due, fid) "
               "WHERE state NOT IN ('结案', '不予立案')")  # open cases only: cases.loop.OPEN_SQL
    op.execute("CREATE INDEX cases_reported_idx ON layers.cases (reported_at)")
    op.execute("CREATE INDEX cases_class_reported_idx ON layers.cases (class_code, reported_at)")
    op.execute("CREATE TABLE history.cases (LIKE layers.cases, valid tstzrange NOT NULL)")
    op.execute("CREATE INDEX cases_fid_idx ON history.cases (fid, version)")
    op.execute("CREATE INDEX cases_valid_idx ON history.cases USING gist (valid, geom)")
    op.execute("CREATE TRIGGER begin_change BEFORE INSERT OR UPDATE OR DELETE ON layers.cases "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.begin_change()")
    op.execute("CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON layers.cases "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.refuse_truncate()")
    op.execute("CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.cases FOR EACH ROW "
               "WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.updated_at IS DISTINCT FROM twin.change_time()) "
               "EXECUTE FUNCTION twin.stamp_insert()")
    op.execute("CREATE TRIGGER bump_version BEFORE UPDATE ON layers.cases "
               "FOR EACH ROW EXECUTE FUNCTION twin.bump_version()")
    for operation, tables in (("INSERT", "NEW TABLE AS new_rows"),
                              ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                              ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER record_{operation.lower()} AFTER {operation} ON layers.cases "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.record_changes('spatial')")
    op.execute("INSERT INTO twin.feature_count VALUES ('cases', 0)")
    for operation, table in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER count_features_{operation.lower()} AFTER {operation} ON layers.cases "
                   f"REFERENCING {table} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_features()")
    op.execute(TABLES)
    op.execute(KEYS)


def downgrade() -> None:
    op.execute("ALTER TABLE twin.api_key DROP COLUMN role, DROP COLUMN scope_grids, DROP COLUMN scope_streets, "
               "DROP COLUMN scope_classes")
    op.execute("DROP SCHEMA cases CASCADE")
    op.execute("DELETE FROM twin.feature_count WHERE layer = 'cases'")
    op.execute("DELETE FROM twin.change WHERE layer = 'cases'")
    op.execute("DROP TABLE history.cases")
    op.execute("DROP TABLE layers.cases")
