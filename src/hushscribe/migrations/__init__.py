"""Alembic environment and revisions of hushscribe's one database (run by ``hushscribe.schema``)."""
