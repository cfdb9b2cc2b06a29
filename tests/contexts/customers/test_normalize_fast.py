"""The fast path for common Russian mobile shapes gives exactly what phonenumbers gives."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from allot.contexts.customers.normalize import DEFAULT_REGION, fast_ru_mobile, normalize_phone
from allot.kernel.errors import ValidationFailed


def slow(text: str) -> str | None:
    """What normalize_phone answered before the fast path: phonenumbers alone."""
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


separators = st.sampled_from(["", " ", "-"])
digits = st.text(alphabet="0123456789", min_size=1, max_size=4)


@st.composite
def typed_phones(draw: st.DrawFn) -> str:
    """Numbers as people type them: a prefix, an area code (maybe in brackets), digit groups."""
    prefix = draw(st.sampled_from(["", "+7", "8", "7", "+8", "+", "+77", "07"]))
    area = draw(st.text(alphabet="0123456789", min_size=2, max_size=4))
    if draw(st.booleans()):
        area = "(" + area + ")"
    groups = draw(st.lists(digits, min_size=1, max_size=5))
    parts = [prefix, draw(separators), area]
    for group in groups:
        parts += [draw(separators), group]
    return "".join(parts)


@settings(max_examples=3000)
@given(typed_phones())
@example("8 912 345-67-89")
@example("+7 (912) 345-67-89")
@example("9123456789")
@example("79123456789")
@example("+7 930 000 00 00")  # 93x: only some ranges are mobile
@example("+7 930 005 00 00")
def test_fast_path_agrees_with_phonenumbers_on_typed_shapes(text: str) -> None:
    fast = fast_ru_mobile(text)
    if fast is not None:
        assert fast == slow(text)


@settings(max_examples=3000)
@given(st.text(alphabet="0123456789 +-()().\u00a0", max_size=20))
def test_fast_path_agrees_with_phonenumbers_on_any_punctuation(text: str) -> None:
    fast = fast_ru_mobile(text)
    if fast is not None:
        assert fast == slow(text)


@settings(max_examples=1000)
@given(
    st.from_regex(r"9[0-24-9][0-9]{8}", fullmatch=True),
    st.sampled_from(["{}", "8{}", "+7{}", "7{}", "8 {}", "+7 {}"]),
    st.booleans(),
)
def test_common_mobile_shapes_take_the_fast_path(national: str, shape: str, spaced: bool) -> None:
    body = (
        f"({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}" if spaced else national
    )
    text = shape.format(body)
    assert fast_ru_mobile(text) == "+7" + national == slow(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8 912 345-67-89", "+79123456789"),
        ("+7 (912) 345-67-89", "+79123456789"),
        ("9123456789", "+79123456789"),
        ("8 495 123-45-67", "+74951234567"),  # a landline: the slow path
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_normalize_phone_results(text: str, expected: str) -> None:
    assert normalize_phone(text) == expected


@pytest.mark.parametrize("text", ["+7 930 000 00 00", "8 912 345-67-8", "12345"])
def test_invalid_numbers_stay_invalid(text: str) -> None:
    with pytest.raises(ValidationFailed):
        normalize_phone(text)
