"""The permissions the leads context declares (imported by the package and by its modules)."""

from __future__ import annotations

from allot.kernel.auth import define_permission

LEADS_READ = define_permission(
    "leads:read",
    "See leads (operators only those assigned to them)",
    roles=("manager", "analyst", "operator"),
)
LEADS_WRITE = define_permission(
    "leads:write",
    "Change leads: status, notes, details (operators only their own)",
    roles=("manager", "operator"),
)
LEADS_CREATE = define_permission(
    "leads:create",
    "Take new leads in (web form, API integrations)",
    roles=("manager", "operator"),
)
LEADS_CONFIGURE = define_permission(
    "leads:configure",
    "Configure the lead pipeline and first-response SLAs",
    roles=("manager",),
)
