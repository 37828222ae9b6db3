"""The results store: one SQLite file per run folder (stdlib ``sqlite3``).

Durability
----------
The file is in WAL mode with ``synchronous=FULL``. Every job's rows, figures, tables and its
``done`` status are written in ONE transaction, so a job is either fully stored or absent. WAL with
``synchronous=NORMAL`` already survives a killed process (committed pages sit in the WAL file,
which the next connection replays); ``FULL`` also fsyncs the WAL at each commit, so a power cut or
OS crash cannot roll back a job the runner reported as stored. Commits happen once per job, which
takes seconds to minutes, so the extra fsync costs nothing measurable.

Identity
--------
A run is identified by its *key config* (model and data fingerprints and seed) in canonical JSON;
scanning the same config into the same folder reuses the run, so finished jobs are skipped. Job
keys are canonical JSON too, so equal settings always match, and a probe's settings are stored with
it: when they change, that probe's jobs are dropped and run again (:meth:`ResultsStore.add_probe`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from robustlab._checks import check_choice, check_writable_dir, fail
from robustlab._constants import STORE_FILENAME, STORE_SCHEMA_VERSION, STORE_TIMEOUT_S
from robustlab.errors import DataFormatError, DataNotFoundError, OutputDirError
from robustlab.scan.probe import ProbeResult, canonical_json, json_text

__all__ = [
    "ResultsStore",
    "RunRecord",
    "ProbeRecord",
    "JobRecord",
    "ResultRecord",
    "FigureRecord",
    "TableRecord",
    "store_path",
]

logger = logging.getLogger("robustlab.scan")

JOB_STATUSES = ("done", "failed")
RUN_STATUSES = ("running", "complete", "incomplete", "failed")

_SCHEMA = """
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL,
    model_json  TEXT NOT NULL,
    data_json   TEXT NOT NULL,
    config_json TEXT NOT NULL,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL
);
CREATE TABLE probes (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    probe       TEXT NOT NULL,
    title       TEXT NOT NULL,
    params_json TEXT NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (run_id, probe)
);
CREATE TABLE jobs (
    run_id    TEXT NOT NULL REFERENCES runs(run_id),
    probe     TEXT NOT NULL,
    job_key   TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    started   TEXT,
    finished  TEXT NOT NULL,
    seconds   REAL,
    summary   TEXT NOT NULL DEFAULT '',
    error     TEXT,
    traceback TEXT,
    PRIMARY KEY (run_id, probe, job_key)
);
CREATE TABLE results (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    probe       TEXT NOT NULL,
    job_key     TEXT NOT NULL,
    metric      TEXT NOT NULL,
    params_json TEXT NOT NULL,
    value       REAL,
    unit        TEXT NOT NULL,
    headline    INTEGER NOT NULL,
    UNIQUE (run_id, probe, job_key, metric, params_json)
);
CREATE TABLE figures (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs(run_id),
    probe   TEXT NOT NULL,
    job_key TEXT NOT NULL,
    name    TEXT NOT NULL,
    title   TEXT NOT NULL,
    svg     TEXT NOT NULL,
    UNIQUE (run_id, probe, job_key, name)
);
CREATE TABLE tables (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs(run_id),
    probe        TEXT NOT NULL,
    job_key      TEXT NOT NULL,
    name         TEXT NOT NULL,
    title        TEXT NOT NULL,
    columns_json TEXT NOT NULL,
    rows_json    TEXT NOT NULL,
    UNIQUE (run_id, probe, job_key, name)
);
CREATE INDEX results_by_run ON results (run_id, probe);
"""

_JOB_TABLES = ("results", "figures", "tables")


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class RunRecord:
    """One scan run: its descriptions, key config, robustlab version and status."""

    run_id: str
    created: str
    updated: str
    model: dict[str, Any]
    data: dict[str, Any]
    config: dict[str, Any]
    version: str
    status: str


@dataclass(frozen=True)
class ProbeRecord:
    """A probe registered for a run, with its settings and its position in the scan."""

    probe: str
    title: str
    params: dict[str, Any]
    position: int


@dataclass(frozen=True)
class JobRecord:
    """A stored job: ``status`` is ``"done"`` or ``"failed"`` (then ``error`` holds one line)."""

    probe: str
    job: dict[str, Any]
    status: str
    started: str | None
    finished: str
    seconds: float | None
    summary: str
    error: str | None
    traceback: str | None


@dataclass(frozen=True)
class ResultRecord:
    """One stored value; ``value`` is ``nan`` where the probe reported an undefined value."""

    probe: str
    job: dict[str, Any]
    metric: str
    params: dict[str, Any]
    value: float
    unit: str
    headline: bool


@dataclass(frozen=True)
class FigureRecord:
    probe: str
    job: dict[str, Any]
    name: str
    title: str
    svg: str


@dataclass(frozen=True)
class TableRecord:
    probe: str
    job: dict[str, Any]
    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


# --------------------------------------------------------------------------- helpers
def store_path(path: str | os.PathLike[str]) -> Path:
    """The database file for ``path``: ``path / results.sqlite`` for a folder, else ``path`` itself.

    A path that does not exist yet is a folder unless it has a suffix (``run/x.sqlite``).
    """
    p = Path(path)
    is_folder = p.is_dir() or (not p.exists() and not p.suffix)
    return p / STORE_FILENAME if is_folder else p


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _robustlab_version() -> str:
    from robustlab import __version__

    return __version__


def _store_error(path: Path, exc: sqlite3.Error) -> Exception:
    """One-line RobustlabError for an SQLite failure the user can fix (bad file, no write access)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        if isinstance(exc, sqlite3.OperationalError):
            fail("path", "a results store that can be opened and written", f"{str(path)!r} ({text})",
                 error=OutputDirError, describe_got=False)
        fail("path", "a robustlab results store (SQLite database)", f"{str(path)!r} ({text})",
             error=DataFormatError, describe_got=False)
    except (OutputDirError, DataFormatError) as err:
        return err


def _job_key(job: Mapping[str, Any] | str) -> str:
    return job if isinstance(job, str) else canonical_json(dict(job), name="job")


def _float(value: float | None) -> float:
    # SQLite stores NaN as NULL; read it back as the NaN the probe reported.
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------- the store
class ResultsStore:
    """SQLite results store of a run folder.

    Parameters
    ----------
    path : path-like
        A run folder (the file is ``results.sqlite`` inside it) or the database file itself.
    create : bool, default True
        Create the file if missing; with ``False`` a missing file raises
        :class:`~robustlab.errors.DataNotFoundError` (the report never creates an empty store).

    Examples
    --------
    >>> with ResultsStore(tmp_dir) as store:                        # doctest: +SKIP
    ...     run_id = store.start_run({"model": "...", "data": "...", "probes": {}, "seed": 0})
    ...     store.write_job(run_id, "clean", {}, result, seconds=0.1)
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = store_path(path)
        if not create and not self.path.is_file():
            fail("path", "a run folder holding a results store", f"{str(self.path)!r}, which does not exist",
                 error=DataNotFoundError, describe_got=False)
        if create:
            check_writable_dir("path", self.path.parent)
        self._con: sqlite3.Connection | None = None
        self.open()

    # ---------------------------------------------------------------- open / close
    def open(self) -> ResultsStore:
        """Connect, switch to WAL and create or check the schema (idempotent)."""
        if self._con is not None:
            return self
        try:
            con = sqlite3.connect(self.path, timeout=STORE_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        try:
            self._configure(con)
            self._init_schema(con)
        except sqlite3.Error as exc:
            con.close()
            raise _store_error(self.path, exc) from None
        except BaseException:
            con.close()
            raise
        self._con = con
        return self

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> ResultsStore:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @staticmethod
    def _configure(con: sqlite3.Connection) -> None:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a file system without shared memory support
            logger.warning("results store could not switch to WAL mode (got %s)", mode)
        con.execute("PRAGMA synchronous=FULL")
        con.execute(f"PRAGMA busy_timeout={int(STORE_TIMEOUT_S * 1000)}")
        con.execute("PRAGMA foreign_keys=ON")

    def _init_schema(self, con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == STORE_SCHEMA_VERSION:
            return
        if version > STORE_SCHEMA_VERSION:
            fail("path", f"a results store of schema version <= {STORE_SCHEMA_VERSION} (written by a newer "
                 "robustlab; upgrade robustlab)", f"{str(self.path)!r} (version {version})",
                 error=DataFormatError, describe_got=False)
        tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        if tables:
            fail("path", "a robustlab results store", f"{str(self.path)!r}, an SQLite database of "
                 "another program", error=DataFormatError, describe_got=False)
        # executescript commits on its own; BEGIN/COMMIT inside keeps schema + version atomic.
        con.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={STORE_SCHEMA_VERSION};COMMIT;")

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            fail("store", "an open ResultsStore (use it inside 'with ResultsStore(path) as store')",
                 "a closed store", describe_got=False)
        return self._con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls the whole block back."""
        con = self._db
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None
        try:
            yield con
        except BaseException:
            con.rollback()
            raise
        try:
            con.commit()
        except sqlite3.Error as exc:
            con.rollback()
            raise _store_error(self.path, exc) from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except sqlite3.OperationalError as exc:
            raise _store_error(self.path, exc) from None

    # ---------------------------------------------------------------- runs
    def start_run(self, key_config: Mapping[str, Any], *, model_info: Mapping[str, Any] | None = None,
                  data_info: Mapping[str, Any] | None = None) -> str:
        """Return the run of ``key_config``, creating it unless this store already holds it.

        Parameters
        ----------
        key_config : dict
            JSON-serialisable identity of the scan (model and data fingerprints, seed). The
            same config reuses the same run.
        model_info, data_info : dict, optional
            Descriptions shown in the report; kept from the run's creation when it is reused.

        Returns
        -------
        str
            The run id, ``"<UTC time>-<first 8 hex digits of the config hash>"``.
        """
        key_json = canonical_json(dict(key_config), name="key_config")
        # Descriptions keep the caller's key order (the report shows them as given).
        model_json = json_text(dict(model_info or {}), name="model_info")
        data_json = json_text(dict(data_info or {}), name="data_info")
        key_hash = hashlib.sha256(key_json.encode("utf-8")).hexdigest()
        now = _now()
        with self._transaction() as con:
            row = con.execute("SELECT run_id FROM runs WHERE key_hash = ?", (key_hash,)).fetchone()
            if row is not None:
                con.execute("UPDATE runs SET status = 'running', updated = ? WHERE run_id = ?", (now, row[0]))
                logger.info("resuming run %s in %s", row[0], self.path)
                return str(row[0])
            run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{key_hash[:8]}"
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                        (run_id, key_hash, now, now, model_json, data_json, key_json, _robustlab_version()))
        logger.info("new run %s in %s", run_id, self.path)
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        """Set the run's status: ``"complete"``, ``"incomplete"`` (failed jobs) or ``"failed"``."""
        check_choice("status", status, RUN_STATUSES)
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = ?, updated = ? WHERE run_id = ?", (status, _now(), run_id))

    def add_probe(self, run_id: str, probe: str, *, title: str, params: Mapping[str, Any],
                  position: int) -> None:
        """Record that ``probe`` (with ``params``) belongs to the run, at ``position`` in the scan.

        A probe's settings are part of its jobs' identity: when ``params`` differ from those
        stored for this probe, its stored jobs, results, figures and tables are dropped (in the
        same transaction) so they are computed again with the new settings, never reused stale.
        """
        params_json = canonical_json(dict(params), name="params")
        with self._transaction() as con:
            row = con.execute("SELECT params_json FROM probes WHERE run_id = ? AND probe = ?",
                              (run_id, probe)).fetchone()
            if row is not None and row[0] != params_json:
                logger.info("probe %s: settings changed; its stored jobs will run again", probe)
                for table in ("jobs", *_JOB_TABLES):
                    con.execute(f"DELETE FROM {table} WHERE run_id = ? AND probe = ?", (run_id, probe))
            con.execute(
                "INSERT INTO probes VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, probe) DO UPDATE SET "
                "title = excluded.title, params_json = excluded.params_json, position = excluded.position",
                (run_id, probe, title, params_json, position))

    # ---------------------------------------------------------------- jobs
    def is_done(self, run_id: str, probe: str, job_key: Mapping[str, Any] | str) -> bool:
        """Whether the job is stored as done (failed jobs are not done: they run again)."""
        with self._reading() as con:
            row = con.execute("SELECT status FROM jobs WHERE run_id = ? AND probe = ? AND job_key = ?",
                              (run_id, probe, _job_key(job_key))).fetchone()
        return row is not None and row[0] == "done"

    def write_job(self, run_id: str, probe: str, job_key: Mapping[str, Any] | str, result: ProbeResult,
                  *, seconds: float, started: str | None = None) -> None:
        """Store a finished job: its rows, figures, tables and ``done`` status in ONE transaction.

        Anything stored earlier for the same job is replaced, so a job is never duplicated.
        """
        if not isinstance(result, ProbeResult):
            fail("result", "a ProbeResult", result)
        key = _job_key(job_key)
        with self._transaction() as con:
            self._clear_job(con, run_id, probe, key)
            self._insert_results(con, run_id, probe, key, result)
            self._insert_figures(con, run_id, probe, key, result)
            self._insert_tables(con, run_id, probe, key, result)
            con.execute("INSERT INTO jobs VALUES (?, ?, ?, 'done', ?, ?, ?, ?, NULL, NULL)",
                        (run_id, probe, key, started, _now(), seconds, result.summary))

    def fail_job(self, run_id: str, probe: str, job_key: Mapping[str, Any] | str, error: str, *,
                 seconds: float | None = None, started: str | None = None, traceback: str | None = None) -> None:
        """Store a job as failed with its one-line ``error``; it will run again on resume."""
        key = _job_key(job_key)
        with self._transaction() as con:
            self._clear_job(con, run_id, probe, key)
            con.execute("INSERT INTO jobs VALUES (?, ?, ?, 'failed', ?, ?, ?, '', ?, ?)",
                        (run_id, probe, key, started, _now(), seconds, error, traceback))

    @staticmethod
    def _clear_job(con: sqlite3.Connection, run_id: str, probe: str, key: str) -> None:
        for table in (*_JOB_TABLES, "jobs"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ? AND probe = ? AND job_key = ?",
                        (run_id, probe, key))

    @staticmethod
    def _insert_results(con: sqlite3.Connection, run_id: str, probe: str, key: str,
                        result: ProbeResult) -> None:
        con.executemany(
            "INSERT INTO results (run_id, probe, job_key, metric, params_json, value, unit, headline) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, probe, key, r.metric, canonical_json(r.params), r.value, r.unit, int(r.headline))
             for r in result.rows])

    @staticmethod
    def _insert_figures(con: sqlite3.Connection, run_id: str, probe: str, key: str,
                        result: ProbeResult) -> None:
        con.executemany(
            "INSERT INTO figures (run_id, probe, job_key, name, title, svg) VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, probe, key, f.name, f.title, f.svg) for f in result.figures])

    @staticmethod
    def _insert_tables(con: sqlite3.Connection, run_id: str, probe: str, key: str,
                       result: ProbeResult) -> None:
        con.executemany(
            "INSERT INTO tables (run_id, probe, job_key, name, title, columns_json, rows_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, probe, key, t.name, t.title, json.dumps(t.columns), json.dumps(t.rows))
             for t in result.tables])

    # ---------------------------------------------------------------- readers
    def runs(self) -> list[RunRecord]:
        """Every run in the store, oldest first."""
        with self._reading() as con:
            rows = con.execute("SELECT run_id, created, updated, model_json, data_json, config_json, version, "
                               "status FROM runs ORDER BY created, rowid").fetchall()
        return [RunRecord(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), json.loads(r[5]), r[6], r[7])
                for r in rows]

    def run(self, run_id: str | None = None) -> RunRecord:
        """One run; ``None`` means the most recently created. Unknown ids list the valid ones."""
        runs = self.runs()
        if not runs:
            fail("path", "a results store holding at least one run", f"{str(self.path)!r}, which holds none",
                 error=DataFormatError, describe_got=False)
        if run_id is None:
            return runs[-1]
        check_choice("run_id", run_id, [r.run_id for r in runs])
        return next(r for r in runs if r.run_id == run_id)

    def probes(self, run_id: str) -> list[ProbeRecord]:
        """Probes registered for the run, in scan order."""
        with self._reading() as con:
            rows = con.execute("SELECT probe, title, params_json, position FROM probes WHERE run_id = ? "
                               "ORDER BY position, probe", (run_id,)).fetchall()
        return [ProbeRecord(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def jobs(self, run_id: str) -> list[JobRecord]:
        """Stored jobs (done and failed) of the run."""
        with self._reading() as con:
            rows = con.execute("SELECT probe, job_key, status, started, finished, seconds, summary, error, "
                               "traceback FROM jobs WHERE run_id = ? ORDER BY finished, rowid",
                               (run_id,)).fetchall()
        return [JobRecord(r[0], json.loads(r[1]), *r[2:]) for r in rows]

    def results(self, run_id: str) -> list[ResultRecord]:
        """Every stored value of the run, in the order it was written."""
        with self._reading() as con:
            rows = con.execute("SELECT probe, job_key, metric, params_json, value, unit, headline FROM results "
                               "WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [ResultRecord(r[0], json.loads(r[1]), r[2], json.loads(r[3]), _float(r[4]), r[5], bool(r[6]))
                for r in rows]

    def figures(self, run_id: str) -> list[FigureRecord]:
        with self._reading() as con:
            rows = con.execute("SELECT probe, job_key, name, title, svg FROM figures WHERE run_id = ? "
                               "ORDER BY id", (run_id,)).fetchall()
        return [FigureRecord(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]

    def tables(self, run_id: str) -> list[TableRecord]:
        with self._reading() as con:
            rows = con.execute("SELECT probe, job_key, name, title, columns_json, rows_json FROM tables "
                               "WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [TableRecord(r[0], json.loads(r[1]), r[2], r[3], tuple(json.loads(r[4])),
                            tuple(tuple(row) for row in json.loads(r[5]))) for r in rows]
