"""Events the routing context publishes (payloads carry ids as strings and the item reference,
so the context that submitted the item can map it back without asking routing)."""

from __future__ import annotations

ITEM_WAITING = "routing.item.waiting"
ITEM_OFFERED = "routing.item.offered"
# `at_submit` true: made by the item's submit and returned in its result, so the submitter
# has recorded it already (its own consumer may skip the event).
ITEM_ASSIGNED = "routing.item.assigned"
ITEM_UNASSIGNED = "routing.item.unassigned"  # reclaimed from its owner; routed again
ITEM_COMPLETED = "routing.item.completed"
ITEM_CANCELLED = "routing.item.cancelled"
ITEM_EXPIRED = "routing.item.expired"  # still unowned at its rule's TTL
# A rule's time step or nobody-available policy acted on an unowned item; `notify` lists who
# should hear of it ("manager", "customer"): the notifications context sends the messages.
ITEM_ESCALATED = "routing.item.escalated"
RULE_SET_ACTIVATED = "routing.rule_set.activated"
OFFER_ACCEPTED = "routing.offer.accepted"
OFFER_DECLINED = "routing.offer.declined"
OFFER_TIMED_OUT = "routing.offer.timed_out"
OFFER_RESCINDED = "routing.offer.rescinded"
AGENT_CREATED = "routing.agent.created"
AGENT_UPDATED = "routing.agent.updated"
AGENT_STATUS_CHANGED = "routing.agent.status_changed"
QUEUE_CHANGED = "routing.queue.changed"

ALL = (
    ITEM_WAITING,
    ITEM_OFFERED,
    ITEM_ASSIGNED,
    ITEM_UNASSIGNED,
    ITEM_COMPLETED,
    ITEM_CANCELLED,
    ITEM_EXPIRED,
    ITEM_ESCALATED,
    RULE_SET_ACTIVATED,
    OFFER_ACCEPTED,
    OFFER_DECLINED,
    OFFER_TIMED_OUT,
    OFFER_RESCINDED,
    AGENT_CREATED,
    AGENT_UPDATED,
    AGENT_STATUS_CHANGED,
    QUEUE_CHANGED,
)
