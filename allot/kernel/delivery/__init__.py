"""Deliveries: effects outside Allot (email, Telegram), sent at least once, recorded in a log.

A consumer that decides to send something calls, in ITS unit of work (the one holding its inbox
row):

    new = await enqueue(session, "email", key=f"leads.assigned:{lead_id}:email:{user_id}",
                        recipient=address, payload={"subject": ..., "text": ...})

The row commits with the decision or not at all; a repeated key is reported (False) and never
sent twice once the log shows it delivered. The `DeliveryRunner` (started by `allot serve` and
`allot worker`, kernel/runtime.py) sends it after the commit. docs/deliveries.md has the
guarantee per channel, the settings and the CLI (`allot deliveries ...`).
"""

from allot.kernel.delivery.channels import (
    Channel,
    OutgoingDelivery,
    PermanentFailure,
    TemporaryFailure,
    channels_from_settings,
)
from allot.kernel.delivery.models import Delivery
from allot.kernel.delivery.runner import DeliveryRunner
from allot.kernel.delivery.store import enqueue, erase_recipient

__all__ = [
    "Channel",
    "Delivery",
    "DeliveryRunner",
    "OutgoingDelivery",
    "PermanentFailure",
    "TemporaryFailure",
    "channels_from_settings",
    "enqueue",
    "erase_recipient",
]
