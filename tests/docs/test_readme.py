"""The README's configuration table lists every setting, so documentation cannot drift."""

from pathlib import Path

from allot.kernel.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented():
    text = README.read_text()
    missing = [
        f"ALLOT_{name.upper()}"
        for name in Settings.model_fields
        if f"`ALLOT_{name.upper()}`" not in text
    ]
    assert missing == []


def test_the_readme_names_the_two_commands_ci_uses():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev demo" in text
    assert "./dev test" in text
    assert "./dev test" in ci
