"""The run directory that `compare --out` and `sweep --out` write, and that `--resume` and `report` read back.

Every file is written atomically (a temporary file beside it, then a rename), so a run stopped at any moment leaves
each file whole. This module is the one place that names the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from debiaskit.errors import DebiasKitError
from debiaskit.tables import jsonable, render

MANIFEST_FILE = "manifest.json"  # how the run was made: its command, versions, data hash
SUMMARY_FILE = "summary.json"  # one row per method, with the header
SUMMARY_CSV_FILE = "summary.csv"
PROMPTS_FILE = "prompts.csv"  # per prompt and method
CONTROLS_FILE = "controls.csv"  # per definitional control prompt and method
PROFESSIONS_FILE = "professions.csv"  # per profession and method (the stereotype/factual regression)
SWEEP_FILE = "sweep.json"  # what `sweep --out` writes
CROWS_RESULTS_FILE = "crows_pairs.csv"  # per CrowS-Pairs pair and method (with --benchmarks crows)
WINOGENDER_RESULTS_FILE = "winogender.csv"  # per WinoGender sentence triple and method (with --benchmarks winogender)
RESULT_FILES = {"prompts": PROMPTS_FILE, "controls": CONTROLS_FILE, "professions": PROFESSIONS_FILE,
                "crows": CROWS_RESULTS_FILE, "winogender": WINOGENDER_RESULTS_FILE}
OPTIONAL_RESULTS = ("crows", "winogender")  # written only by a run that scored them (the others always, maybe empty)
# what `debiaskit report` writes from them
REPORT_MD, REPORT_HTML = "report.md", "report.html"
TABLE_TEX, MATCHED_COST_TEX, CHOSEN_TEX = "table.tex", "matched_cost.tex", "chosen.tex"
JOB_SHARES_PNG, GAP_KL_PNG = "figures/job_shares.png", "figures/gap_kl.png"
FRONTIERS_PNG, SELECTIVITY_PNG = "figures/frontiers.png", "figures/selectivity.png"
# a `compare --out` run and what its report draws from it alone (a sweep's files in the same folder stay)
COMPARE_FILES = (MANIFEST_FILE, SUMMARY_FILE, SUMMARY_CSV_FILE, *RESULT_FILES.values(), TABLE_TEX, JOB_SHARES_PNG,
                 GAP_KL_PNG, SELECTIVITY_PNG, REPORT_MD, REPORT_HTML)

def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())  # the data is on disk before the rename makes it visible
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes the file private; results are as readable as any file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check.", delete=True)
        probe.close()
    except OSError as error:
        raise DebiasKitError(f"cannot write to output directory {directory}: {error.strerror or error}") from None


def write_run(directory: Path, header: dict[str, Any], rows: Sequence[dict[str, Any]],
              results: dict[str, pd.DataFrame], manifest: dict[str, Any]) -> list[Path]:
    """Per prompt, control prompt, profession and benchmark item (`results`, keyed as RESULT_FILES), per method
    (summary.csv, summary.json), and how to rerun (manifest.json, last). The manifest records a digest of each
    method's summary row and result rows, so that resuming can tell a finished method from one whose files were cut
    short or edited."""
    texts = {RESULT_FILES[kind]: frame.to_csv(index=False) for kind, frame in results.items()}
    digests: dict[str, dict[str, str]] = {row["method"]: {"row": row_digest(jsonable(row))} for row in rows}
    for kind, file_name in RESULT_FILES.items():
        for method, digest in method_digests(texts.get(file_name, "")).items():
            digests.setdefault(method, {})[kind] = digest
    files = {
        **texts,
        SUMMARY_CSV_FILE: render(header, rows, "csv"),
        SUMMARY_FILE: render(header, rows, "json") + "\n",
        MANIFEST_FILE: json.dumps(jsonable({**manifest, "results_sha256": digests}), indent=2) + "\n",
    }
    for name, text in files.items():
        atomic_write_text(directory / name, text)
    return [directory / name for name in files]


def row_digest(row: dict[str, Any]) -> str:
    """sha256 of a summary row as summary.json holds it."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()


def method_digests(csv_text: str) -> dict[str, str]:
    """Per method, sha256 of its rows of a result CSV as `read_frame` reads them back (the same digest from the
    text written and from the file read, unless the file was changed)."""
    return frame_digests(_parse_csv(io.StringIO(csv_text), "the results") if csv_text.strip() else pd.DataFrame())


def frame_digests(frame: pd.DataFrame) -> dict[str, str]:
    """Per method, sha256 of its rows of a result frame read back with `read_frame`."""
    if "method" not in frame:
        return {}
    return {str(method): hashlib.sha256(rows.to_csv(index=False).encode("utf-8")).hexdigest()
            for method, rows in frame.groupby("method", sort=False)}


def holds_run(directory: Path) -> bool:
    """Whether `directory` holds a `compare --out` run."""
    return any((directory / name).is_file() for name in (MANIFEST_FILE, SUMMARY_FILE))


def per_model_runs(directory: Path) -> list[str]:
    """The folders in `directory` that hold a run, by name, when `directory` holds a run of several models (one
    folder per model) rather than a run of its own; [] otherwise."""
    if not directory.is_dir() or holds_run(directory):
        return []
    return sorted(folder.name for folder in directory.iterdir() if folder.is_dir() and holds_run(folder))


def clear_run(directory: Path) -> None:
    """Remove a previous compare run and what its report drew from it (`--force`); anything else stays."""
    for name in COMPARE_FILES:
        (directory / name).unlink(missing_ok=True)


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold `directory` for this run (an flock on the folder itself, released when the process ends however it
    ends): another debiaskit run writing there at the same time is refused. Where fcntl is missing, nothing is
    locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    handle = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DebiasKitError(f"{directory} is in use: another debiaskit run is writing there; wait for it to "
                                 "finish or pass another --out") from None
        yield
    finally:
        os.close(handle)  # closing the last descriptor releases the lock


def write_json(path: Path, content: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(jsonable(content), indent=2) + "\n")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is no such file, a DebiasKitError when it cannot be read."""
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DebiasKitError(f"cannot read {path}: {error}") from None
    if not isinstance(loaded, dict):
        raise DebiasKitError(f"{path} is not a JSON object; it was not written by debiaskit")
    return loaded


def read_frame(path: Path) -> pd.DataFrame:
    """A per-prompt CSV exactly as written: floats round-trip bit for bit, and a job called 'NA' stays text. An
    empty frame when the file is missing or empty."""
    try:
        return _parse_csv(path, path)
    except FileNotFoundError:
        return pd.DataFrame()


def _parse_csv(source: Any, name: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(source, float_precision="round_trip", keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DebiasKitError(f"cannot read {name}: {error}") from None
