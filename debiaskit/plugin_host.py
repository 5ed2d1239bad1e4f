"""The plugin manager: built-in plugins, installed entry points, and one-off plugin files.

Registration walks each plugin's hook implementation on its own, so every method, data set and template
family remembers which plugin registered it, and a duplicate name is an error naming both plugins.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from debiaskit import hookspecs
from debiaskit.data import DatasetSpec, OccupationSet, TemplateFamily
from debiaskit.errors import DebiasKitError

# Modules under plugins/ (installed as debiaskit.plugins); each is one method or data source.
DEFAULT_PLUGINS = (
    "debiaskit.plugins.none",
    "debiaskit.plugins.occupation_datasets",
    "debiaskit.plugins.leace",
    "debiaskit.plugins.logit_rebalance",
    "debiaskit.plugins.sae_ablation",
    "debiaskit.plugins.locate",
    "debiaskit.plugins.lsdm",
    "debiaskit.plugins.sae_steer",
    "debiaskit.plugins.occupation_gate",
    "debiaskit.plugins.inlp",
    "debiaskit.plugins.sentence_debias",
    "debiaskit.plugins.self_debias",
    "debiaskit.plugins.caa",
    "debiaskit.plugins.dama",
    "debiaskit.plugins.cda",
)
# The baseline row and the built-in data sets: every comparison needs them, so they load whatever the env var says.
ALWAYS_LOADED = ("debiaskit.plugins.none", "debiaskit.plugins.occupation_datasets")
ENTRY_POINT_GROUP = "debiaskit"
# comma-separated module or entry-point names: load only these (and ALWAYS_LOADED)
ONLY_PLUGINS_ENV = "DEBIASKIT_LOAD_PLUGINS"


@dataclass
class Registered:
    """What one plugin registered, keyed by name, with the plugin each came from."""

    things: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, name: str, thing: Any, source: str) -> None:
        if name in self.things:
            raise DebiasKitError(f"{kind} {name!r} is registered twice: by {self.sources[name]} and by {source}")
        self.things[name] = thing
        self.sources[name] = source

    def get(self, kind: str, name: str) -> Any:
        if name not in self.things:
            raise DebiasKitError(f"unknown {kind} {name!r}; accepted: {', '.join(self.things) or '(none registered)'}")
        return self.things[name]


@dataclass
class PluginHost:
    manager: pluggy.PluginManager
    load_errors: list[str]
    methods: Registered
    datasets: Registered
    templates: Registered

    def load_occupations(self, dataset: str) -> OccupationSet:
        """The data set `NAME` or `NAME:ARGUMENT` (what follows the first ':' goes to its loader), loaded."""
        name, _, argument = dataset.partition(":")
        return self.datasets.get("data set", name).load(argument or None)

    def template_family(self, name: str) -> TemplateFamily:
        return self.templates.get("template family", name)

    def plugin_rows(self) -> list[dict[str, str]]:
        """One row per loaded plugin: its name, where it came from, and what it registered."""
        rows = []
        for name, plugin in self.manager.list_name_plugin():
            registered = [n for reg in (self.methods, self.datasets, self.templates)
                          for n, s in reg.sources.items() if s == name]
            rows.append({"plugin": name, "from": _origin(plugin), "registers": ", ".join(registered)})
        return rows


def load_plugins(plugins_dir: str | Path | None = None) -> PluginHost:
    """Built-ins, then entry points, then each `*.py` in `plugins_dir`; a file that fails to import is reported
    in `load_errors` and skipped, so one broken file does not stop the others."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    only = {n.strip() for n in os.environ.get(ONLY_PLUGINS_ENV, "").split(",") if n.strip()}
    for module_name in DEFAULT_PLUGINS:
        if not only or module_name in ALWAYS_LOADED or module_name in only or module_name.rsplit(".", 1)[-1] in only:
            manager.register(importlib.import_module(module_name), name=module_name)
    load_errors: list[str] = []
    _load_entry_points(manager, only, load_errors)
    _name_unknown(only, load_errors)
    if plugins_dir is not None:
        _load_directory(manager, Path(plugins_dir), load_errors)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        plugin = manager.get_name(error.plugin) or repr(error.plugin)
        accepted = ", ".join(name for name in dir(hookspecs) if name.startswith("register_"))
        raise DebiasKitError(f"plugin {plugin}: {error}; debiaskit's hooks are {accepted}") from None
    return PluginHost(manager, load_errors, *_collect(manager))


def _load_entry_points(manager: pluggy.PluginManager, only: set[str], load_errors: list[str]) -> None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if only and entry_point.name not in only:
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except Exception as error:  # a broken third-party plugin must not stop the others
            load_errors.append(f"entry point {entry_point.name} ({entry_point.value}): {type(error).__name__}: {error}")


def _name_unknown(only: set[str], load_errors: list[str]) -> None:
    """Each name in ONLY_PLUGINS_ENV that is neither a built-in plugin nor an installed entry point."""
    from importlib.metadata import entry_points

    known = {*DEFAULT_PLUGINS, *(name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS),
             *(entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP))}
    for name in sorted(only - known):
        load_errors.append(f"{ONLY_PLUGINS_ENV} names {name!r}, which is neither a built-in plugin nor an installed "
                           f"entry point; built-ins: {', '.join(n.rsplit('.', 1)[-1] for n in DEFAULT_PLUGINS)}")


def _load_directory(manager: pluggy.PluginManager, directory: Path, load_errors: list[str]) -> None:
    if not directory.is_dir():
        raise DebiasKitError(f"--plugins-dir {directory} is not a directory; pass a folder of *.py plugin files")
    for path in sorted(directory.glob("*.py")):
        module_name = f"debiaskit_local_plugin_{path.stem}"
        try:
            module = _import_file(module_name, path)
            manager.register(module, name=str(path))
        except Exception as error:
            sys.modules.pop(module_name, None)
            load_errors.append(f"{path}: {type(error).__name__}: {error}")


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _collect(manager: pluggy.PluginManager) -> tuple[Registered, Registered, Registered]:
    from debiaskit.method import Method

    methods, datasets, templates = Registered(), Registered(), Registered()
    for hook_name, kind, registry, expected in (
        ("register_methods", "method", methods, Method),
        ("register_datasets", "data set", datasets, DatasetSpec),
        ("register_templates", "template family", templates, TemplateFamily),
    ):
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            source = impl.plugin_name

            def register(thing: Any, _kind: str = kind, _registry: Registered = registry, _expected: type = expected,
                         _source: str = source) -> None:
                is_method_class = _expected is Method and isinstance(thing, type) and issubclass(thing, Method)
                if not is_method_class and not (_expected is not Method and isinstance(thing, _expected)):
                    raise DebiasKitError(f"plugin {_source} registered {thing!r} as a {_kind}; "
                                         f"expected a {_expected.__name__}")
                _registry.add(_kind, thing.name, thing, _source)

            impl.function(register=register)
    return methods, datasets, templates


def _origin(plugin: Any) -> str:
    module_file = getattr(plugin, "__file__", None)
    name = getattr(plugin, "__name__", "")
    if name.startswith("debiaskit.plugins."):
        return "built-in"
    return module_file or repr(plugin)
