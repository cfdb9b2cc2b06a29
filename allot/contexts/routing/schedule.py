"""Working hours: is an agent on shift at a moment, and when does that next change.

Schedule shape (all optional; an empty schedule means always on shift):
{"timezone": "Europe/Moscow",
 "weekly": {"mon": [["09:00", "13:00"], ["14:00", "18:00"]], "tue": [...], ...},
 "holidays": ["2026-01-01", "2026-01-02"]}
Split shifts are several intervals a day; a day missing from `weekly` is a day off.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from allot.kernel.errors import ValidationFailed

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _parse_time(value: str, field: str) -> time:
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError) as exc:
        raise ValidationFailed.on(field, f"{value!r} is not HH:MM", "time_format") from exc


def validate_schedule(schedule: dict[str, Any], field: str = "body.schedule") -> None:
    if not schedule:
        return
    try:
        ZoneInfo(str(schedule.get("timezone", "Europe/Moscow")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed.on(f"{field}.timezone", "Unknown time zone", "timezone") from exc
    weekly = schedule.get("weekly", {})
    if not isinstance(weekly, dict):
        raise ValidationFailed.on(f"{field}.weekly", "Must be an object of days", "type")
    for day, intervals in weekly.items():
        if day not in DAYS:
            raise ValidationFailed.on(f"{field}.weekly.{day}", f"Day must be one of {DAYS}")
        for n, interval in enumerate(intervals):
            where = f"{field}.weekly.{day}.{n}"
            if not isinstance(interval, list | tuple) or len(interval) != 2:
                raise ValidationFailed.on(where, "An interval is [start, end]", "interval")
            start, end = _parse_time(interval[0], where), _parse_time(interval[1], where)
            if end <= start and interval[1] != "24:00":
                raise ValidationFailed.on(where, "End must be after start", "interval")
    for n, holiday in enumerate(schedule.get("holidays", [])):
        try:
            date.fromisoformat(holiday)
        except (TypeError, ValueError) as exc:
            raise ValidationFailed.on(f"{field}.holidays.{n}", "Not a date") from exc


def _intervals_on(
    schedule: dict[str, Any], day: date, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    if day.isoformat() in set(schedule.get("holidays", [])):
        return []
    result = []
    for start, end in schedule.get("weekly", {}).get(DAYS[day.weekday()], []):
        begin = datetime.combine(day, _parse_time(start, "schedule"), zone)
        if end == "24:00":
            finish = datetime.combine(day + timedelta(days=1), time(0, 0), zone)
        else:
            finish = datetime.combine(day, _parse_time(end, "schedule"), zone)
        result.append((begin, finish))
    return result


def on_shift(schedule: dict[str, Any], at: datetime) -> bool:
    if not schedule or not schedule.get("weekly"):
        return True
    zone = ZoneInfo(str(schedule.get("timezone", "Europe/Moscow")))
    local = at.astimezone(zone)
    return any(begin <= local < end for begin, end in _intervals_on(schedule, local.date(), zone))


def next_change(schedule: dict[str, Any], at: datetime) -> datetime | None:
    """The next instant after `at` when on_shift flips (looking two weeks ahead)."""
    if not schedule or not schedule.get("weekly"):
        return None
    zone = ZoneInfo(str(schedule.get("timezone", "Europe/Moscow")))
    local = at.astimezone(zone)
    for offset in range(15):
        day = local.date() + timedelta(days=offset)
        for begin, end in _intervals_on(schedule, day, zone):
            for boundary in (begin, end):
                if boundary > local:
                    return boundary.astimezone(at.tzinfo)
    return None
