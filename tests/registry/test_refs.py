import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkscore.errors import InvalidModelNameError
from sparkscore.registry import ModelRef, parse_ref
from sparkscore.registry.refs import NAME_PATTERN, validate_name


@pytest.mark.parametrize("ref, expected", [
    ("churn", ModelRef("churn")),
    ("churn/3", ModelRef("churn", version=3)),
    ("churn@prod", ModelRef("churn", alias="prod")),
    ("Churn.v2-final_x", ModelRef("Churn.v2-final_x")),
    ("a" * 128, ModelRef("a" * 128)),
    ("m/123456789", ModelRef("m", version=123456789)),
    ("a..", ModelRef("a..")),
    ("churn@prod#2026-11-01T00:00:00Z", ModelRef("churn", alias="prod", at="2026-11-01T00:00:00Z")),
    ("churn@prod#2026-11-01T01:30:00.25+01:30", ModelRef("churn", alias="prod", at="2026-11-01T01:30:00.25+01:30")),
])
def test_valid_refs_parse_and_round_trip(ref, expected):
    parsed = parse_ref(ref)
    assert parsed == expected
    assert str(parsed) == ref


@pytest.mark.parametrize("ref", [
    "", "../x", "..", ".", "x/../../etc", "/abs/path", "/etc/passwd", "C:\\models\\x", "x\\y",
    "x'; DROP TABLE t; --", "x' OR '1'='1", "churn;", "1churn", "_churn", "-churn", "churn\n", "churn ",
    " churn", "churn/0", "churn/03", "churn/-1", "churn/1.5", "churn/", "churn@", "@prod", "churn/3@prod",
    "churn@prod/3", "churn@pr od", "churn@../x", "ch\u00fcrn", "churn\u0660", "churn/\u0663", "\u202echurn",
    "a" * 129, "churn\x00", "churn/1e3", "churn//3",
    "churn@prod#2026-11-01T00:00:00", "churn@prod#2026-11-01", "churn@prod#", "churn#2026-11-01T00:00:00Z",
    "churn/3#2026-11-01T00:00:00Z", "churn@prod#2026-02-30T00:00:00Z", "churn@prod#2026-11-01T00:00:00Z#x",
    "churn@prod#2026-11-01T00:00:00Z\n", "churn@prod#2026-11-01 00:00:00Z", "churn@prod#\u0662026-11-01T00:00:00Z",
])
def test_junk_refs_are_rejected(ref):
    with pytest.raises(InvalidModelNameError) as info:
        parse_ref(ref)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"churn", ["churn"]])
def test_non_string_refs_are_rejected(value):
    with pytest.raises(InvalidModelNameError):
        parse_ref(value)


def test_time_pins_name_an_instant_whatever_the_offset():
    assert parse_ref("m@prod#2026-11-01T01:30:00+01:30").at_time == parse_ref("m@prod#2026-11-01T00:00:00Z").at_time
    assert parse_ref("m@prod").at_time is None
    with pytest.raises(InvalidModelNameError, match="needs an alias"):
        ModelRef("m", at="2026-11-01T00:00:00Z")


def test_error_message_is_bounded_for_huge_input():
    with pytest.raises(InvalidModelNameError) as info:
        validate_name("x" * 10_000 + "/")
    assert len(str(info.value)) < 200


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_ref_accepts_exactly_the_grammar(text):
    """Arbitrary text either parses to parts that each match the name grammar, or raises cleanly."""
    import re

    try:
        ref = parse_ref(text)
    except InvalidModelNameError:
        name, _, rest = text.partition("/")
        if "/" in text:
            assert not (re.fullmatch(NAME_PATTERN, name) and re.fullmatch(r"[1-9][0-9]{0,17}", rest))
        else:
            name, sep, alias = text.partition("@")
            assert not (re.fullmatch(NAME_PATTERN, name) and (not sep or re.fullmatch(NAME_PATTERN, alias)))
        return
    assert re.fullmatch(NAME_PATTERN, ref.name)
    assert ref.alias is None or re.fullmatch(NAME_PATTERN, ref.alias)
    assert ref.version is None or ref.version >= 1
    assert str(ref) == text


@settings(max_examples=50, deadline=None)
@given(st.from_regex(NAME_PATTERN, fullmatch=True), st.integers(1, 10**12),
       st.from_regex(NAME_PATTERN, fullmatch=True))
def test_generated_valid_refs_round_trip(name, version, alias):
    assert parse_ref(f"{name}/{version}") == ModelRef(name, version=version)
    assert parse_ref(f"{name}@{alias}") == ModelRef(name, alias=alias)
    assert parse_ref(name) == ModelRef(name)
