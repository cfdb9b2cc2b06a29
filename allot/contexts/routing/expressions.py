"""Member expressions: which agents belong to a queue, as a condition on agent attributes.

Written in rule-engine's grammar (a maintained, sandboxed expression language; no eval):
`"loans" in skills and region == "msk"`, `"ru" in languages or "kazan" in teams`.
Unknown attributes are null rather than errors, so an agent without `region` simply doesn't match.
A bad expression is refused on save with the position of the offending token.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import rule_engine

from allot.kernel.errors import ValidationFailed

_CONTEXT = rule_engine.Context(default_value=None)


@lru_cache(maxsize=512)
def compile_expression(expression: str) -> rule_engine.Rule | None:
    """None for an empty expression (matches nobody by attributes; teams may still match)."""
    if not expression.strip():
        return None
    return rule_engine.Rule(expression, context=_CONTEXT)


def expression_error(expression: str) -> str | None:
    """Why the expression cannot be used (with the position of the offending token), or None."""
    try:
        compile_expression(expression)
    except rule_engine.RuleSyntaxError as exc:
        token = getattr(exc, "token", None)
        position = getattr(token, "lexpos", None)
        where = ""
        if token is not None and isinstance(position, int):
            where = f" at position {position + 1} near {token.value!r}"
        return f"Syntax error{where}"
    except rule_engine.EngineError as exc:
        return str(exc.message)
    return None


def validate_expression(expression: str, field: str = "body.member_expression") -> None:
    message = expression_error(expression)
    if message is not None:
        code = "expression_syntax" if message.startswith("Syntax error") else "expression_invalid"
        raise ValidationFailed.on(field, message, code)


def matches(expression: str, attributes: dict[str, Any]) -> bool:
    rule = compile_expression(expression)
    if rule is None:
        return False
    try:
        return bool(rule.matches(attributes))
    except rule_engine.EngineError:
        return False  # a type mismatch on one agent's attributes excludes that agent only
