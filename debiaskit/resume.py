"""`compare --resume DIR`: finish an interrupted run without recomputing the methods it already scored.

`compare --out DIR` rewrites its files atomically after every method (see `run_dir`), the manifest last with a
digest of each method's summary row and result rows, so a stopped run leaves them consistent up to its last finished
method. Resuming reads the settings back from the manifest's command (a setting given again must equal the recorded
one), keeps every method whose row is `ok` and whose row and results on disk match their digests, and runs the rest
(failed methods, and those whose files were cut short or edited, run again). It refuses to mix results when anything
that changes numbers differs: a setting, the plugins folder, the device, or the content of the data set and templates
(hashed into the manifest as `data_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pandas as pd

from debiaskit.compare import MethodRun
from debiaskit.data import OccupationSet, TemplateFamily, project_data_dir
from debiaskit.errors import DebiasKitError
from debiaskit.gendered_text import GENDERED_TEXT_FILE
from debiaskit.professions import PROFESSION_TEMPLATES, Profession
from debiaskit.run_dir import (
    MANIFEST_FILE,
    RESULT_FILES,
    SUMMARY_FILE,
    frame_digests,
    per_model_runs,
    read_frame,
    read_json_object,
    row_digest,
)
from debiaskit.word_lists import definitional_nouns

# how results are shown, where they go and where they are computed: free to change on resume
PRESENTATION = ("fmt", "out", "resume", "force", "executor", "address", "workers", "gpus_per_worker")
CHECKED_MANIFEST_KEYS = ("device", "data_sha256")  # known only once the model and data are loaded


@dataclass(frozen=True)
class PreviousRun:
    """A run directory read back: its manifest, the parameters of its command, and its finished methods."""

    directory: Path
    manifest: dict[str, Any]
    parameters: dict[str, Any]  # the compare command's parameters as that run parsed them
    plugins_dir: str | None
    finished: tuple[MethodRun, ...]


def data_fingerprint(occupations: OccupationSet, family: TemplateFamily, professions: Sequence[Profession] = (),
                     benchmarks: str = "") -> str:
    """sha256 of what is scored (the jobs, the templates, the professions, the control nouns, the gendered text and
    the benchmarks' own fingerprint, `BenchmarkSets.fingerprint`): a file edited between runs changes it."""
    content = {"jobs": [[job.name, job.group, job.pct_women] for job in occupations.occupations],
               "templates": list(family.templates), "male_words": list(family.male_words),
               "female_words": list(family.female_words)}
    if professions:
        content["professions"] = [[p.name, p.definitional, p.stereotypical] for p in professions]
        content["profession_templates"] = PROFESSION_TEMPLATES
    content["control_nouns"] = [[noun.word, noun.gender] for noun in definitional_nouns()]
    content["gendered_text"] = hashlib.sha256((project_data_dir() / GENDERED_TEXT_FILE).read_bytes()).hexdigest()
    if benchmarks:
        content["benchmarks"] = benchmarks
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def resume_command(directory: Path, plugins_dir: Path | str | None) -> str:
    words = ["debiaskit", *(["--plugins-dir", str(plugins_dir)] if plugins_dir is not None else []),
             "compare", "--resume", str(directory)]
    return shlex.join(words)


def read_previous_run(directory: Path, command: click.Command) -> PreviousRun:
    """The run in `directory`, or a DebiasKitError saying why it cannot be resumed."""
    per_model = per_model_runs(directory)
    if per_model:
        raise DebiasKitError(f"{directory} holds one run per model ({', '.join(per_model)}); resume each in its own "
                             f"folder, e.g. --resume {directory / per_model[0]}")
    manifest = _read_run_file(directory / MANIFEST_FILE, directory)
    summary = _read_run_file(directory / SUMMARY_FILE, directory)
    plugins_dir, parameters = _parse_command(manifest, command, directory)
    frames = {kind: read_frame(directory / name) for kind, name in RESULT_FILES.items()}
    recorded = manifest.get("results_sha256")
    if not isinstance(recorded, dict):
        raise DebiasKitError(f"{directory / MANIFEST_FILE} records no digests of its results (an older debiaskit wrote "
                             "it), so what it holds cannot be checked; start a new run")
    actual = {kind: frame_digests(frame) for kind, frame in frames.items()}
    finished = []
    for row in summary.get("methods", []):
        name = row.get("method")
        expected = recorded.get(name)
        if row.get("status") != "ok" or not isinstance(expected, dict):
            continue  # failed, or the run stopped before it was recorded: it runs again
        changed = [SUMMARY_FILE] if row_digest(row) != expected.get("row") else []
        changed += [RESULT_FILES[kind] for kind in RESULT_FILES if actual[kind].get(name) != expected.get(kind)]
        if changed:
            print(f"debiaskit: {name} runs again: its results in {', '.join(changed)} are not what the run recorded "
                  "(cut short or edited)", file=sys.stderr)
            continue
        finished.append(MethodRun(dict(row), {kind: _rows_of(frame, name) for kind, frame in frames.items()
                                              if name in actual[kind]}))
    if finished and finished[0].row["method"] != "none":
        finished = []  # every other row is measured against the baseline: without it nothing can be kept
    return PreviousRun(directory, manifest, parameters, plugins_dir, tuple(finished))


def resume_option_callback(context: click.Context, parameter: click.Parameter, directory: Path | None) -> Path | None:
    """`--resume DIR` (an eager option): the recorded settings become this invocation's defaults."""
    if directory is None or context.resilient_parsing:
        return directory
    try:
        previous = read_previous_run(directory, context.command)
    except DebiasKitError as error:
        raise click.BadParameter(str(error), context, parameter) from None
    context.meta["previous_run"] = previous
    context.default_map = {**(context.default_map or {}), **recorded_defaults(previous)}
    return directory


def recorded_defaults(previous: PreviousRun) -> dict[str, Any]:
    """click `default_map` entries: every parameter the previous run recorded, and `--out` its own directory."""
    defaults = {name: value for name, value in previous.parameters.items()
                if name not in PRESENTATION and value is not None}
    return {**defaults, "out": str(previous.directory)}


def check_resumable(previous: PreviousRun, parameters: dict[str, Any], plugins_dir: Path | str | None,
                    command: click.Command, manifest: dict[str, Any] | None = None) -> None:
    """Refuse, listing every difference, when this run would not compute what the previous one did. Called with the
    parameters before the model loads, and again with this run's `manifest` (device, data hash) once it has."""
    flags = {p.name: max(p.opts, key=len) for p in command.params if isinstance(p, click.Option)}
    differences = []
    if parameters.get("out") is not None and Path(parameters["out"]).resolve() != previous.directory.resolve():
        differences.append(f"--out {parameters['out']}: a resumed run writes into {previous.directory} itself")
    for name, recorded in previous.parameters.items():
        if name not in PRESENTATION and parameters.get(name) != recorded:
            differences.append(f"{flags.get(name, name)}: the run in {previous.directory} used {_show(recorded)}, "
                               f"this one asks for {_show(parameters.get(name))}")
    if _same_path(plugins_dir) != _same_path(previous.plugins_dir):
        differences.append(f"--plugins-dir: the run used {previous.plugins_dir or '(none)'}, "
                           f"this one {plugins_dir or '(none)'}")
    for key in CHECKED_MANIFEST_KEYS if manifest is not None else ():
        if key in previous.manifest and previous.manifest[key] != manifest.get(key):
            what = "the data set or templates changed on disk" if key == "data_sha256" else key
            differences.append(f"{what}: the run had {previous.manifest[key]}, this one has {manifest.get(key)}")
    if differences:
        raise DebiasKitError(f"cannot resume {previous.directory}; results would mix different settings:\n  "
                             + "\n  ".join(differences)
                             + "\nresume with the recorded settings "
                             f"({resume_command(previous.directory, previous.plugins_dir)})"
                             " or start a new run with another --out")
    if manifest is None:
        return
    old, new = previous.manifest.get("versions", {}), manifest.get("versions", {})
    changed = sorted(name for name in old if name in new and old[name] != new[name])
    if changed:
        print("debiaskit: warning: resuming with other package versions "
              f"({', '.join(f'{n} {old[n]} -> {new[n]}' for n in changed)})",
              file=sys.stderr)


def _parse_command(manifest: dict[str, Any], command: click.Command,
                   directory: Path) -> tuple[str | None, dict[str, Any]]:
    """The recorded command's compare parameters, parsed by the compare command itself."""
    try:
        words = shlex.split(manifest["command"])[1:]
        plugins_dir = None
        if words[:1] == ["--plugins-dir"]:
            plugins_dir, words = words[1], words[2:]
        info_name, arguments = words[0], words[1:]
        with command.make_context(info_name, arguments, resilient_parsing=True) as context:
            return plugins_dir, dict(context.params)
    except (KeyError, IndexError, TypeError, ValueError, click.ClickException) as error:
        raise DebiasKitError(f"{directory / MANIFEST_FILE} has no usable command ({error}); it was not written by "
                             "`debiaskit compare --out`") from None


def _read_run_file(path: Path, directory: Path) -> dict[str, Any]:
    loaded = read_json_object(path)
    if loaded is None:
        raise DebiasKitError(f"nothing to resume in {directory}: {path.name} is missing (no method had finished, or it "
                             "is not a directory written by `debiaskit compare --out`); start the run again")
    return loaded


def _rows_of(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame[frame["method"] == method].reset_index(drop=True)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def _same_path(value: Path | str | None) -> str | None:
    return None if value is None else str(Path(value).resolve())
