"""Alembic revision scripts, shipped inside the package so `allot migrate` works when installed.

Run them through `allot migrate` (or `allot.kernel.migrations`); a developer's `alembic` command
works too, via the repository's alembic.ini.
"""

from __future__ import annotations

from sqlalchemy import MetaData


def target_metadata() -> MetaData:
    """Every table the code defines: the kernel's and each installed context's."""
    # Imported here, not at module level: the model modules register themselves on import.
    import allot.kernel.delivery.models
    import allot.kernel.events.models
    import allot.kernel.idempotency
    import allot.kernel.timers  # noqa: F401
    from allot.app import load_contexts
    from allot.kernel.db.base import Base

    load_contexts()
    return Base.metadata
