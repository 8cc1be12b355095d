"""MQTT broker credentials derived from department keys (issue 19).

- `twin.broker_credential`: a key's password hash in mosquitto's password_file format
  (`$7$<iterations>$<salt>$<PBKDF2-SHA512>`), made when the key is created (the only time its secret is
  known). Keys made before this migration have none and cannot use MQTT: make a new key.
- `twin.broker_acl()`: the broker's access rules as rows (username, access, topic), read by `twin.broker`
  to write mosquitto's acl_file. The username is the key's prefix. A key may publish to
  `v1.1/Datastreams(<id>)/Observations` of its department's Datastreams (an admin key to all) and subscribe
  to the Observations topics of the Datastreams it may read: all of them, unless the water_quality or
  monitoring_stations layer is switched private (twin.layer_access) and the key may not read it.
- A statement trigger on `sensing.datastream` and on `twin.layer_access` notifies channel `twin_broker`,
  so a server that manages the broker rewrites its ACL when Datastreams come and go.

Revision ID: 0015
Revises: 0014
"""
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE twin.broker_credential (
    key_id integer PRIMARY KEY REFERENCES twin.api_key ON DELETE CASCADE,
    password_hash text NOT NULL
);

CREATE FUNCTION twin.broker_acl() RETURNS TABLE (username text, access text, topic text)
LANGUAGE sql STABLE AS $$
WITH keys AS (
    SELECT k.prefix, k.department, k.layers, k.is_admin
    FROM twin.api_key k JOIN twin.broker_credential c ON c.key_id = k.id
    WHERE k.revoked_at IS NULL
), closed AS (  -- layers switched private whose switch hides Datastreams
    SELECT layer FROM twin.layer_access WHERE private AND layer IN ('water_quality', 'monitoring_stations')
), streams AS (
    SELECT d.id, d.department, d.wq_field IS NOT NULL AS water_quality, t.station_code IS NOT NULL AS station
    FROM sensing.datastream d JOIN sensing.thing t ON t.id = d.thing_id
)
SELECT k.prefix, 'readwrite', 'v1.1/+/Observations' FROM keys k WHERE k.is_admin
UNION ALL
SELECT k.prefix, 'write', 'v1.1/Datastreams(' || s.id || ')/Observations'
FROM keys k JOIN streams s ON s.department = k.department WHERE NOT k.is_admin
UNION ALL
SELECT k.prefix, 'read', 'v1.1/+/Observations' FROM keys k
WHERE NOT k.is_admin AND NOT EXISTS (SELECT FROM closed)
UNION ALL
SELECT k.prefix, 'read', 'v1.1/Datastreams(' || s.id || ')/Observations'
FROM keys k CROSS JOIN streams s
WHERE NOT k.is_admin AND EXISTS (SELECT FROM closed)
  AND (k.department = s.department
       OR NOT ((s.water_quality AND 'water_quality' IN (SELECT layer FROM closed)
                AND NOT 'water_quality' = ANY (k.layers))
               OR (s.station AND 'monitoring_stations' IN (SELECT layer FROM closed)
                   AND NOT 'monitoring_stations' = ANY (k.layers))))
ORDER BY 1, 2, 3
$$;

CREATE FUNCTION twin.broker_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('twin_broker', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER broker_acl_datastreams AFTER INSERT OR DELETE OR UPDATE OF department, thing_id
    ON sensing.datastream FOR EACH STATEMENT EXECUTE FUNCTION twin.broker_changed();
CREATE TRIGGER broker_acl_layer_access AFTER INSERT OR DELETE OR UPDATE
    ON twin.layer_access FOR EACH STATEMENT EXECUTE FUNCTION twin.broker_changed();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TRIGGER broker_acl_layer_access ON twin.layer_access")
    op.execute("DROP TRIGGER broker_acl_datastreams ON sensing.datastream")
    op.execute("DROP FUNCTION twin.broker_changed()")
    op.execute("DROP FUNCTION twin.broker_acl()")
    op.execute("DROP TABLE twin.broker_credential")
