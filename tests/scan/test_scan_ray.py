"""The Ray backend: same stored values as local, SIGKILL of the driver then resume, on a local Ray.

One local Ray (2 CPUs, no dashboard) is started for the whole module. Skipped only where Ray
cannot be imported (it is in the 'test' extra, so CI has it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'robustlab[ray]')")

import sweep_testkit as kit
from test_scan_sweep import CONFIG, check_killed_then_resumed

from robustlab import zoo
from robustlab.errors import InvalidParameterError
from robustlab.models import load_any
from robustlab.scan import build_probe, run_scan
from robustlab.scan.sweep import run_sweep

KIT_DIR = str(Path(__file__).parent)
# One Ray for the module even under pytest-xdist when run with --dist loadgroup.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for this module; its workers can import the test kit (PYTHONPATH)."""
    if ray.is_initialized():
        pytest.fail("Ray was already initialised in the test process")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (KIT_DIR, os.environ.get("PYTHONPATH")) if p))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return kit.save_models(tmp_path_factory.mktemp("models"))


def _probes():
    return [build_probe("clean"), build_probe("corruptions", severities=[1, 3], summary=False),
            kit.DrawProbe(num_jobs=4)]


def test_ray_stores_the_same_values_as_local(tmp_path, cluster, models):
    model = load_any(models[0])
    _, test = zoo.load_splits(kit.DATA)
    local = run_scan(model, test, _probes(), out_dir=tmp_path / "local", seed=3, progress=False)
    remote = run_scan(model, test, _probes(), out_dir=tmp_path / "ray", seed=3, backend="ray", progress=False)
    assert remote.jobs_run == local.jobs_run and not remote.failed and not local.failed
    expected = kit.stored(local.out_dir)
    assert len(expected) > 20 and kit.same_values(kit.stored(remote.out_dir), expected)
    # the jobs really ran in Ray workers, not in this process
    from robustlab.scan import ResultsStore

    with ResultsStore(remote.out_dir) as store:
        pids = {r.value for r in store.results(store.run().run_id) if r.metric == "pid"}
    assert pids and os.getpid() not in pids


def test_ray_sweep_equals_local_sweep(tmp_path, cluster, models):
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG.format(models=", ".join(repr(str(m)) for m in models), num_jobs=3, delay=0.0, log=""))
    remote = run_sweep(path, out=tmp_path / "ray", backend="ray", address=cluster, progress=False)
    local = run_sweep(path, out=tmp_path / "local", progress=False)
    assert len(remote.runs) == len(local.runs) == 4
    for (_, r), (_, s) in zip(remote.runs, local.runs):
        assert kit.same_values(kit.stored(r.out_dir), kit.stored(s.out_dir))


def test_sigkill_then_resume_ray(tmp_path, cluster, models):
    # the killed driver is a separate process connected to this module's Ray by its address
    check_killed_then_resumed(tmp_path, models, backend="ray", address=cluster)


def test_another_address_while_connected_is_refused(tmp_path, cluster, models):
    _, test = zoo.load_splits(kit.DATA)
    with pytest.raises(InvalidParameterError, match="'address' parameter must be the cluster Ray is already"):
        run_scan(load_any(models[0]), test, [kit.DrawProbe(num_jobs=1)], out_dir=tmp_path / "o", backend="ray",
                 address="127.0.0.1:1", progress=False)
