"""Customers: cards (a person or a company) with their contacts, external ids, consent and
sources; deduplicating intake, manual merge, erasure, and a timeline per customer.

The public interface (the only names other contexts may use):

- `intake(session, source=..., name=..., phone=..., email=..., external_id=..., kind=...,
  consent=..., field_prefix=...) -> CustomerRef`: the card holding the same normalized phone,
  e-mail or (source, external id), or a new one; safe under concurrent intakes;
- `get_customer`, `get_customers` (batch, constant queries) -> `CustomerInfo`;
- `normalize_phone` (E.164, region RU), `normalize_email`;
- `add_timeline_entry(session, customer_id, kind=..., title=<msgid>, data=...)`;
- `merge(session, into_id, from_id)`, `erase_customer(session, customer_id)`;
- events: `customers.customer.created|updated|merged|erased` (see `events`).
"""

from __future__ import annotations

from typing import Any

from allot.kernel.auth import define_permission
from allot.kernel.i18n import N_
from allot.kernel.web.nav import NavItem, register_nav

from . import events
from .bulk import BulkIntake, ConcurrentChange, Person, intake_many
from .intake import intake
from .lifecycle import erase_customer, merge
from .normalize import normalize_email, normalize_phone
from .schemas import CustomerInfo, CustomerRef
from .service import get_customer, get_customers
from .timeline import add_timeline_entry

CUSTOMERS_READ = define_permission(
    "customers:read", "See customer cards and their timeline", ("manager", "analyst", "operator")
)
CUSTOMERS_WRITE = define_permission(
    "customers:write", "Create and edit customer cards", ("manager", "operator")
)
CUSTOMERS_MERGE = define_permission(
    "customers:merge", "Merge two cards of the same customer", ("manager",)
)
CUSTOMERS_ERASE = define_permission(
    "customers:erase", "Erase a customer's personal data (irreversible)"
)


def install(app: Any) -> None:
    register_nav(
        NavItem(
            key="customers",
            label=N_("Customers"),
            href="/customers",
            permission=CUSTOMERS_READ,
            order=40,
        )
    )


__all__ = [
    "CUSTOMERS_ERASE",
    "CUSTOMERS_MERGE",
    "CUSTOMERS_READ",
    "CUSTOMERS_WRITE",
    "BulkIntake",
    "ConcurrentChange",
    "CustomerInfo",
    "CustomerRef",
    "Person",
    "add_timeline_entry",
    "erase_customer",
    "events",
    "get_customer",
    "get_customers",
    "install",
    "intake",
    "intake_many",
    "merge",
    "normalize_email",
    "normalize_phone",
]
