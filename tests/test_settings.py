"""DefenseSettings checks every field: a wrong type or value is a ValueError with a sentence that names the field,
says what was expected and what came; never another exception type, never a bool taken for a number."""

import json
import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from diffdefense.settings import PRESETS, DefenseSettings, parse_overrides

NAMES = [f.name for f in fields(DefenseSettings)]
# Values of no field's type: whatever comes, it must be refused.
NEVER_VALID = st.one_of(
    st.none(),
    st.binary(max_size=8),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.sets(st.integers(), max_size=2),
    st.just(object()),
    st.just(np.zeros(2)),
)
# Anything at all, valid or not: accepted, or refused with a ValueError.
ANYTHING = st.one_of(
    NEVER_VALID,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers().map(lambda n: n * 10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["straight-through", "full", "clip", "sigmoid", "noise", "input"]),
    st.lists(st.floats(), max_size=3),
    st.tuples(st.floats(), st.floats()),
)
NUMERIC = [
    n for n in NAMES if n not in ("gradient", "output_map", "latent_init", "fresh_noise", "refine", "adam_betas")
]


def build(name: str, value: object) -> DefenseSettings:
    """Settings with one field changed; start_step 1000 so that num_steps alone is checked against it."""
    base = {"start_step": 1000} if name == "num_steps" else {"num_steps": 1} if "start_step" in name else {}
    return DefenseSettings(**{**base, name: value})


@pytest.mark.parametrize("name", NAMES)
@given(value=NEVER_VALID)
def test_values_of_no_fields_type_are_refused_with_a_sentence(name, value):
    # None: the first update takes the rule's rate, the refining pass starts where the chain does
    assume(not (name in ("first_lr", "refine_start_step") and value is None))
    with pytest.raises(ValueError, match=rf"^Expected {name}\b.*, but got .+\.$"):
        build(name, value)


@pytest.mark.parametrize("name", NAMES)
@given(value=ANYTHING)
def test_any_value_is_accepted_as_a_plain_valid_one_or_refused_with_a_value_error(name, value):
    try:
        settings = build(name, value)
    except ValueError as err:  # any other exception type fails the test
        assert str(err).startswith(f"Expected {name}") and str(err).endswith("."), err
        return
    kept = getattr(settings, name)
    if name == "adam_betas":
        assert kept == tuple(float(b) for b in value)
    elif isinstance(kept, float):  # numbers kept as floats, rounded as float() rounds them
        assert kept == float(value)
    else:
        assert kept == value and type(kept) is type(value)
    assert DefenseSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings  # plain JSON values


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_is_not_a_number(name, flag):
    with pytest.raises(ValueError, match=rf"Expected {name} .*, but got {flag}\."):
        build(name, flag)


@pytest.mark.parametrize("name", ["eta", "lr", "first_lr", "lr_decay"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_non_finite_numbers_are_refused(name, value):
    with pytest.raises(ValueError, match=rf"Expected {name} .*finite number"):
        build(name, value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": "x"}, r"Expected lr to be a finite number above 0 \(learning rates are positive\), but got 'x'\."),
        ({"first_lr": 0.0}, r"Expected first_lr to be None or a finite number above 0 .*, but got 0\.0\."),
        ({"lr_decay": 1.5}, r"Expected lr_decay to be a finite number in \(0, 1\], but got 1\.5\."),
        ({"eta": -0.1}, r"Expected eta in \[0, 1\] \(a finite number\), but got -0\.1\."),
        ({"adam_betas": (0.5, 1.0)}, r"Expected adam_betas to be two finite numbers in \[0, 1\), but got 1\.0\."),
        ({"adam_betas": "ab"}, r"Expected adam_betas to be two finite numbers in \[0, 1\), but got 'ab'\."),
        ({"seed": -1}, r"Expected seed to be a non-negative integer up to 2\*\*64 - 1, but got -1\."),
        ({"seed": 10**5000}, r"but got an integer of 16610 bits\."),
        ({"start_step": 2.0}, r"Expected start_step to be a non-negative integer, but got 2\.0\."),
        ({"fresh_noise": 1}, r"Expected fresh_noise to be True or False, but got 1\."),
        ({"refine": "yes"}, r"Expected refine to be True or False, but got 'yes'\."),
        ({"output_map": "Clip"}, r"Expected output_map 'clip' or 'sigmoid', but got 'Clip'\."),
        ({"num_steps": 16}, r"Expected num_steps <= start_step \+ 1 .*, but got num_steps=16 with start_step=14\."),
        ({"refine_start_step": -1}, r"Expected refine_start_step to be None or a non-negative integer, but got -1\."),
        (
            {"num_steps": 2, "refine_start_step": 0},
            r"Expected num_steps <= refine_start_step \+ 1 .*, but got num_steps=2 with refine_start_step=0\.",
        ),
    ],
)
def test_each_refusal_says_what_was_expected_and_what_came(changes, message):
    with pytest.raises(ValueError, match=message):
        DefenseSettings(**changes)


def test_numbers_are_kept_as_plain_python_values():
    settings = DefenseSettings(seed=np.int64(3), lr=np.float32(0.5), eta=0, adam_betas=[0.5, 0.9])
    assert type(settings.seed) is int and type(settings.lr) is float and type(settings.eta) is float
    assert settings.adam_betas == (0.5, 0.9) and json.dumps(settings.to_dict())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_presets_are_valid_and_survive_json(name):
    preset = PRESETS[name]
    assert DefenseSettings(**preset.to_dict()) == preset
    assert DefenseSettings.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


@pytest.mark.parametrize("values", [None, [("lr", 0.1)], "lr=0.1", {"lr": 0.1, 3: 1}])
def test_from_dict_refuses_what_is_not_a_dict_of_fields(values):
    with pytest.raises(ValueError, match="Expected defence settings"):
        DefenseSettings.from_dict(values)


def test_the_refining_pass_starts_where_it_is_told_and_the_chain_where_it_was():
    chain_only = DefenseSettings(num_steps=2, start_step=14)
    assert chain_only.refine_start == 14 and chain_only.highest_step == 14
    deeper = chain_only.with_(refine=True, refine_start_step=24)
    assert (deeper.start_step, deeper.refine_start, deeper.highest_step) == (14, 24, 24)
    assert deeper.unet_evaluations == chain_only.with_(refine=True).unet_evaluations  # the same T* steps, elsewhere
    assert deeper.with_(refine=False).highest_step == 14  # no pass, no higher level
    deeper.check_trained_timesteps(25)
    with pytest.raises(ValueError, match=r"trained on timesteps below 20 only, .* at index 24"):
        deeper.check_trained_timesteps(20)


def test_settings_without_a_refining_level_of_their_own_keep_their_earlier_form():
    assert "refine_start_step" not in PRESETS["default"].to_dict()
    deeper = PRESETS["default"].with_(refine_start_step=24)
    assert deeper.to_dict()["refine_start_step"] == 24
    assert DefenseSettings.from_dict(json.loads(json.dumps(deeper.to_dict()))) == deeper


def test_overrides_take_the_types_of_the_settings_fields():
    assert parse_overrides("num_steps=10, lr=0.5,output_map=clip,refine=false,first_lr=none,refine_start_step=20") == {
        "num_steps": 10,
        "lr": 0.5,
        "output_map": "clip",
        "refine": False,
        "first_lr": None,
        "refine_start_step": 20,
    }
    assert parse_overrides("") == {}
    assert parse_overrides("first_lr=none,refine_start_step=none") == {"first_lr": None, "refine_start_step": None}
    assert PRESETS["default"].with_(**parse_overrides("refine_start_step=20")).refine_start == 20


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps=3", "'steps'"),
        ("adam_betas=0.5", "'adam_betas'"),
        ("refine_start=20", "'refine_start'"),  # a property, not a field
        ("num_steps=two", "num_steps to be an integer, but got 'num_steps=two'"),
        ("lr=fast", "lr to be a number"),
        ("refine=maybe", "refine=true or refine=false"),
    ],
)
def test_overrides_that_name_no_field_or_give_no_value_of_its_type_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(text)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_field_but_the_betas_round_trips_through_its_override_text(name):
    values = {k: v for k, v in PRESETS[name].to_dict().items() if k != "adam_betas"}
    text = ",".join(f"{key}={value}" for key, value in values.items())
    assert parse_overrides(text) == values
