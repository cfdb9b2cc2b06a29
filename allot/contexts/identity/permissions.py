"""Permissions identity declares (admin holds every permission implicitly)."""

from __future__ import annotations

from allot.kernel.auth import define_permission

USERS_READ = define_permission("users:read", "See every user account and team", roles=("manager",))
USERS_MANAGE = define_permission(
    "users:manage", "Create, change, deactivate and delete users; manage teams"
)
TOKENS_MANAGE_OWN = define_permission(
    "tokens:manage_own",
    "Issue and revoke one's own API tokens",
    roles=("manager", "analyst", "operator", "partner", "provider"),
)
