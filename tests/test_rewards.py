import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgym.data.schema import RatingScale
from recgym.rewards import (
    FOUR_STEP_TAGS,
    RATE_ONLY_TAGS,
    RankingReward,
    RatingReward,
    parse_completion,
)

FIVE = RatingScale(1, 5)
TEN = RatingScale(1, 10)


def tagged(rating: str, **override) -> str:
    parts = {"analyze user": "likes spicy food", "analyze item": "a Thai place", "match": "good fit", "rate": rating}
    parts.update(override)
    return "".join(f"<{t}>{parts[t]}</{t}>" for t in FOUR_STEP_TAGS)


@pytest.mark.parametrize(
    "completion, target, fmt, acc, parsed",
    [
        (tagged("4"), 5, 0.5, 0.75, 4.0),  # well-formed, off by one
        (tagged("5"), 5, 0.5, 1.0, 5.0),  # exact
        (tagged("3.5"), 4, 0.5, 0.875, 3.5),  # decimals allowed
        (tagged(" 2 "), 1, 0.5, 0.75, 2.0),  # whitespace around the number
        (tagged("1"), 5, 0.5, 0.0, 1.0),  # maximal error
        (tagged("7"), 5, -0.5, 1.0, 5.0),  # off the scale: format fails, prediction clipped to 5
        (tagged("-3"), 1, -0.5, 1.0, 1.0),  # negative: clipped to 1
        (tagged("four"), 4, -0.5, 0.0, None),  # unparseable rating
        (tagged("nan"), 4, -0.5, 0.0, None),
        (tagged("inf"), 4, -0.5, 0.0, None),
        (tagged("1e309"), 4, -0.5, 0.0, None),
        (tagged("٥"), 5, -0.5, 0.0, None),  # Arabic-Indic digit is not an ASCII rating
        (tagged("4", match="  "), 4, -0.5, 1.0, 4.0),  # empty step: format fails, accuracy still counts
        ("<rate>3</rate>", 5, -0.5, 0.5, 3.0),  # missing reasoning steps
        ("The rating is 4.", 4, -0.5, 0.0, None),  # no tags at all
        ("", 3, -0.5, 0.0, None),
        (tagged("4") + "<rate>2</rate>", 4, -0.5, 1.0, 4.0),  # repeated tag
        (
            "<analyze item>b</analyze item><analyze user>a</analyze user><match>c</match><rate>4</rate>",
            4, -0.5, 1.0, 4.0,
        ),  # out of order
        ("<analyze user>a<rate>2</rate></analyze user><analyze item>b</analyze item><match>c</match>", 4, -0.5, 0.5, 2.0),
    ],
)
def test_reward_table(completion, target, fmt, acc, parsed):
    b = RatingReward()(completion, target, FIVE)
    assert b.format == fmt
    assert b.accuracy == pytest.approx(acc)
    assert b.total == pytest.approx(fmt + acc)
    assert b.parsed_rating == parsed
    assert b.abs_error == (None if parsed is None else pytest.approx(abs(target - parsed)))


def test_ten_point_scale_uses_its_range():
    b = RatingReward()(tagged("8"), 10, TEN)
    assert b.format == 0.5 and b.accuracy == pytest.approx(1 - 2 / 9)


def test_reczero_public_preset():
    b = RatingReward.reczero_public()(tagged("3"), 4, FIVE)
    assert (b.format, b.accuracy) == (1.0, 0.5)
    bad = RatingReward.reczero_public()("no tags", 4, FIVE)
    assert bad.format == -1.0 and bad.accuracy == 0.0


def test_weights_are_parameters():
    b = RatingReward(format_reward=0.2, format_penalty=-1.0, accuracy_weight=2.0, max_error=2.0)(tagged("3"), 4, FIVE)
    assert b.format == 0.2 and b.accuracy == pytest.approx(2.0 * 0.5)


def test_rate_only_tags():
    assert parse_completion("<rate>4</rate>", FIVE, RATE_ONLY_TAGS).format_ok
    assert not parse_completion("<rate>4</rate>", FIVE, FOUR_STEP_TAGS).format_ok


@pytest.mark.parametrize("completion, where", [
    (tagged("3") + "<p>Enjoy!</p>", "after </rate>"),
    ("Sure! " + tagged("3"), "before <analyze user>"),
    (tagged("3").replace("</match>", "</match> so: "), "between </match> and <rate>"),
])
def test_text_outside_the_tags_breaks_the_format(completion, where):
    # the prompt says "Write nothing after </rate>"; a GRPO run that collapsed wrote HTML there
    parsed = parse_completion(completion, FIVE)
    assert not parsed.format_ok and where in parsed.reason
    assert parsed.rating == 3.0  # the rating still parses, so accuracy still counts
    assert RatingReward()(completion, 3, FIVE).format == -0.5


def test_whitespace_around_and_between_the_tags_is_allowed():
    spaced = "\n " + tagged("4").replace("><", ">\n<") + "\n"
    assert parse_completion(spaced, FIVE).format_ok


def test_parse_reports_reason():
    assert "exactly once" in parse_completion("<rate>1</rate>", FIVE).reason
    assert "off the scale" in parse_completion(tagged("9"), FIVE).reason
    assert parse_completion(tagged("2"), FIVE).reason == ""


tag_soup = st.lists(
    st.sampled_from(
        ["<analyze user>", "</analyze user>", "<analyze item>", "</analyze item>", "<match>", "</match>",
         "<rate>", "</rate>", "4", "nan", "inf", "1e309", "-2", "٥", "3.5", " ", "x"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), tag_soup, st.text(min_size=1).map(lambda s: tagged(s))))
def test_reward_never_raises_and_stays_in_range(text):
    b = RatingReward()(text, 3.0, FIVE)
    assert b.format in (0.5, -0.5)
    assert 0.0 <= b.accuracy <= 1.0
    assert -0.5 <= b.total <= 1.5 and math.isfinite(b.total)
    assert (b.parsed_rating is None) == (b.abs_error is None)
    if b.parsed_rating is not None:
        assert FIVE.low <= b.parsed_rating <= FIVE.high
    if b.format_ok:
        assert b.parsed_rating is not None


def test_huge_and_nested_input():
    huge = "<analyze user>" * 100_000 + tagged("3") * 1000
    b = RatingReward()(huge, 3, FIVE)
    assert b.format == -0.5 and b.parsed_rating == 3.0
    nested = "<rate><rate>4</rate></rate>"
    assert RatingReward()(nested, 4, FIVE).format == -0.5


def test_non_string_completion_is_a_failed_format_not_an_exception():
    assert parse_completion(None, FIVE).format_ok is False  # type: ignore[arg-type]


@pytest.mark.parametrize("max_error", [0, -4.0, math.inf, True, "4"])
def test_max_error_is_a_positive_number_or_none(max_error):
    """-4 turned accuracy upside down without a word; 0 raised ZeroDivisionError at the first step."""
    with pytest.raises(ValueError, match="max_error must be a number > 0 or None"):
        RatingReward(max_error=max_error)


@pytest.mark.parametrize(("kind", "field", "value", "error", "words"), [
    (RatingReward, "accuracy_weight", math.nan, ValueError, "a finite number >= 0, got nan"),
    (RatingReward, "accuracy_weight", -1.0, ValueError, "a finite number >= 0, got -1.0"),
    (RatingReward, "format_reward", "x", TypeError, "a finite number, got 'x'"),
    (RatingReward, "format_penalty", math.inf, ValueError, "a finite number, got inf"),
    (RatingReward, "format_reward", True, TypeError, "a finite number, got True"),
    (RankingReward, "ndcg_weight", math.nan, ValueError, "a finite number >= 0, got nan"),
    (RankingReward, "format_penalty", None, TypeError, "a finite number, got None"),
])
def test_reward_weights_and_format_values_are_finite_numbers(kind, field, value, error, words):
    """``accuracy_weight=nan`` made every reward NaN (a run that learns nothing); ``format_reward="x"``
    failed only at the first step, on str + float."""
    with pytest.raises(error, match=rf"^{kind.__name__}\.{field} must be {words}$"):
        kind(**{field: value})


@pytest.mark.parametrize("kind", [RatingReward, RankingReward])
def test_reward_tags_are_checked_as_the_templates_are(kind):
    with pytest.raises(TypeError, match=rf"{kind.__name__}.tags must be a tuple of tag names"):
        kind(tags="rate")
    with pytest.raises(ValueError, match=rf"{kind.__name__}.tags needs at least one tag"):
        kind(tags=[])
    assert kind(tags=["think", "answer"]).tags == ("think", "answer")
