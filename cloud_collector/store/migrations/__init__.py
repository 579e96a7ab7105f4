"""Versioned schema migrations of the collector store.

Each file ``NNNN_name.sql`` is one version, applied once, in order, and recorded in
``schema_migrations``. Files are written in the SQL that SQLite and PostgreSQL share
(``BLOB`` and ``INTEGER PRIMARY KEY AUTOINCREMENT`` are translated for PostgreSQL by its
store); a migration is never edited once it has landed: a change is a new file.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["Migration", "migrations"]


class Migration:
    __slots__ = ("version", "name", "sql")

    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version, self.name, self.sql = version, name, sql


def migrations() -> list[Migration]:
    """Every migration shipped with this collector, in version order."""
    out: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        name = entry.name
        if not name.endswith(".sql") or not name[:4].isdigit():
            continue
        out.append(Migration(int(name[:4]), name[5:-4], entry.read_text()))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return out
