"""Money as integer minor units plus an ISO 4217 currency: 150 000 ₽ is Money(15_000_000, "RUB").

Floats never touch money. Arithmetic across currencies is an error, not a conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

_MINOR_DIGITS = {"RUB": 2, "USD": 2, "EUR": 2, "KZT": 2, "BYN": 2, "JPY": 0}


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str = "RUB"

    def __post_init__(self) -> None:
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise TypeError("Money.amount_minor must be an int of minor units")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"Not an ISO 4217 currency code: {self.currency!r}")

    @classmethod
    def of(cls, major: str | int | Decimal, currency: str = "RUB") -> Money:
        """Money.of("1500.50") is 1500 roubles 50 kopecks; exact, never via float."""
        digits = _MINOR_DIGITS.get(currency, 2)
        quantized = Decimal(str(major)).scaleb(digits)
        if quantized != quantized.to_integral_value():
            raise ValueError(f"{major} has more than {digits} decimal places for {currency}")
        return cls(int(quantized), currency)

    @property
    def major(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-_MINOR_DIGITS.get(self.currency, 2))

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"Cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __str__(self) -> str:
        return f"{self.major} {self.currency}"
