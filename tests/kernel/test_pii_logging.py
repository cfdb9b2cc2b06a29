"""Personal data never reaches a log line (152-FZ / GDPR), and machine data survives masking."""

from __future__ import annotations

import contextlib
import json
import logging
import sys

import pytest

from allot.kernel import pii
from allot.kernel.logging import configure_logging, get_logger

PHONE = "+7 912 345-67-89"
EMAIL = "ivan.petrov@example.ru"
NAME = "Иван Петров"
MOMENT = "2026-01-05 09:30:00+03:00"
ISO_MOMENT = "2026-01-05T09:30:00.123456Z"
# All-digit groups: exactly what the phone pattern would swallow if UUIDs were not protected.
REQUEST_ID = "12345678-1234-7234-8234-123456789012"


def log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    # Point the writers back at the real stderr: capsys closes the stream they captured into.
    with contextlib.redirect_stderr(sys.__stderr__):
        configure_logging("INFO", json=True)


def capture_json_logs() -> None:
    # Called inside the test: capsys swaps sys.stderr per test phase, and the log writers bind
    # the stream they were configured with.
    configure_logging("INFO", json=True)


def test_structlog_lines_carry_no_phone_email_or_name(capsys):
    capture_json_logs()
    get_logger("test").info(
        f"callback requested by {EMAIL} on {PHONE} at {MOMENT} for {REQUEST_ID}",
        name=NAME,
        customer_name=NAME,
        recipients=[EMAIL, PHONE],
        lead={"contact": {"phone": PHONE}, "note": f"call {PHONE}"},
        when=ISO_MOMENT,
        lead_id=REQUEST_ID,
    )
    output = capsys.readouterr().err
    (line,) = log_lines(output)
    # The line's own timestamp may contain any digits ("…20.691243Z"): look everywhere else.
    rest = json.dumps({k: v for k, v in line.items() if k != "timestamp"}, ensure_ascii=False)
    assert line["timestamp"] in output
    for secret in (PHONE, EMAIL, NAME, "912", "ivan.petrov", "Петров"):
        assert secret not in rest
        assert secret not in output.replace(line["timestamp"], "")
    assert MOMENT in line["event"]
    assert REQUEST_ID in line["event"]
    assert line["when"] == ISO_MOMENT
    assert line["lead_id"] == REQUEST_ID
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_stdlib_log_records_are_masked_too(capsys):
    capture_json_logs()
    logging.getLogger("uvicorn.error").warning("failed to notify %s / %s", EMAIL, PHONE)
    output = capsys.readouterr().err
    assert EMAIL not in output
    assert PHONE not in output
    (line,) = log_lines(output)
    assert "failed to notify" in line["event"]


@pytest.mark.parametrize(
    "phone", ["+7 (912) 345-67-89", "89123456789", "8 912 345 67 89", "+44 20 7946 0958"]
)
def test_phone_formats_are_masked(phone):
    assert pii.mask_text(f"call {phone} now") == f"call ***{phone[-2:]} now"


@pytest.mark.parametrize(
    "machine_text",
    [
        "2026-01-05 09:30",
        "2026-01-05T09:30:00+03:00",
        "2026-01-05 09:30:00,123",
        "0190a8e4-5b2c-7d3e-8f4a-123456789012",
        "order 12345 of 2026-01-05",
    ],
)
def test_dates_ids_and_short_numbers_are_left_alone(machine_text):
    assert pii.mask_text(machine_text) == machine_text


def test_a_phone_next_to_a_date_is_still_masked():
    assert pii.mask_text("2026-01-05: +7 912 345-67-89") == "2026-01-05: ***89"


def test_personal_keys_are_masked_whole_whatever_their_prefix():
    masked = pii.mask_mapping(
        {"name": NAME, "client_email": EMAIL, "contact_phones": [PHONE], "queue": "sales"}
    )
    assert masked == {
        "name": "И***",
        "client_email": "i***@example.ru",
        "contact_phones": ["+***"],
        "queue": "sales",
    }


def test_logging_still_works_after_a_captured_test():
    get_logger("test").info("after capture")  # would raise on a closed stream
