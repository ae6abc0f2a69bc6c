"""The gateway's Alembic migrations (`msmt-gateway migrate`); shipped in the package."""
