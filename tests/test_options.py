import pytest
from hypothesis import given
from hypothesis import strategies as st

from debiaskit import DebiasKitError, Option
from debiaskit.options import parse_assignments, resolve_settings
from debiaskit.plugin_host import load_plugins

OPTIONS = (
    Option("factor", float, 0.3, "scale"),
    Option("layers", tuple, (8,), "layers"),
    Option("n", int, 10, "count"),
    Option("oracle", bool, False, "flag"),
    Option("selection", str, "contrast", "how", choices=("contrast", "seed")),
)


def test_defaults_and_coercion():
    settings = resolve_settings("m", OPTIONS, {"factor": "0", "layers": "4, 8", "n": "3", "oracle": "yes"})
    assert settings == {"factor": 0.0, "layers": (4, 8), "n": 3, "oracle": True, "selection": "contrast"}


@pytest.mark.parametrize(
    "given, message",
    [
        ({"bogus": "1"}, "m accepts: factor, layers, n, oracle, selection"),
        ({"n": "2.5"}, "option m.n got '2.5'; it takes int"),
        ({"factor": "nan"}, "it takes float"),
        ({"oracle": "maybe"}, "true|false"),
        ({"selection": "other"}, "accepted: contrast, seed"),
        ({"layers": ""}, "int,int"),
    ],
)
def test_bad_values_name_what_is_accepted(given, message):
    with pytest.raises(DebiasKitError, match=message.replace(".", r"\.").replace("|", r"\|")):
        resolve_settings("m", OPTIONS, given)


def test_parse_assignments():
    assert parse_assignments(["sae-ablation.factor=0", "leace.layers=4,8"]) == {
        "sae-ablation": {"factor": "0"}, "leace": {"layers": "4,8"}}
    for bad in ["factor=0", "sae-ablation.factor", ".x=1", "m.=1"]:
        with pytest.raises(DebiasKitError, match="method.key=value"):
            parse_assignments([bad])


@given(st.lists(st.text(max_size=30), max_size=4))
def test_option_parsing_raises_only_the_project_error(assignments):
    try:
        parsed = parse_assignments(assignments)
        for given in parsed.values():
            resolve_settings("m", OPTIONS, given)
    except DebiasKitError:
        pass


def test_every_listed_default_reads_back_as_itself():
    # `debiaskit methods` prints each default as it would be typed after -o method.key=; typing it must give it back
    host = load_plugins()
    for name, method_class in host.methods.things.items():
        for option in method_class.options:
            assert option.coerce(option.as_typed(option.default), name) == option.default, (name, option.name)


@given(st.integers(-50, 50), st.integers(0, 50), st.floats(-200, 200, allow_nan=False), st.booleans())
def test_bounds_accept_what_is_inside_and_name_the_range_otherwise(low, width, value, one_sided):
    high = None if one_sided else low + width
    option = Option("x", float, float(low), "bounded", minimum=low, maximum=high)
    accepted = f">= {low}" if one_sided else f"from {low} to {high}"
    if low <= value and (high is None or value <= high):
        assert option.coerce(str(value), "m") == value
    else:
        with pytest.raises(DebiasKitError) as raised:
            option.coerce(str(value), "m")
        assert str(raised.value) == f"option m.x got {value}; it takes a number {accepted}"


@given(st.integers(-5, 5), st.lists(st.integers(-10, 10), min_size=1, max_size=4))
def test_a_tuple_bound_holds_for_each_item(low, items):
    option = Option("layers", tuple, (), "bounded", minimum=low)
    if all(item >= low for item in items):
        assert option.coerce(",".join(map(str, items)), "m") == tuple(items)
    else:
        with pytest.raises(DebiasKitError, match=f"option m.layers has {next(i for i in items if i < low)}; "
                                                 f"it takes integers >= {low}$"):
            option.coerce(items, "m")


@pytest.mark.parametrize(
    "option, shown",
    [
        (Option("blend", float, 1.0, "h", minimum=0, maximum=1), "float 0..1"),
        (Option("n", int, 1, "h", minimum=1), "int >= 1"),
        (Option("scale", float, 0.5, "h", maximum=2.5), "float <= 2.5"),
        (Option("layers", tuple, (0,), "h", minimum=0, maximum=23), "int,int,... each 0..23"),
        (Option("n", int, 1, "h"), "int"),
    ],
)
def test_describe_type_shows_the_bounds(option, shown):
    assert option.describe_type() == shown


def test_bounds_need_a_number_type_and_an_order():
    with pytest.raises(DebiasKitError, match="bounds apply to int, float and tuple"):
        Option("name", str, "", "h", minimum=0)
    with pytest.raises(DebiasKitError, match="minimum 2 above maximum 1"):
        Option("n", int, 1, "h", minimum=2, maximum=1)


def test_a_plugins_declared_bound_is_enforced_through_resolve_settings():
    leace = load_plugins().methods.things["leace"]
    blend = next(option for option in leace.options if option.name == "blend")
    assert blend.describe_type() == "float 0..1"
    assert resolve_settings("leace", leace.options, {"blend": "0.5"})["blend"] == 0.5
    with pytest.raises(DebiasKitError, match=r"^option leace\.blend got 1\.5; it takes a number from 0 to 1$"):
        resolve_settings("leace", leace.options, {"blend": "1.5"})
