"""Alert rules, alerts (the `alerts` layer), webhook subscriptions (issue 20).

- `layers.alerts` is a layer like the others: its history, change log, version and feature-count triggers are
  those of 0003/0007/0012, so alerts have items, tiles, history and private access, and every alert that opens,
  worsens, is acknowledged or closes is a change in `twin.change` (the feed SSE and webhooks follow).
- `events.rule` holds the rules (loaded from events/rules/*.toml and written by /alerts/rules);
  `events.rule_state` the running state of each rule per Thing (consecutive offending readings, since when the
  readings are back within the limit, the open alert).
- Rules are judged as readings arrive, in the writing transaction: statement-level triggers with transition
  tables on `sensing.observation` (HTTP, MQTT, HJ 212) and on `layers.water_quality` (the file ETL and
  water-quality Datastreams) call `events.judge` for each (rule, reading), oldest first. So every path and every
  process raises alerts, an alert is committed with the reading that raised it, and nothing rescans tables.
  `events.replay` judges a new rule over the readings already stored.
- `events.webhook` is a subscription with its own cursor in the change log; `events.webhook_attempt` its
  delivery log; `events.publisher` the cursor of the MQTT publisher.

Revision ID: 0018
Revises: 0017
"""
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

LAYER = "alerts"
COLUMNS = [
    'fid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY',
    '"code" text NOT NULL',
    '"rule" text',
    '"rule_kind" text',
    '"severity" text',
    '"department" text',
    '"state" text',
    '"thing_id" integer',
    '"thing_name" text',
    '"station_code" text',
    '"datastream_id" integer',
    '"parameter" text',
    '"limit_value" double precision',
    '"first_at" timestamptz',
    '"first_value" double precision',
    '"last_at" timestamptz',
    '"last_value" double precision',
    '"worst_at" timestamptz',
    '"worst_value" double precision',
    '"readings" integer',
    '"acknowledged_by" text',
    '"acknowledged_at" timestamptz',
    '"note" text',
    '"closed_at" timestamptz',
    '"context" text',
    'geom geometry(Point, 4490)',  # a Thing without a location still raises its alert
    'version integer NOT NULL DEFAULT 1',
    'updated_at timestamptz NOT NULL DEFAULT twin.change_time()',
    'UNIQUE (code)',
]

TABLES = r"""
CREATE SCHEMA events;
CREATE SEQUENCE events.alert_code;
CREATE TABLE events.rule (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    department text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('threshold', 'water_class', 'permit', 'rate', 'silence')),
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    parameter text,            -- a water-quality field (nh3n) or an HJ 212 factor code (w01018); NULL: water_class
    things text[],             -- station codes, HJ 212 device numbers or Thing names; NULL: every Thing
    op text NOT NULL DEFAULT 'above' CHECK (op IN ('above', 'below')),
    "limit" double precision,  -- threshold and rate (per hour); permit and water_class read theirs from the Thing
    hysteresis double precision NOT NULL DEFAULT 0 CHECK (hysteresis >= 0),
    readings integer NOT NULL DEFAULT 1 CHECK (readings >= 1),
    duration interval NOT NULL DEFAULT '0',
    clear interval NOT NULL DEFAULT '0',
    expected interval,         -- silence: the reporting interval; silent after `readings` of them without one
    enabled boolean NOT NULL DEFAULT true,
    source text NOT NULL,      -- spec:<file> or api:<actor>
    updated_at timestamptz NOT NULL DEFAULT now(),
    case_class text            -- open_case: each alert of the rule opens a case of this class (cases.from_alerts)
);
CREATE TABLE events.rule_state (
    rule_id bigint NOT NULL REFERENCES events.rule ON DELETE CASCADE,
    thing_id bigint NOT NULL,
    last_at timestamptz,
    last_value double precision,
    offending integer NOT NULL DEFAULT 0,
    offending_since timestamptz,
    first_value double precision,
    worst_at timestamptz,
    worst_value double precision,
    within_since timestamptz,
    alert_fid bigint,
    PRIMARY KEY (rule_id, thing_id)
);
CREATE TABLE events.webhook (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id bigint NOT NULL,
    department text NOT NULL,
    url text NOT NULL,
    topics text[] NOT NULL,
    layers text[],
    secret text NOT NULL,
    cursor bigint NOT NULL,    -- the last change id delivered (or skipped as not for this subscription)
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    paused_reason text,
    failures integer NOT NULL DEFAULT 0,
    failing_since timestamptz,
    next_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_due_idx ON events.webhook (next_at) WHERE state = 'active';
CREATE TABLE events.webhook_attempt (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id bigint NOT NULL REFERENCES events.webhook ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    first_event bigint NOT NULL,
    last_event bigint NOT NULL,
    events integer NOT NULL,
    status integer,
    error text,
    seconds double precision NOT NULL
);
CREATE INDEX webhook_attempt_idx ON events.webhook_attempt (webhook_id, id);
CREATE TABLE events.publisher (  -- a channel one process at a time publishes the change log on (MQTT)
    name text PRIMARY KEY,
    cursor bigint NOT NULL
);
"""

JUDGE = r"""
-- An alert of a rule at a Thing (its point: the Thing's Location); returns its fid.
CREATE FUNCTION events.open_alert(ru events.rule, thing bigint, stream bigint, lim double precision,
                                  first_at timestamptz, first_value double precision, last_at timestamptz,
                                  last_value double precision, worst_at timestamptz, worst_value double precision,
                                  readings integer) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    INSERT INTO layers.alerts (code, rule, rule_kind, severity, department, state, thing_id, thing_name,
        station_code, datastream_id, parameter, limit_value, first_at, first_value, last_at, last_value,
        worst_at, worst_value, readings, geom)
    SELECT 'A' || lpad(nextval('events.alert_code')::text, 6, '0'), ru.name, ru.kind, ru.severity, ru.department,
           'open', thing, th.name, th.station_code, stream, coalesce(ru.parameter, 'water_class'), lim, first_at,
           first_value, last_at, last_value, worst_at, worst_value, readings,
           (SELECT ST_PointOnSurface(l.geom) FROM sensing.thing_location tl
            JOIN sensing.location l ON l.id = tl.location_id WHERE tl.thing_id = thing ORDER BY l.id LIMIT 1)
    FROM sensing.thing th WHERE th.id = thing
    RETURNING fid
$$;

-- One reading judged by one rule for one Thing: the rule's state moves forward, and an alert opens, follows
-- the offence or closes. `lim` is the limit that applies to this Thing. Readings of a time not after the
-- last judged one (late or repeated) leave the state as it is.
CREATE FUNCTION events.judge(ru events.rule, thing bigint, stream bigint, at timestamptz, value double precision,
                             quality text, lim double precision) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    st events.rule_state;
    measured double precision := value;
    offending boolean;
    within boolean;
    worse boolean;
BEGIN
    IF ru.kind = 'silence' THEN  -- any reading is a sign of life, and ends a silence
        INSERT INTO events.rule_state AS s (rule_id, thing_id, last_at) VALUES (ru.id, thing, at)
        ON CONFLICT (rule_id, thing_id) DO UPDATE SET last_at = greatest(s.last_at, excluded.last_at)
        RETURNING * INTO st;
        IF st.alert_fid IS NOT NULL THEN
            UPDATE layers.alerts SET state = 'closed', closed_at = at WHERE fid = st.alert_fid;
            UPDATE events.rule_state s SET alert_fid = NULL WHERE s.rule_id = ru.id AND s.thing_id = thing;
        END IF;
        RETURN;
    END IF;
    IF value IS NULL OR lim IS NULL OR quality IN ('维护', '停运') THEN
        RETURN;  -- maintenance and shutdown readings neither raise nor clear
    END IF;
    SELECT * INTO st FROM events.rule_state s WHERE s.rule_id = ru.id AND s.thing_id = thing FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO events.rule_state (rule_id, thing_id) VALUES (ru.id, thing) ON CONFLICT DO NOTHING;
        SELECT * INTO st FROM events.rule_state s WHERE s.rule_id = ru.id AND s.thing_id = thing FOR UPDATE;
    END IF;
    IF st.last_at IS NOT NULL AND at <= st.last_at THEN
        RETURN;
    END IF;
    IF ru.kind = 'rate' THEN  -- change per hour since the previous reading
        measured := CASE WHEN st.last_at IS NULL THEN NULL
                         ELSE (value - st.last_value) / (extract(epoch FROM at - st.last_at) / 3600) END;
    END IF;
    st.last_at := at;
    st.last_value := value;
    IF measured IS NOT NULL THEN
        IF ru.op = 'below' THEN
            offending := measured < lim;
            within := measured >= lim + ru.hysteresis;
            worse := measured < st.worst_value;
        ELSE
            offending := measured > lim;
            within := measured <= lim - ru.hysteresis;
            worse := measured > st.worst_value;
        END IF;
        IF offending THEN
            st.within_since := NULL;
            IF st.offending = 0 THEN
                st.offending_since := at;
                st.first_value := measured;
                st.worst_at := at;
                st.worst_value := measured;
            ELSIF worse THEN
                st.worst_at := at;
                st.worst_value := measured;
            END IF;
            st.offending := st.offending + 1;
            IF st.alert_fid IS NOT NULL THEN
                UPDATE layers.alerts SET last_at = at, last_value = measured, readings = readings + 1,
                    worst_at = st.worst_at, worst_value = st.worst_value
                WHERE fid = st.alert_fid;
            ELSIF st.offending >= ru.readings AND at - st.offending_since >= ru.duration THEN
                st.alert_fid := events.open_alert(ru, thing, stream, lim, st.offending_since, st.first_value, at,
                                                  measured, st.worst_at, st.worst_value, st.offending);
            END IF;
        ELSIF within THEN  -- back past the hysteresis band: the offence count starts again
            st.offending := 0;
            st.offending_since := NULL;
            st.worst_value := NULL;
            st.within_since := coalesce(st.within_since, at);
            IF st.alert_fid IS NOT NULL AND at - st.within_since >= ru.clear THEN
                UPDATE layers.alerts SET state = 'closed', closed_at = at WHERE fid = st.alert_fid;
                st.alert_fid := NULL;
            END IF;
        END IF;  -- inside the band: neither offending nor clear, nothing moves
    END IF;
    UPDATE events.rule_state s SET last_at = st.last_at, last_value = st.last_value, offending = st.offending,
        offending_since = st.offending_since, first_value = st.first_value, worst_at = st.worst_at,
        worst_value = st.worst_value, within_since = st.within_since, alert_fid = st.alert_fid
    WHERE s.rule_id = ru.id AND s.thing_id = thing;
END $$;

-- The rules that apply to a Datastream of a Thing, each with the limit it has there. Plain SQL, invoker's rights
-- and no SET: so the planner inlines it into the statement triggers' joins (they run as the owner) instead of
-- calling it once per reading.
CREATE FUNCTION events.rules_for(th sensing.thing, ds sensing.datastream)
RETURNS TABLE (ru events.rule, lim double precision)
LANGUAGE sql STABLE AS $$
    SELECT r, CASE r.kind WHEN 'permit' THEN (th.properties -> 'permit_limits' ->> r.parameter)::float8
                          WHEN 'silence' THEN extract(epoch FROM r.expected * r.readings)::float8
                          ELSE r."limit" END
    FROM events.rule r
    WHERE r.enabled AND r.kind <> 'water_class'
      AND r.parameter IN (ds.wq_field, ds.properties ->> 'hj212_code')
      AND (r.things IS NULL OR th.station_code = ANY (r.things) OR th.properties ->> 'hj212_mn' = ANY (r.things)
           OR th.name = ANY (r.things))
$$;

-- Observations stored (any path but water quality, which is the layer's): judged oldest first.
CREATE FUNCTION events.observations_stored() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.ru, m.lim, th.id AS thing, d.id AS stream, n.phenomenon_time, n.result, n.result_quality
             FROM new_rows n JOIN sensing.datastream d ON d.id = n.datastream_id
             JOIN sensing.thing th ON th.id = d.thing_id
             CROSS JOIN LATERAL events.rules_for(th, d) m
             WHERE m.lim IS NOT NULL AND n.result IS NOT NULL  -- what events.judge would pass over, left out here
             ORDER BY n.phenomenon_time, (m.ru).id, th.id LOOP
        PERFORM events.judge(r.ru,
                             r.thing, r.stream, r.phenomenon_time, r.result, r.result_quality, r.lim);
    END LOOP;
    RETURN NULL;
END $$;

-- Water-quality readings (rows of the layer): each parameter a rule names, and the row's class against the
-- station's target class.
CREATE FUNCTION events.water_quality_stored() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (
                 SELECT m.ru, m.lim, th.id AS thing, d.id AS stream, n.observed_at,
                        (to_jsonb(n) ->> d.wq_field)::float8 AS result, n.status
                 FROM new_rows n JOIN sensing.thing th ON th.station_code = n.station_code
                 JOIN sensing.datastream d ON d.thing_id = th.id AND d.wq_field IS NOT NULL
                 CROSS JOIN LATERAL events.rules_for(th, d) m
                 WHERE m.lim IS NOT NULL
                 UNION ALL
                 SELECT k, (th.properties ->> 'target_class')::float8, th.id, NULL::bigint, n.observed_at,
                        n.water_class::float8, n.status
                 FROM new_rows n JOIN sensing.thing th ON th.station_code = n.station_code
                 JOIN events.rule k ON k.enabled AND k.kind = 'water_class'
                      AND (k.things IS NULL OR th.station_code = ANY (k.things) OR th.name = ANY (k.things))
             ) judged ORDER BY observed_at, (ru).id, thing LOOP
        PERFORM events.judge(r.ru,
                             r.thing, r.stream, r.observed_at, r.result, r.status, r.lim);
    END LOOP;
    RETURN NULL;
END $$;

-- Things silent past their rules' deadlines get their alerts (called by each server's silence timer,
-- events/silence.py); returns how many opened. A Thing that never reported has no deadline.
CREATE FUNCTION events.open_silences() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    opened integer := 0;
BEGIN
    FOR r IN SELECT k AS ru, s.thing_id, s.last_at + k.expected * k.readings AS due
             FROM events.rule_state s JOIN events.rule k ON k.id = s.rule_id
             WHERE k.kind = 'silence' AND k.enabled AND s.alert_fid IS NULL
               AND s.last_at + k.expected * k.readings <= now()
             ORDER BY due FOR UPDATE OF s SKIP LOCKED LOOP
        UPDATE events.rule_state s SET alert_fid = events.open_alert(r.ru, r.thing_id, NULL,
                   extract(epoch FROM (r.ru).expected * (r.ru).readings)::float8, r.due, NULL, r.due, NULL, NULL,
                   NULL, 0)
        WHERE s.rule_id = (r.ru).id AND s.thing_id = r.thing_id;
        opened := opened + 1;
    END LOOP;
    RETURN opened;
END $$;

-- A new or changed rule judged over the readings stored since `since`, oldest first.
CREATE FUNCTION events.replay(which bigint, since timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ru events.rule;
    r record;
BEGIN
    SELECT * INTO ru FROM events.rule WHERE id = which;
    FOR r IN SELECT * FROM (
                 SELECT m.lim, th.id AS thing, d.id AS stream, o.phenomenon_time AS at, o.result, o.result_quality
                 FROM sensing.datastream d JOIN sensing.thing th ON th.id = d.thing_id
                 CROSS JOIN LATERAL events.rules_for(th, d) m
                 JOIN sensing.observation o ON o.datastream_id = d.id AND o.phenomenon_time >= since
                 WHERE (m.ru).id = which
                 UNION ALL
                 SELECT m.lim, th.id, d.id, w.observed_at, (to_jsonb(w) ->> d.wq_field)::float8, w.status
                 FROM sensing.datastream d JOIN sensing.thing th ON th.id = d.thing_id
                 CROSS JOIN LATERAL events.rules_for(th, d) m
                 JOIN layers.water_quality w ON w.station_code = th.station_code AND w.observed_at >= since
                 WHERE (m.ru).id = which AND d.wq_field IS NOT NULL
                 UNION ALL
                 SELECT (th.properties ->> 'target_class')::float8, th.id, NULL::bigint, w.observed_at,
                        w.water_class::float8, w.status
                 FROM sensing.thing th JOIN layers.water_quality w ON w.station_code = th.station_code
                 WHERE ru.kind = 'water_class' AND w.observed_at >= since
                   AND (ru.things IS NULL OR th.station_code = ANY (ru.things) OR th.name = ANY (ru.things))
             ) stored ORDER BY at, thing LOOP
        PERFORM events.judge(ru, r.thing, r.stream, r.at, r.result, r.result_quality, r.lim);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute(f"CREATE TABLE layers.{LAYER} (\n    " + ",\n    ".join(COLUMNS) + "\n)")
    op.execute(f"CREATE INDEX {LAYER}_geom_idx ON layers.{LAYER} USING gist (geom)")
    # at most one alert open (or acknowledged) per rule and Thing, whatever races
    op.execute(f"CREATE UNIQUE INDEX {LAYER}_open_idx ON layers.{LAYER} (rule, thing_id) WHERE state <> 'closed'")
    op.execute(f"CREATE TABLE history.{LAYER} (LIKE layers.{LAYER}, valid tstzrange NOT NULL)")
    op.execute(f"CREATE INDEX {LAYER}_fid_idx ON history.{LAYER} (fid, version)")
    op.execute(f"CREATE INDEX {LAYER}_valid_idx ON history.{LAYER} USING gist (valid, geom)")
    op.execute(f"CREATE TRIGGER begin_change BEFORE INSERT OR UPDATE OR DELETE ON layers.{LAYER} "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.begin_change()")
    op.execute(f"CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON layers.{LAYER} "
               "FOR EACH STATEMENT EXECUTE FUNCTION twin.refuse_truncate()")
    op.execute(f"CREATE TRIGGER stamp_insert BEFORE INSERT ON layers.{LAYER} FOR EACH ROW "
               "WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.updated_at IS DISTINCT FROM twin.change_time()) "
               "EXECUTE FUNCTION twin.stamp_insert()")
    op.execute(f"CREATE TRIGGER bump_version BEFORE UPDATE ON layers.{LAYER} "
               "FOR EACH ROW EXECUTE FUNCTION twin.bump_version()")
    for operation, tables in (("INSERT", "NEW TABLE AS new_rows"),
                              ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                              ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER record_{operation.lower()} AFTER {operation} ON layers.{LAYER} "
                   f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION twin.record_changes('spatial')")
    op.execute(f"INSERT INTO twin.feature_count VALUES ('{LAYER}', 0)")
    for operation, table in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows")):
        op.execute(f"CREATE TRIGGER count_features_{operation.lower()} AFTER {operation} ON layers.{LAYER} "
                   f"REFERENCING {table} FOR EACH STATEMENT EXECUTE FUNCTION twin.count_features()")
    op.execute(TABLES)
    op.execute(JUDGE)
    for operation in ("INSERT", "UPDATE"):
        op.execute(f"CREATE TRIGGER raise_alerts_{operation.lower()} AFTER {operation} ON sensing.observation "
                   "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                   "EXECUTE FUNCTION events.observations_stored()")
        op.execute(f"CREATE TRIGGER raise_alerts_{operation.lower()} AFTER {operation} ON layers.water_quality "
                   "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                   "EXECUTE FUNCTION events.water_quality_stored()")


def downgrade() -> None:
    for operation in ("insert", "update"):
        op.execute(f"DROP TRIGGER raise_alerts_{operation} ON sensing.observation")
        op.execute(f"DROP TRIGGER raise_alerts_{operation} ON layers.water_quality")
    op.execute("DROP SCHEMA events CASCADE")
    op.execute(f"DELETE FROM twin.feature_count WHERE layer = '{LAYER}'")
    op.execute(f"DELETE FROM twin.change WHERE layer = '{LAYER}'")
    op.execute(f"DROP TABLE history.{LAYER}")
    op.execute(f"DROP TABLE layers.{LAYER}")
