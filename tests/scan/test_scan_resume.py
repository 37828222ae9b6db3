"""A scan killed with SIGKILL resumes where it stopped: nothing lost, nothing run twice."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from scan_testkit import (
    SlowProbe,
    done_jobs,
    linear_model,
    run_and_kill,
    tabular_dataset,
)

from robustlab._constants import STORE_FILENAME
from robustlab.scan import ResultsStore, run_scan

NUM_JOBS = 10
DELAY = 0.3
KILL_AFTER = 3  # done jobs in the store before the kill

SCRIPT = """
import sys
sys.path.insert(0, {kit!r})
import scan_testkit as kit
from robustlab.scan import PROBES, build_probe, run_scan
PROBES.register("slow", kit.SlowProbe)
probe = build_probe("slow", num_jobs={n}, delay={delay}, log={log!r})
run_scan(kit.linear_model(), kit.tabular_dataset(), [probe], out_dir={out!r}, progress=False)
"""


def _start_and_kill(out: Path, log: Path) -> int:
    script = SCRIPT.format(kit=str(Path(__file__).parent), n=NUM_JOBS, delay=DELAY, log=str(log), out=str(out))
    return run_and_kill(script, lambda: done_jobs(out / STORE_FILENAME), after=KILL_AFTER, timeout=60)


def test_sigkill_then_resume_completes_without_loss_or_duplicates(tmp_path):
    out, log = tmp_path / "run", tmp_path / "calls.log"
    child = _start_and_kill(out, log)

    with ResultsStore(out) as store:
        (run,) = store.runs()
        stored_before = {j.job["i"] for j in store.jobs(run.run_id) if j.status == "done"}
    assert KILL_AFTER <= len(stored_before) < NUM_JOBS
    started_by_child = {int(i) for pid, i in (line.split() for line in log.read_text().splitlines())}
    # Each job is stored as soon as it ends: the kill loses at most the one job in progress.
    assert stored_before <= started_by_child and len(started_by_child - stored_before) <= 1

    summary = run_scan(linear_model(), tabular_dataset(),
                       [SlowProbe(num_jobs=NUM_JOBS, delay=DELAY, log=str(log))], out_dir=out, progress=False)
    assert summary.run_id == run.run_id
    assert (summary.jobs_skipped, summary.jobs_run) == (len(stored_before), NUM_JOBS - len(stored_before))

    with ResultsStore(out) as store:
        jobs = store.jobs(run.run_id)
        results = store.results(run.run_id)
        assert store.run(run.run_id).status == "complete"
    assert sorted(j.job["i"] for j in jobs) == list(range(NUM_JOBS))
    assert all(j.status == "done" for j in jobs)
    assert Counter(r.job["i"] for r in results) == {i: 1 for i in range(NUM_JOBS)}  # exactly once each
    # Values stored before the kill came from the child; the rest from this process.
    by_job = {r.job["i"]: int(r.value) for r in results}
    assert {i for i, pid in by_job.items() if pid == child} == stored_before
    assert {i for i, pid in by_job.items() if pid == os.getpid()} == set(range(NUM_JOBS)) - stored_before

    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    resumed = [i for pid, i in calls if pid == os.getpid()]
    assert sorted(resumed) == sorted(set(range(NUM_JOBS)) - stored_before)  # stored jobs never re-run
    assert summary.report_path.is_file()
    assert 'id="probe-slow"' in summary.report_path.read_text()
