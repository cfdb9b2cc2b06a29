"""Events customers publishes. Payloads carry ids and facts, never names, phones or e-mails
(a consumer that needs a customer's details asks `customers.get_customer`)."""

from __future__ import annotations

CUSTOMER_CREATED = "customers.customer.created"  # {customer_id, kind, source}
CUSTOMER_UPDATED = "customers.customer.updated"  # {customer_id, changed}
CUSTOMER_MERGED = "customers.customer.merged"  # {into_id, from_id}
CUSTOMER_ERASED = "customers.customer.erased"  # {customer_id}

CUSTOMER_AGGREGATE = "customers.customer"
