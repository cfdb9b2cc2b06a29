"""Email over SMTP (aiosmtplib: asyncio-native, kept up to date, STARTTLS and implicit TLS).

Every send of one delivery is the same message: its Message-ID is derived from the delivery's
key and its Date is when the delivery was enqueued. So should a message go out twice (the
sender died between the server's acceptance and the mark, docs/deliveries.md), both copies
carry the same Message-ID; mail systems and clients that drop duplicates by Message-ID do, and
anyone can tell the two apart from two different messages. `X-Allot-Delivery-Key` names the
delivery for whoever traces it in a mail log.

One connection per message: deliveries are notifications, not bulk mail.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from allot.kernel.config import Settings
from allot.kernel.delivery.channels import (
    OutgoingDelivery,
    PermanentFailure,
    TemporaryFailure,
)

DELIVERY_KEY_HEADER = "X-Allot-Delivery-Key"


def message_id_for(key: str, domain: str) -> str:
    """The Message-ID of every send of the delivery with this key. A digest, not the key: a key
    may hold characters a Message-ID cannot, and should not be readable by the recipient."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{digest}.allot@{domain}>"


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: str = "",
        security: str = "starttls",
        timeout_seconds: float = 30.0,
    ) -> None:
        if "@" not in sender:
            raise ValueError("the email channel needs a From address (ALLOT_SMTP_FROM)")
        self.host = host
        self.port = port
        self.sender = sender
        self.domain = sender.rpartition("@")[2].strip(">").strip() or "allot.invalid"
        self._username = username or None
        self._password = password or None
        self.security = security
        self.timeout_seconds = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            security=settings.smtp_security,
            timeout_seconds=settings.smtp_timeout_seconds,
        )

    def build(self, delivery: OutgoingDelivery) -> EmailMessage:
        payload = delivery.payload
        message = EmailMessage()
        try:
            message["From"] = self.sender
            message["To"] = delivery.recipient
            message["Subject"] = payload["subject"]
            message["Date"] = format_datetime(delivery.created_at)
            message["Message-ID"] = message_id_for(delivery.key, self.domain)
            message[DELIVERY_KEY_HEADER] = delivery.key
            message.set_content(payload["text"])
            if isinstance(payload.get("html"), str):
                message.add_alternative(payload["html"], subtype="html")
        except (ValueError, TypeError) as exc:  # a newline in a header, an address it refuses
            raise PermanentFailure(f"cannot build the message: {exc}") from None
        return message

    async def send(self, delivery: OutgoingDelivery) -> str:
        message = self.build(delivery)
        try:
            await aiosmtplib.send(
                message,
                sender=self.sender,
                recipients=[delivery.recipient],
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                timeout=self.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused(exc.recipients, delivery.recipient) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise _refused([exc], delivery.recipient) from None
        except aiosmtplib.SMTPDataError as exc:
            # The content was refused (554 spam, 552 too large): 5xx is final for this message.
            failure = PermanentFailure if exc.code >= 500 else TemporaryFailure
            raise failure(_reply("DATA refused", exc, delivery.recipient)) from None
        except aiosmtplib.SMTPResponseException as exc:
            # Login refused, sender refused, HELO refused, service not available: the server or
            # our configuration, not this message; fixing them lets it go.
            raise TemporaryFailure(_reply("server refused", exc, delivery.recipient)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Connection refused or lost, timeouts, STARTTLS unsupported. A timeout after the
            # message was sent may hide an acceptance: the retry is the duplicate the log
            # documents (same Message-ID).
            text = _scrub(str(exc) or type(exc).__name__, delivery.recipient)
            raise TemporaryFailure(f"{type(exc).__name__}: {text}") from None
        return str(message["Message-ID"])

    async def close(self) -> None:
        return None


def _scrub(text: str, recipient: str) -> str:
    # Servers often quote the address ("<ivan@example.ru>: Recipient address rejected"); the
    # error is kept in `last_error` and logged, so the address is left out.
    return text.replace(recipient, "<recipient>") if recipient else text


def _reply(what: str, exc: Any, recipient: str) -> str:
    return f"{what}: {exc.code} {_scrub(str(exc.message), recipient)}"


def _refused(recipients: list[Any], recipient: str) -> Exception:
    text = "; ".join(_reply("recipient refused", r, recipient) for r in recipients)
    if recipients and all(r.code >= 500 for r in recipients):
        return PermanentFailure(text)
    return TemporaryFailure(text)
