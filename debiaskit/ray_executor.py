"""`--executor ray`: the rows of `compare` and `sweep` (cells: a method, or a sweep's setting) scored on a Ray actor
pool instead of one after another.

An actor holds one model replica: it loads the model once, checks every cell's method against it, builds the
`Comparer` (the prompts, the neutral and gendered texts and their baseline log-probabilities, the controls) and
scores the baseline, which every row on it is measured against; the driver loads no model. Each model of a run has
actors of its own, no more at once than the cluster has CPUs (and GPUs) for, so a model may wait for room; a cell
goes to whichever actor of its model is free, and each finished row comes back at once (`on_result`, which writes
the run directory, so `--resume` finishes a Ray compare as it does a local one). A row is computed by the same
`Comparer.run` as locally, so it equals the local row up to the float rounding of a different thread count.

An actor whose process dies mid-cell is restarted by Ray and the cell is retried once (`max_task_retries`); a cell
that kills its worker twice becomes a failed row, as a cell that raises does. Plugins from `--plugins-dir` reach the
workers as a Ray runtime-environment module, so a cluster on other machines loads them too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaskit.benchmark_sets import BenchmarkSets
from debiaskit.compare import BASELINE, Comparer, Comparison, MethodRun, failed_run
from debiaskit.data import OccupationSet, TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.professions import Profession

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Bench:
    """What a worker builds its `Comparer` from: the model to load and every setting but the methods."""

    model: str
    device: str
    dtype: str
    occupations: OccupationSet
    family: TemplateFamily
    comparer_settings: Mapping[str, Any] = field(default_factory=dict)  # Comparer's keyword arguments
    professions: Sequence[Profession] = ()
    benchmarks: BenchmarkSets | None = None


@dataclass(frozen=True)
class Pool:
    """Where the cells run: `address` '' starts Ray on this machine, 'auto' or 'ray://host:port' joins a cluster;
    `workers` actors (model replicas), each on `gpus_per_worker` GPUs (a fraction puts several on one GPU)."""

    address: str = ""
    workers: int = 1
    gpus_per_worker: float = 0.0
    plugins_dir: Path | None = None


@contextlib.contextmanager
def ray_session(pool: Pool) -> Iterator[Any]:
    """Ray, started (or joined) for the commands inside, with the plugins folder shipped to every worker, and shut
    down after them; inside a session that is already running (a caller that started Ray itself), that one is used
    and left running. Ray's own output, and the workers' logs it relays, go to stderr: stdout is for results."""
    try:
        import ray
    except ImportError:
        raise DebiasKitError("--executor ray needs Ray: pip install 'ray>=2.9' (or install debiaskit[ray])") from None
    with contextlib.redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield ray
            return
        runtime_env: dict[str, Any] = {}
        if pool.plugins_dir is not None:
            runtime_env["py_modules"] = [str(pool.plugins_dir.resolve())]
        if "DEBIASKIT_SHARED_DATA" in os.environ:
            runtime_env["env_vars"] = {"DEBIASKIT_SHARED_DATA": os.environ["DEBIASKIT_SHARED_DATA"]}
        ray.init(address=pool.address or None, runtime_env=runtime_env or None, include_dashboard=False,
                 configure_logging=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def worker_plugins_dir(plugins_dir: Path | None) -> Path | None:
    """The plugins folder as this worker sees it: the driver's path when this machine has it, else the copy Ray
    unpacked from the runtime environment."""
    if plugins_dir is None or plugins_dir.is_dir():
        return plugins_dir
    spec = importlib.util.find_spec(plugins_dir.name)
    if spec is None or not spec.submodule_search_locations:
        raise DebiasKitError(f"the plugins folder {plugins_dir} reached neither this worker's disk nor its runtime "
                             "environment")
    return Path(next(iter(spec.submodule_search_locations)))


class CellWorker:
    """One model replica: its Comparer, with the baseline scored, once the model loaded and every cell's method
    checked against it (`check_methods`). Made a Ray actor by `run_on_ray`."""

    def __init__(self, bench: Bench, plugins_dir: Path | None, cells: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        from debiaskit.commands.support import method_class
        from debiaskit.compare import check_methods
        from debiaskit.model import load_model
        from debiaskit.plugin_host import load_plugins

        self.problem = ""  # bad input found here, said by the driver as a usage error
        try:
            self.host = load_plugins(worker_plugins_dir(plugins_dir))
            lm = load_model(bench.model, device=bench.device, dtype=bench.dtype)
            check_methods(lm, [(name, method_class(self.host, name), given) for name, given in cells])
        except DebiasKitError as error:
            self.problem = str(error)
            return
        self.comparer = Comparer(lm, bench.occupations, bench.family, professions=bench.professions,
                                 benchmarks=bench.benchmarks, **bench.comparer_settings)
        self.baseline_run = self.comparer.run(BASELINE, self.host.methods.get("method", BASELINE), {})

    def shell(self) -> tuple[str, Comparison | None, MethodRun | None]:
        """What was wrong with the model or a method ('' when nothing), the comparison's header fields (no rows) and
        the baseline's run."""
        if self.problem:
            return self.problem, None, None
        comparison = self.comparer.comparison
        return "", Comparison(**{**comparison.__dict__, "runs": []}), self.baseline_run

    def score(self, name: str, given: Mapping[str, Any]) -> MethodRun:
        from debiaskit.commands.support import method_class

        run = self.comparer.run(name, method_class(self.host, name), given)
        self.comparer.comparison.runs.clear()  # the driver keeps the rows; the actor keeps only its baseline
        return run


@dataclass(frozen=True)
class ModelWork:
    """One model's cells: its `Bench`, the cells (row name, options), what hears of each finished row, the rows
    already finished (a resumed run's), and what hears the comparison's header (the device the workers resolved)
    before any row is kept; it may raise a DebiasKitError, which ends the run."""

    bench: Bench
    cells: Sequence[tuple[str, Mapping[str, Any]]]
    on_result: Callable[[Comparison, MethodRun], None] | None = None
    finished: Sequence[MethodRun] = ()
    on_start: Callable[[Comparison], None] | None = None


def run_on_ray(work: Sequence[ModelWork], pool: Pool) -> list[Comparison]:
    """Score each model's cells on up to `pool.workers` actors holding that model, every cell going to the first
    free actor of its model; one comparison per model, its rows in the order of its cells, the baseline first (a
    sweep's cells may share a row name: its settings). A row name among `finished` keeps its results and is not run
    again. No more actors run at once than the cluster has CPUs (and GPUs, with `gpus_per_worker`) for: a model
    waits for free room, and a model whose cells are done gives its room back."""
    with ray_session(pool) as ray:
        return _run_cells(ray, work, pool)


def actor_room(ray: Any, pool: Pool) -> int:
    """How many actors the cluster holds at once: one CPU each, and `gpus_per_worker` GPUs each when above 0."""
    resources = ray.cluster_resources()
    room = int(resources.get("CPU", 1))
    if pool.gpus_per_worker > 0:
        room = min(room, int(resources.get("GPU", 0) / pool.gpus_per_worker + 1e-9))
        if room < 1:
            raise DebiasKitError(f"--gpus-per-worker {pool.gpus_per_worker:g}: the Ray cluster has "
                                 f"{resources.get('GPU', 0):g} GPU(s); pass a smaller share or 0 (CPU only)")
    return max(1, room)


def _run_cells(ray: Any, work: Sequence[ModelWork], pool: Pool) -> list[Comparison]:
    from ray.exceptions import RayActorError, RayError

    worker_class = ray.remote(num_cpus=1, num_gpus=pool.gpus_per_worker, max_restarts=1,
                              max_task_retries=1)(CellWorker)
    models = [_ModelQueue(part) for part in work]
    waiting, room = deque(models), actor_room(ray, pool)
    pending: dict[Any, tuple[_ModelQueue, int | None, str, Any]] = {}  # result -> (model, cell or None, name, actor)
    while True:
        while waiting and room > 0:  # a model starts when there is room for at least one of its actors
            model = waiting.popleft()
            room -= model.start(worker_class, pool, room)
            pending[model.pending_shell] = (model, None, BASELINE, None)
        for model in models:
            while model.idle and model.to_score:
                actor = model.idle.pop()
                index, name, given = model.to_score.popleft()
                pending[actor.score.remote(name, dict(given))] = (model, index, name, actor)
        if not pending:
            return [model.comparison for model in models]
        [ready], _ = ray.wait(list(pending), num_returns=1)
        model, index, name, actor = pending.pop(ready)
        if index is None:
            try:
                model.begin(ray.get(ready))
            except RayError as error:  # its process died loading the model or scoring the baseline
                raise DebiasKitError(f"the Ray worker for {model.work.bench.model} could not start: {error}") from None
        else:
            model.idle.append(actor)
            try:
                model.add(index, ray.get(ready))
            except RayActorError as error:  # its worker died twice on this cell (Ray restarted it and retried once)
                model.add(index, failed_run(name, f"the Ray worker scoring {name} died twice: {error}"))
            except RayError as error:  # raised outside Comparer.run, which contains a method's own errors
                model.add(index, failed_run(name, f"the Ray worker could not score {name}: {error}"))
        if model.begun and not model.to_score and all(entry[0] is not model for entry in pending.values()):
            room += model.stop(ray)


class _ModelQueue:
    """One model's side of `_run_cells`: its actors, the cells still to score, and its comparison so far."""

    def __init__(self, work: ModelWork) -> None:
        self.work = work
        done = {run.row["method"]: run for run in work.finished}
        self.baseline_done = done.get(BASELINE)
        self.scored = {index: done[name] for index, (name, _) in enumerate(work.cells)
                       if name in done and name != BASELINE}
        self.to_score = deque((index, name, given) for index, (name, given) in enumerate(work.cells)
                              if name != BASELINE and index not in self.scored)
        self.actors: list[Any] = []
        self.idle: list[Any] = []  # actors free for a cell: none until the first actor's baseline is back
        self.begun = False

    def start(self, worker_class: Any, pool: Pool, room: int) -> int:
        """Start up to `pool.workers` actors (no more than `room` and than the cells need) and ask the first for the
        comparison's header and the baseline; how many started."""
        count = max(1, min(pool.workers, len(self.to_score), room))
        self.actors = [worker_class.remote(self.work.bench, pool.plugins_dir, self.work.cells) for _ in range(count)]
        self.pending_shell = self.actors[0].shell.remote()
        return count

    def begin(self, shell: tuple[str, Comparison | None, MethodRun | None]) -> None:
        """Take the comparison's header and the baseline's row from the first actor; a problem it found with the
        model or a method is a DebiasKitError, before any of this model's cells runs."""
        problem, comparison, baseline = shell
        if problem or comparison is None or baseline is None:
            raise DebiasKitError(problem)
        if self.work.on_start is not None:
            self.work.on_start(comparison)
        self.comparison, self.baseline = comparison, self.baseline_done or baseline
        self.begun, self.idle = True, list(self.actors)
        self.add(None, self.baseline)

    def add(self, index: int | None, run: MethodRun) -> None:
        """Keep `run` (cell `index`; None for the baseline), the rows in the order of the cells, and hand them on."""
        if index is not None:
            self.scored[index] = run
        self.comparison.runs[:] = [self.baseline, *(self.scored[kept] for kept in sorted(self.scored))]
        if self.work.on_result is not None:
            self.work.on_result(self.comparison, run)

    def stop(self, ray: Any) -> int:
        """End this model's actors (its cells are done), so another model's can start; how many there were."""
        for actor in self.actors:
            ray.kill(actor)
        count, self.actors, self.idle = len(self.actors), [], []
        return count
