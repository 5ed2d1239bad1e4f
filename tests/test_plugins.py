"""The plugin host: built-ins, plugin files, entry points, duplicates, typos, and the documented hooks."""

import re
from pathlib import Path

import pytest

from debiaskit import DebiasKitError, hookspecs
from debiaskit.plugin_host import load_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_builtins_and_plugin_files_load_with_their_origin():
    host = load_plugins(EXAMPLES)
    assert "none" in host.methods.things and "pronoun-projection" in host.methods.things
    rows = {row["plugin"]: row for row in host.plugin_rows()}
    example = rows[str(EXAMPLES / "pronoun_projection.py")]
    assert example["registers"] == "pronoun-projection" and example["from"].endswith("pronoun_projection.py")
    assert rows["debiaskit.plugins.none"]["from"] == "built-in"


def test_duplicate_method_names_name_both_plugins(tmp_path):
    write(tmp_path, "a.py", "from debiaskit import Method, hookimpl\n"
          "class A(Method):\n    name = 'none'\n    description = 'x'\n"
          "@hookimpl\ndef register_methods(register):\n    register(A)\n")
    with pytest.raises(DebiasKitError,
                       match=r"method 'none' is registered twice: by debiaskit.plugins.none and by .*a\.py"):
        load_plugins(tmp_path)


def test_misspelt_hook_is_caught_at_load_time(tmp_path):
    write(tmp_path, "typo.py", "from debiaskit import hookimpl\n@hookimpl\ndef register_method(register):\n    pass\n")
    with pytest.raises(DebiasKitError, match="register_method"):
        load_plugins(tmp_path)


def test_a_plugin_file_that_fails_to_import_is_reported_and_the_others_load(tmp_path):
    broken = write(tmp_path, "broken.py", "raise ImportError('missing dependency xyz')\n")
    write(tmp_path, "good.py", (EXAMPLES / "pronoun_projection.py").read_text())
    host = load_plugins(tmp_path)
    assert "pronoun-projection" in host.methods.things
    assert len(host.load_errors) == 1 and str(broken) in host.load_errors[0] and "xyz" in host.load_errors[0]


def test_registering_something_that_is_not_a_method_is_an_error(tmp_path):
    write(tmp_path, "wrong.py", "from debiaskit import hookimpl\n@hookimpl\ndef register_methods(register):\n"
          "    register(42)\n")
    with pytest.raises(DebiasKitError, match="registered 42 as a method"):
        load_plugins(tmp_path)


def test_entry_point_plugins_load(monkeypatch):
    import importlib.metadata

    class FakeEntryPoint:
        name, value = "third-party", "pronoun_projection"

        def load(self):
            import importlib.util

            spec = importlib.util.spec_from_file_location("third_party_example", EXAMPLES / "pronoun_projection.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "debiaskit" else [])
    host = load_plugins()
    assert host.methods.sources["pronoun-projection"] == "third-party"


def test_only_plugins_env_limits_what_loads(monkeypatch):
    monkeypatch.setenv("DEBIASKIT_LOAD_PLUGINS", "leace")
    host = load_plugins()
    assert list(host.methods.things) == ["none", "leace"]  # the baseline always loads
    # so do the built-in data sets
    assert "occupations40" in host.datasets.things and "pronoun" in host.templates.things


def test_every_hook_and_its_arguments_are_documented_under_their_own_heading():
    plugin_docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in dir(hookspecs):
        function = getattr(hookspecs, name)
        if callable(function) and hasattr(function, "debiaskit_spec"):
            arguments = function.__code__.co_varnames[: function.__code__.co_argcount]
            signature = f"{name}({', '.join(arguments)})"
            heading = rf"^#+ `?{re.escape(signature)}`?\s*$"
            assert re.search(heading, plugin_docs, re.MULTILINE), f"docs/plugins.md has no heading for {signature}"


def test_the_readme_plugin_example_is_the_file_the_tests_load():
    example = (EXAMPLES / "pronoun_projection.py").read_text().strip()
    assert example in (ROOT / "README.md").read_text()
    plugin_docs = (ROOT / "docs" / "plugins.md").read_text()
    assert example in plugin_docs or "](../examples/plugins/pronoun_projection.py)" in plugin_docs


def test_every_relative_link_in_the_docs_points_to_a_file_that_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # a URL (https:, mailto:) or a link within the page
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
