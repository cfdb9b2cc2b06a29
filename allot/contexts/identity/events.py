"""Events identity publishes. Payloads carry ids and facts, never e-mails, names or secrets
(consumers that need a person's details ask `identity.get_user`)."""

from __future__ import annotations

USER_CREATED = "identity.user.created"  # {user_id, roles, team_ids}
USER_UPDATED = "identity.user.updated"  # {user_id, changed, roles, team_ids, locale}
USER_DEACTIVATED = "identity.user.deactivated"  # {user_id}
USER_REACTIVATED = "identity.user.reactivated"  # {user_id}
USER_DELETED = "identity.user.deleted"  # {user_id}
TOKEN_ISSUED = "identity.token.issued"  # noqa: S105 (an event name)  {token_id, user_id, scopes}
TOKEN_REVOKED = "identity.token.revoked"  # noqa: S105  {token_id, user_id}
TEAM_CREATED = "identity.team.created"  # {team_id}

USER_AGGREGATE = "identity.user"
TOKEN_AGGREGATE = "identity.token"  # noqa: S105
TEAM_AGGREGATE = "identity.team"
