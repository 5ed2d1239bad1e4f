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
