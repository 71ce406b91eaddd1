"""A study's results: the trials table (from the Optuna storage, the source of truth), the
Pareto front with latency re-measured alone, hypervolume, and the files of ``results/<name>/``."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import _io, layout
from ._errors import AutodistillError, CheckpointError
from ._storage import Outage, is_connection_error, quiet_lost_connections, retrying, write_ahead
from .config import LatencyConfig, StudyConfig
from .constraints import feasible
from .pareto import as_minimization, hypervolume, non_dominated_mask
from .report import MIN_IMPORTANCE_TRIALS, pyplot, write_html, write_png
from .tasks import Task, curve_attr, get_task

RUN_COLUMNS = ["epochs_done", "study_epochs", "train_s", "steps_s", "trial_s", "fail_reason"]
"""the columns of trials.csv after the task's metrics, whatever the task"""


def rdb_storage(url: str, retry_s: float | None = None, log: Callable[[str], None] = print, *, writer: bool = False):
    """Optuna storage for a SQLAlchemy URL. SQLite waits up to a minute for a lock instead of
    Python's 5 s: optuna-dashboard or a script reading the study while trials are written
    must not make the driver fail with "database is locked", nor a reader that opens a new study
    file at the moment the driver creates it. A storage server (PostgreSQL, MySQL) is pinged
    before each pooled connection is reused and, with ``retry_s``, every call that cannot reach
    it is retried for up to that long (:mod:`autodistill._storage`). ``writer``: the study's
    driver, which writes a SQLite file in write-ahead-log mode until
    :func:`autodistill._storage.end_write_ahead`."""
    import optuna
    import sqlalchemy.exc

    quiet_lost_connections()  # whether or not calls are retried, the error says what was lost
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True, "connect_args": _libpq_timeouts(url)}
    server = bool(retry_s) and not sqlite
    outage = Outage(url, retry_s or 0.0, log)
    races = 0
    while True:
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if writer:
                write_ahead(storage)  # a SQLite file; nothing for a server
            outage.over()
            return retrying(storage, url, retry_s, log) if server else storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
            if server and is_connection_error(err):  # the server is not there (yet): the same bounded wait as later calls
                outage.wait(err)
                continue
            # another process (a reader, the dashboard) created the schema at the same moment:
            # the loser's INSERT of the schema version fails; the schema is there on the retry
            races += 1
            if races == 5:
                raise
            time.sleep(0.2 * races)


LIBPQ_TIMEOUTS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 30_000}
"""libpq's limits on a PostgreSQL connection that hangs rather than fails (a server host that
went away, a network that drops packets): the connect gives up after 10 s, and a connection
that stops answering is found dead within about 30 s, so every storage call ends in an error
the retry of :mod:`autodistill._storage` counts, never in a wait without end."""


def _libpq_timeouts(url: str) -> dict[str, int]:
    """:data:`LIBPQ_TIMEOUTS` for a PostgreSQL URL whose driver is built on libpq (psycopg,
    psycopg2), less the options the URL sets itself (``?connect_timeout=30`` wins); none for
    another database or driver."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        return {}
    return {key: value for key, value in LIBPQ_TIMEOUTS.items() if key not in parsed.query}


def open_study(
    storage: str,
    name: str,
    directions: list[str] | None = None,
    sampler=None,
    retry_s: float | None = None,
    log: Callable[[str], None] = print,
    *,
    writer: bool = False,
):
    """Create or load the Optuna study. Directions must agree with an existing study's.
    ``retry_s``: how long calls to a storage server that cannot be reached are retried;
    ``writer``: see :func:`rdb_storage`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, storage = storage, rdb_storage(storage, retry_s, log, writer=writer)
    if directions is None:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except KeyError:
            raise AutodistillError(f"no Optuna study named {name!r} in {url}") from None
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=["maximize" if d == "max" else "minimize" for d in directions],
        sampler=sampler,
        load_if_exists=True,
    )
    existing = ["max" if d.name == "MAXIMIZE" else "min" for d in study.directions]
    if existing != list(directions):
        raise AutodistillError(
            f"study {name!r} in {url} has objective directions {existing}, this config asks {list(directions)}; use another name or results directory"
        )
    return study


def storage_url(config: StudyConfig) -> str:
    """The study's SQLAlchemy URL. A plain ``postgresql://`` means psycopg2 to SQLAlchemy; where
    only psycopg 3 is installed (the ``postgres`` extra), it means psycopg 3."""
    url = config.execution.storage or f"sqlite:///{layout.study_db(config.results_dir).resolve()}"
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def trials_frame(study, task: Task) -> pd.DataFrame:
    """One row per Optuna trial: state, the task's metrics, timings, sampled parameters (``param.<name>``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for key in (*task.recorded_metrics, "train_s", "steps_s", "trial_s", "worker_rss_mb"):
            row[key] = attrs.get(key, np.nan)
        for key in task.optional_metrics:  # e.g. an int8 student's accuracy before quantization
            if key in attrs:
                row[key] = attrs[key]
        row["epochs_done"] = len(attrs.get(curve_attr(task.quality), []))
        row["study_epochs"] = attrs.get("study_epochs", np.nan)  # student-epochs the study had spent when it ended
        row["fail_reason"] = attrs.get("fail_reason", "")
        row["node"] = attrs.get("node", "")  # the Ray node the trial ran on
        row["interrupted"] = bool(attrs.get("interrupted", False))  # retried by resume, not counted
        row["continues"] = attrs.get("continues", np.nan)  # the interrupted trial this one continued
        row["restarts"] = int(attrs.get("restarts", 0))  # times Ray restarted its worker (killed, node lost)
        row["restarted_from_epoch"] = attrs.get("restarted_from_epoch", np.nan)  # the epoch checkpoint the last restart continued from
        row["started"] = t.datetime_start
        row["finished"] = t.datetime_complete
        for key, value in t.params.items():
            row[f"param.{key}"] = value
        rows.append(row)
    columns = ["number", "state", *task.recorded_metrics, *RUN_COLUMNS]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    for key in ("continues", "restarted_from_epoch"):
        frame[key] = frame[key].astype("Int64")
    first = [c for c in columns if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def front_mask(frame: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    names = list(objectives)
    values = frame[names].to_numpy(dtype=float)
    return non_dominated_mask(as_minimization(values, [objectives[m] for m in names]))


COST_REFERENCE = 2.0
"""Reference point of the normalised hypervolume in each cost objective, in teacher units: a
student that costs more than twice the teacher adds nothing."""


def normalized_hypervolume(frame: pd.DataFrame, objectives: dict[str, str], teacher: dict[str, float]) -> float:
    """Hypervolume of the front in normalised units, divided by that of the whole box so it
    lies in [0, 1]. Units: a maximised objective is a score in [0, 1] (accuracy), counted as
    its error 1 - score; a minimised one (a cost) is divided by the teacher's. The reference
    point is error 1 and :data:`COST_REFERENCE` times the teacher's cost; 1.0 would be a
    perfect, free student."""
    if frame.empty:
        return 0.0
    cols, ref = [], []
    for metric in objectives:
        values = frame[metric].to_numpy(dtype=float)
        if objectives[metric] == "max":
            cols.append(1.0 - values)
            ref.append(1.0)
        else:
            cols.append(values / teacher[metric])
            ref.append(COST_REFERENCE)
    return hypervolume(np.stack(cols, axis=1), ref) / float(np.prod(ref))


def hypervolume_history(trials: pd.DataFrame, objectives: dict[str, str], teacher: dict[str, float]) -> list[dict[str, Any]]:
    """Normalised hypervolume of the completed (feasible) trials' front after each
    completion, in the order trials finished (in-trial latency: the front is re-measured only
    at the end)."""
    complete = trials[(trials["state"] == "COMPLETE") & trials.get("feasible", True)]
    if complete.empty or complete["finished"].isna().all():
        return []
    complete = complete.sort_values("finished")
    start = pd.to_datetime(trials["started"]).min()
    out = []
    for k in range(1, len(complete) + 1):
        seen = complete.iloc[:k]
        row = seen.iloc[-1]
        out.append(
            {
                "trial": int(row["number"]),
                "complete": k,
                "minutes": (pd.to_datetime(row["finished"]) - start).total_seconds() / 60,
                "study_epochs": None if pd.isna(row.get("study_epochs")) else int(row["study_epochs"]),
                "hypervolume": normalized_hypervolume(seen[front_mask(seen, objectives)], objectives, teacher),
            }
        )
    return out


def warm_report() -> None:
    """Import, in a background thread, the libraries :func:`finalize` loads after the last
    trial: scikit-learn's forest (fANOVA importances) and matplotlib, seconds of CPU on a small
    machine that would otherwise follow the last trial. The runner calls it when a slot stands
    idle while the last trials run; :func:`finalize` imports whatever is not in yet (an import
    under way is waited for, not repeated)."""

    def run() -> None:
        with contextlib.suppress(Exception):  # the report's own imports say what is wrong
            import optuna.importance  # noqa: F401

            pyplot()

    thread = threading.Thread(target=run, name="autodistill-warm-report", daemon=True)
    thread.start()
    _warming.append(thread)


_warming: list[threading.Thread] = []


def _report_warmed() -> None:
    """Wait for :func:`warm_report`'s imports: a thread importing in this process takes the
    interpreter from the latency runs that follow."""
    while _warming:
        _warming.pop().join()


def param_importances(study, objectives: dict[str, str]) -> dict[str, dict[str, float]]:
    """Optuna's fANOVA importance of each searched parameter for each objective, over the
    completed trials; empty with fewer than :data:`MIN_IMPORTANCE_TRIALS` or when nothing varied."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return {}
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    out = {}
    for i, metric in enumerate(objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # fANOVA is experimental in Optuna, not deprecated
                values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):  # e.g. no parameter took two values
            continue
        if values:
            out[metric] = {name: float(v) for name, v in values.items()}
    return out


def _parquet_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: sampled categorical parameters mix strings and
    numbers across trials, so object columns are written as strings."""
    frame = trials.copy()
    for col in frame.columns:
        if frame[col].dtype == object and col not in ("started", "finished"):
            frame[col] = frame[col].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return frame


def remeasure_front(frame: pd.DataFrame, results_dir: Path, latency: LatencyConfig, task: Task, log: Callable[[str], None] = print) -> pd.DataFrame:
    """The latency metrics of each front member measured again, one network at a time, with
    nothing else running (``latency.final_repeats`` runs). Members with the same network (the
    same spec: family, shape, compression) share one measurement: their latency differs only
    by noise, which would otherwise keep a less accurate copy on the front for a luckier draw.
    The in-trial figure of each is kept as ``<metric>_in_trial``, the spread as
    ``<metric>_p10`` / ``_p90``."""
    frame = frame.copy()
    for metric in task.latency_metrics:
        frame[f"{metric}_in_trial"] = frame[metric]
        for col in (f"{metric}_p10", f"{metric}_p90"):
            frame[col] = np.nan
    unreadable = []
    by_network: dict[str, dict[str, float]] = {}
    for i, row in frame.iterrows():
        path = layout.trial_dir(results_dir, int(row["number"]))
        try:
            model, spec = task.load_student(path)
        except CheckpointError as err:  # a front member must be exportable: leave it out, say why
            log(f"trial {int(row['number'])} left out of the front: {err}")
            unreadable.append(i)
            continue
        network = json.dumps(spec, sort_keys=True, default=str)
        if network not in by_network:
            by_network[network] = task.measure_latency(model, spec, latency, latency.final_repeats)
        measured = by_network[network]
        frame.loc[i, list(measured)] = list(measured.values())
        for col, text in task.describe_student(spec).items():
            frame.loc[i, col] = text
        frame.loc[i, "checkpoint"] = str(path / layout.STUDENT)
    frame = frame.drop(index=unreadable)
    shared = f"; {len(by_network)} distinct networks, each measured once" if len(by_network) < len(frame) else ""
    log(f"re-measured the latency of {len(frame)} front member(s) alone ({latency.final_repeats} runs each{shared})")
    return frame


def finalize(
    config: StudyConfig,
    study,
    teacher: dict[str, Any],
    log: Callable[[str], None] = print,
    remeasure: bool = True,
    measured: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write trials.csv, pareto.csv, pareto.png, report.html and study.json; return the summary.
    ``measured`` is called once the front's latency is re-measured (or at once, when it is
    not): the runner shuts Ray down then, not while the latency runs."""
    results_dir = config.results_dir
    task = get_task(config.task)
    objectives = config.objectives
    trials = trials_frame(study, task)
    if config.constraints and len(trials):  # only feasible completed trials make the front
        trials["feasible"] = feasible(trials, config.constraints) & (trials["state"] == "COMPLETE")
    _io.write_text(results_dir / layout.TRIALS_CSV, trials.to_csv(index=False))
    _io.atomic_write(results_dir / layout.TRIALS_PARQUET, lambda fh: _parquet_frame(trials).to_parquet(fh, index=False))
    complete = trials[(trials["state"] == "COMPLETE") & trials.get("feasible", True)].reset_index(drop=True)
    front = complete[front_mask(complete, objectives)] if len(complete) else complete
    if remeasure and len(front) and set(task.latency_metrics) <= set(front.columns):
        _report_warmed()
        front = _remeasured_front(front, complete, results_dir, config, task, log)
    if measured is not None:
        measured()
    front = front.sort_values(list(objectives)[0], ascending=objectives[list(objectives)[0]] == "min")
    _io.write_text(results_dir / layout.PARETO_CSV, front.to_csv(index=False))
    hv = normalized_hypervolume(front, objectives, teacher["metrics"])
    own = trials[~trials["interrupted"].astype(bool)] if len(trials) else trials
    counts = own["state"].value_counts().to_dict() if len(own) else {}
    summary = {
        "name": config.name,
        "objectives": objectives,
        "trials": {
            **{state: int(counts.get(state, 0)) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "INTERRUPTED": int(len(trials) - len(own)),
        },
        "front": [int(n) for n in front["number"]],
        "hypervolume": hv,
        "hypervolume_history": hypervolume_history(trials, objectives, teacher["metrics"]),
        "importances": param_importances(study, objectives),
        "teacher": teacher,
    }
    write_png(results_dir / layout.PARETO_PNG, complete, front, objectives, teacher)
    write_html(results_dir / layout.REPORT_HTML, config, trials, front, study, summary)
    return summary


def _remeasured_front(
    front: pd.DataFrame, complete: pd.DataFrame, results_dir: Path, config: StudyConfig, task: Task, log: Callable[[str], None]
) -> pd.DataFrame:
    """The front by the re-measured latency (:func:`remeasure_front`): members whose checkpoint
    cannot be read are replaced by whoever is on the front without them; members that the
    re-measured figures dominate leave it, and the log names them."""
    objectives = config.objectives
    measured = remeasure_front(front, results_dir, config.latency, task, log)
    while len(measured) < len(front):  # unreadable checkpoints left out: who is on the front now?
        complete = complete[~complete["number"].isin(set(front["number"]) - set(measured["number"]))]
        front = complete[front_mask(complete, objectives)] if len(complete) else complete
        measured = remeasure_front(front, results_dir, config.latency, task, log)
    if not len(measured):
        return measured
    kept = front_mask(measured, objectives)
    if not kept.all():
        left = ", ".join(str(int(n)) for n in measured.loc[~kept, "number"])
        log(f"left the front once re-measured (another member is as good or better on every objective): trial(s) {left}")
    return measured[kept]


def read_study_file(results_dir: str | Path, name: str) -> Path:
    path = Path(results_dir) / name
    if not Path(results_dir).is_dir():
        raise AutodistillError(f"{results_dir}: no such results directory")
    if not path.exists():
        raise AutodistillError(f"{path}: not found (has the study finished at least one trial?)")
    return path


def load_trials(results_dir: str | Path) -> pd.DataFrame:
    """The trials table of a study (``trials.csv``) as a DataFrame."""
    return pd.read_csv(read_study_file(results_dir, layout.TRIALS_CSV))


def load_front(results_dir: str | Path) -> pd.DataFrame:
    """The Pareto front of a study (``pareto.csv``, re-measured latency) as a DataFrame."""
    return pd.read_csv(read_study_file(results_dir, layout.PARETO_CSV))


def load_summary(results_dir: str | Path) -> dict[str, Any]:
    return json.loads(read_study_file(results_dir, layout.STUDY_JSON).read_text())
