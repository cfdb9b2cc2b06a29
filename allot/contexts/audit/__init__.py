"""Audit: the append-only trail of every change (who, when, which object, before/after, request).

The public interface other contexts use:

- `await record(session, action=..., object_type=..., object_id=..., before=..., after=...,
  personal_fields=("email", "phone"), summary=...)` in the same transaction as the change;
- `await record_many(session, [AuditEntryIn(...), ...])` for bulk work (imports);
- `await pseudonymise_subject(session, object_type=..., object_id=...)` when a person's data
  must be erased (152-FZ / GDPR): their values become pseudonyms, the trail stays whole.
"""

from __future__ import annotations

from typing import Any

from allot.kernel.auth import define_permission
from allot.kernel.i18n import N_
from allot.kernel.web.nav import NavItem, register_nav

from .service import AuditEntryIn, pseudonymise_subject, record, record_many, set_pseudonym_key

AUDIT_READ = define_permission("audit:read", "Read the audit log", roles=("manager", "analyst"))


def install(app: Any) -> None:
    """Wire the context into an app: the pseudonym key and the navigation entry."""
    set_pseudonym_key(app.state.secret_key)
    register_nav(NavItem(key="audit", label=N_("Audit log"), href="/audit", permission=AUDIT_READ,
                         order=900))  # fmt: skip


__all__ = [
    "AUDIT_READ",
    "AuditEntryIn",
    "install",
    "pseudonymise_subject",
    "record",
    "record_many",
]
