"""The SQLite results store: round trip, one transaction per job, run identity, bad files."""

from __future__ import annotations

import math
import sqlite3

import pytest

from robustlab._constants import STORE_FILENAME, STORE_SCHEMA_VERSION
from robustlab.errors import DataFormatError, DataNotFoundError, OutputDirError, UnknownNameError
from robustlab.scan import Figure, ProbeResult, ResultRow, ResultsStore, Table

SVG = '<svg xmlns="http://www.w3.org/2000/svg"><rect id="r" width="1" height="1"/></svg>'
KEY = {"model": "m" * 64, "data": "d" * 64, "probes": {"p": {"k": 1}}, "seed": 0}


def _result(scale: float = 1.0) -> ProbeResult:
    return ProbeResult(
        rows=(ResultRow("acc", 0.5 * scale, headline=True),
              ResultRow("acc", 0.25 * scale, params={"eps": 0.03, "norm": "linf"}, unit=""),
              ResultRow("undefined", float("nan"), params={"class": "x"}),
              ResultRow("time", 2.0, unit="ms")),
        figures=(Figure("fig", "A figure", SVG),),
        tables=(Table("tab", "A table", ("class", "n"), (("a", 1), ("b", None))),),
        summary="all good",
    )


@pytest.fixture()
def store(tmp_path):
    with ResultsStore(tmp_path) as s:
        yield s


def test_round_trip(store, tmp_path):
    assert store.path == tmp_path / STORE_FILENAME
    run_id = store.start_run(KEY, model_info={"name": "net", "z": 1, "a": 2}, data_info={"name": "toy"})
    store.add_probe(run_id, "p", title="Probe P", params={"k": 1}, position=0)
    assert not store.is_done(run_id, "p", {"eps": 0.03})
    store.write_job(run_id, "p", {"eps": 0.03}, _result(), seconds=1.5, started="2024-01-01T00:00:00+00:00")
    assert store.is_done(run_id, "p", {"eps": 0.03})
    assert store.is_done(run_id, "p", '{"eps":0.03}')  # canonical JSON key matches the dict

    (run,) = store.runs()
    assert run.run_id == run_id and run.status == "running" and run.config == KEY
    assert list(run.model) == ["name", "z", "a"]  # descriptions keep the caller's order
    results = store.results(run_id)
    assert [(r.metric, r.params, r.unit, r.headline) for r in results] == [
        ("acc", {}, "", True), ("acc", {"eps": 0.03, "norm": "linf"}, "", False),
        ("undefined", {"class": "x"}, "", False), ("time", {}, "ms", False)]
    assert [r.value for r in results][:2] == [0.5, 0.25] and math.isnan(results[2].value)
    assert all(r.job == {"eps": 0.03} for r in results)
    (fig,) = store.figures(run_id)
    assert (fig.probe, fig.name, fig.title, fig.svg) == ("p", "fig", "A figure", SVG)
    (tab,) = store.tables(run_id)
    assert tab.columns == ("class", "n") and tab.rows == (("a", 1), ("b", None))
    (job,) = store.jobs(run_id)
    assert (job.status, job.seconds, job.summary, job.error, job.started) == (
        "done", 1.5, "all good", None, "2024-01-01T00:00:00+00:00")
    (probe,) = store.probes(run_id)
    assert (probe.probe, probe.title, probe.params, probe.position) == ("p", "Probe P", {"k": 1}, 0)


def test_pragmas_wal_full_and_schema_version(store):
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION
    finally:
        con.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_job_is_written_in_one_transaction(store, monkeypatch):
    run_id = store.start_run(KEY)

    def broken(*args, **kwargs):
        raise RuntimeError("disk vanished mid-write")

    monkeypatch.setattr(ResultsStore, "_insert_tables", staticmethod(broken))
    with pytest.raises(RuntimeError, match="mid-write"):
        store.write_job(run_id, "p", {}, _result(), seconds=1.0)
    # Results and figures were inserted before the failure: the rollback must remove them too.
    assert store.results(run_id) == [] and store.figures(run_id) == [] and store.jobs(run_id) == []
    assert not store.is_done(run_id, "p", {})
    monkeypatch.undo()
    store.write_job(run_id, "p", {}, _result(), seconds=1.0)
    assert len(store.results(run_id)) == 4 and store.is_done(run_id, "p", {})


def test_rewriting_a_job_replaces_it(store):
    run_id = store.start_run(KEY)
    store.fail_job(run_id, "p", {}, "RuntimeError: boom", seconds=0.1, traceback="tb")
    (job,) = store.jobs(run_id)
    assert (job.status, job.error, job.traceback) == ("failed", "RuntimeError: boom", "tb")
    assert not store.is_done(run_id, "p", {})
    store.write_job(run_id, "p", {}, _result(), seconds=1.0)
    store.write_job(run_id, "p", {}, _result(scale=2.0), seconds=1.0)
    (job,) = store.jobs(run_id)
    assert job.status == "done" and job.error is None
    assert [r.value for r in store.results(run_id) if r.metric == "acc"] == [1.0, 0.5]
    assert len(store.figures(run_id)) == 1 and len(store.tables(run_id)) == 1


def test_same_config_reuses_run_different_config_starts_new(tmp_path):
    with ResultsStore(tmp_path) as store:
        first = store.start_run(KEY, model_info={"source": "trained"})
        store.finish_run(first, "complete")
    with ResultsStore(tmp_path) as store:  # a new process/connection, same folder
        again = store.start_run(dict(reversed(list(KEY.items()))), model_info={"source": "cache"})
        other = store.start_run({**KEY, "seed": 1})
        assert again == first and other != first
        assert [r.run_id for r in store.runs()] == [first, other]
        assert store.run(first).status == "running"  # reused run is running again
        assert store.run(first).model == {"source": "trained"}  # description kept from creation
        assert store.run().run_id == other
        with pytest.raises(UnknownNameError, match=first):
            store.run("nope")


def test_not_a_database_is_one_line_data_format_error(tmp_path):
    path = tmp_path / STORE_FILENAME
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataFormatError, match="results store") as info:
        ResultsStore(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_foreign_and_newer_databases_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(DataFormatError, match="another program"):
        ResultsStore(foreign)
    newer = tmp_path / "newer.sqlite"
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(DataFormatError, match="newer robustlab"):
        ResultsStore(newer)


def test_unwritable_location_is_output_dir_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target in (blocker / "sub" / STORE_FILENAME, blocker / "sub"):
        with pytest.raises(OutputDirError, match="'path' parameter must be a folder") as info:
            ResultsStore(target)
        assert "\n" not in str(info.value)


def test_new_folder_is_created(tmp_path):
    with ResultsStore(tmp_path / "new" / "run") as store:
        assert store.path == tmp_path / "new" / "run" / STORE_FILENAME
    assert store.path.is_file()


def test_missing_store_without_create(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ResultsStore(tmp_path, create=False)
    assert not (tmp_path / STORE_FILENAME).exists()
