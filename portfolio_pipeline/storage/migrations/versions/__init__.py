"""Alembic revisions of the platform schema (one file per revision, numbered)."""
