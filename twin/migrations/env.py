from alembic import context
from sqlalchemy import create_engine, pool

from twin.db import _sqlalchemy_url

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(_sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, version_table_schema="public", transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
