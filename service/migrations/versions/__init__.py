"""Revision scripts, one per schema change, oldest first (Alembic skips this file)."""
