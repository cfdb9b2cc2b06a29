"""Navigation entries contributed by contexts; the shell shows those the user may open."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # stable id, also used to mark the active entry
    label: str  # msgid; translated when rendered
    href: str
    permission: str | None = None  # None: any signed-in user
    order: int = 100


_items: dict[str, NavItem] = {}


def register_nav(item: NavItem) -> None:
    _items[item.key] = item


def nav_items() -> list[NavItem]:
    return sorted(_items.values(), key=lambda i: (i.order, i.key))
