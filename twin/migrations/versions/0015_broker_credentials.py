"""MQTT broker credentials derived from department keys (issue 19). (Placeholder until its change lands.)

Revision ID: 0015
Revises: 0014
"""

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
