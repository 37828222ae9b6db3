"""run_scan: storing, skipping, failures, identity of runs, bad input."""

from __future__ import annotations

import sys

import pytest
import torch

from robustlab._constants import REPORT_FILENAME, STORE_FILENAME
from robustlab.errors import (
    InvalidParameterError,
    InvalidTypeError,
    ModelOutputError,
    OutputDirError,
    UnknownNameError,
)
from robustlab.scan import FailedJob, ResultsStore, build_probe, run_scan
from robustlab.scan.runner import job_seed
from scan_testkit import PredictInput, RecordingProbe, WrongOutput, linear_model, predicted_dataset, tabular_dataset


def _scan(tmp_path, probes, *, model=None, data=None, **kwargs):
    return run_scan(model if model is not None else linear_model(), data or tabular_dataset(), probes,
                    out_dir=tmp_path / "run", progress=False, **kwargs)


def test_scan_stores_every_job_and_second_call_skips_all(tmp_path):
    probe = RecordingProbe(num_jobs=3)
    summary = _scan(tmp_path, [build_probe("clean"), probe])
    assert (summary.jobs_run, summary.jobs_skipped, summary.failed) == (4, 0, ())
    assert summary.report_path == tmp_path / "run" / REPORT_FILENAME and summary.report_path.is_file()
    assert summary.store_path == tmp_path / "run" / STORE_FILENAME
    assert [h.probe for h in summary.headline][:2] == ["clean", "clean"]
    assert ("recording", "score[i=2]", 0.2) in summary.headline
    with ResultsStore(summary.store_path) as store:
        assert store.run(summary.run_id).status == "complete"
        assert len(store.jobs(summary.run_id)) == 4

    again = _scan(tmp_path, [build_probe("clean"), RecordingProbe(num_jobs=3)])
    assert again.run_id == summary.run_id
    assert (again.jobs_run, again.jobs_skipped) == (0, 4)
    assert again.headline == summary.headline


def test_job_generators_are_deterministic_and_distinct(tmp_path):
    a = _scan(tmp_path / "a", [RecordingProbe(num_jobs=3)], seed=5)
    b = _scan(tmp_path / "b", [RecordingProbe(num_jobs=3)], seed=5)

    def draws(summary):
        with ResultsStore(summary.store_path) as store:
            return [r.value for r in store.results(summary.run_id) if r.metric == "draw"]

    assert draws(a) == draws(b)
    assert len(set(draws(a))) == 3
    assert job_seed(5, "recording", '{"i":0}') != job_seed(6, "recording", '{"i":0}')
    expected = float(torch.rand((), generator=torch.Generator().manual_seed(job_seed(5, "recording", '{"i":1}'))))
    assert draws(a)[1] == expected


def test_identity_weights_data_and_seed_not_descriptions(tmp_path):
    base = _scan(tmp_path, [RecordingProbe(num_jobs=1)], model_info={"name": "x", "source": "trained"})
    same = _scan(tmp_path, [RecordingProbe(num_jobs=1)], model_info={"name": "x", "source": "cache"})
    assert same.run_id == base.run_id and same.jobs_skipped == 1
    others = [
        _scan(tmp_path, [RecordingProbe(num_jobs=1)], model=linear_model(seed=1)),
        _scan(tmp_path, [RecordingProbe(num_jobs=1)], data=tabular_dataset(seed=1)),
        _scan(tmp_path, [RecordingProbe(num_jobs=1)], seed=1),
    ]
    ids = {base.run_id, *(o.run_id for o in others)}
    assert len(ids) == 4
    assert all(o.jobs_skipped == 0 for o in others)


def test_more_probes_extend_the_run_and_changed_settings_recompute(tmp_path):
    first = _scan(tmp_path, [RecordingProbe(num_jobs=1)])
    more = _scan(tmp_path, [RecordingProbe(num_jobs=1), build_probe("clean")])
    assert more.run_id == first.run_id
    assert (more.jobs_run, more.jobs_skipped) == (1, 1)  # only the new probe ran
    changed = RecordingProbe(num_jobs=2)
    again = _scan(tmp_path, [changed])
    assert again.run_id == first.run_id
    assert (again.jobs_run, again.jobs_skipped) == (2, 0) and changed.calls == [0, 1]
    with ResultsStore(again.store_path) as store:
        draws = [r for r in store.results(again.run_id) if r.metric == "draw"]
        probes = {r.probe for r in store.results(again.run_id)}
    assert len(draws) == 2  # the stale job's rows were replaced, not kept beside the new ones
    assert probes == {"recording", "clean"}  # a probe left out of a later scan stays in the run


def test_failing_job_is_recorded_and_scan_continues_then_resume_retries_it(tmp_path):
    probe = RecordingProbe(num_jobs=3, fail_jobs=(1,), message="bad <b>thing</b>\nsecond line")
    summary = _scan(tmp_path, [probe, build_probe("clean")])
    assert summary.failed == (FailedJob("recording", "i=1", "RuntimeError: bad <b>thing</b>"),)
    assert summary.jobs_run == 4
    with ResultsStore(summary.store_path) as store:
        assert store.run(summary.run_id).status == "incomplete"
        statuses = {(j.probe, j.job.get("i")): j.status for j in store.jobs(summary.run_id)}
        assert "Traceback" in next(j.traceback for j in store.jobs(summary.run_id) if j.status == "failed")
    assert statuses == {("recording", 0): "done", ("recording", 1): "failed", ("recording", 2): "done",
                        ("clean", None): "done"}
    html = summary.report_path.read_text()
    assert "bad &lt;b&gt;thing&lt;/b&gt;" in html

    fixed = RecordingProbe(num_jobs=3)
    again = _scan(tmp_path, [fixed, build_probe("clean")])
    assert fixed.calls == [1] and (again.jobs_run, again.jobs_skipped, again.failed) == (1, 3, ())
    with ResultsStore(again.store_path) as store:
        assert store.run(again.run_id).status == "complete"


def test_model_output_error_stops_the_scan_before_anything_is_stored(tmp_path):
    data = predicted_dataset([0, 1, 2], [0, 1, 2])
    with pytest.raises(ModelOutputError, match="3 columns") as info:
        _scan(tmp_path, [build_probe("clean")], model=WrongOutput(5), data=data)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_model_output_error_inside_a_probe_stops_the_scan(tmp_path):
    failing = RecordingProbe(name="first", num_jobs=2, fail_jobs=(0,), error=ModelOutputError,
                             message="The 'model output' must have shape (N, K).")
    later = RecordingProbe(name="later", num_jobs=1)
    with pytest.raises(ModelOutputError, match="must have shape"):
        _scan(tmp_path, [failing, later])
    assert failing.calls == [0] and later.calls == []
    with ResultsStore(tmp_path / "run") as store:
        (run,) = store.runs()
        assert run.status == "failed"
        assert [j.status for j in store.jobs(run.run_id)] == ["failed"]


def test_out_dir_under_a_file_is_output_dir_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="out_dir"):
        run_scan(linear_model(), tabular_dataset(), [build_probe("clean")], out_dir=blocker / "run")
    with pytest.raises(OutputDirError, match="which is a file"):
        run_scan(linear_model(), tabular_dataset(), [build_probe("clean")], out_dir=blocker)


def test_backends(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # make `import ray` fail even where Ray is installed
    with pytest.raises(InvalidParameterError, match=r"pip install 'robustlab\[ray\]'"):
        _scan(tmp_path, [build_probe("clean")], backend="ray")
    with pytest.raises(UnknownNameError, match="'local', 'ray'"):
        _scan(tmp_path, [build_probe("clean")], backend="dask")
    assert not (tmp_path / "run").exists()  # refused before any folder is made


@pytest.mark.parametrize("probes, error, match", [
    ([], InvalidTypeError, "non-empty list"),
    (["clean"], InvalidTypeError, "Probe objects"),
    ([RecordingProbe(), RecordingProbe()], InvalidParameterError, "distinct names"),
])
def test_bad_probe_lists(tmp_path, probes, error, match):
    with pytest.raises(error, match=match):
        _scan(tmp_path, probes)


def test_bad_jobs_from_a_probe(tmp_path):
    class Repeats(RecordingProbe):
        def jobs(self):
            return [{"i": 0}, {"i": 0}]

    with pytest.raises(InvalidParameterError, match="distinct job keys"):
        _scan(tmp_path, [Repeats()])


def test_descriptions_must_be_json(tmp_path):
    with pytest.raises(InvalidTypeError, match="model_info"):
        _scan(tmp_path, [build_probe("clean")], model_info={"weights": object()})
    with pytest.raises(InvalidTypeError, match="data_info"):
        _scan(tmp_path, [build_probe("clean")], data_info=["not", "a", "dict"])
    assert not (tmp_path / "run").exists()


def test_callable_model_needs_model_info(tmp_path):
    data = predicted_dataset([0, 1, 2], [0, 1, 2])
    net = PredictInput(3)
    with pytest.raises(InvalidParameterError, match="model_info"):
        _scan(tmp_path, [build_probe("clean")], model=lambda x: net(x), data=data)
    summary = _scan(tmp_path, [build_probe("clean")], model=lambda x: net(x), data=data,
                    model_info={"name": "remote"})
    assert summary.headline[0] == ("clean", "accuracy", 1.0)
