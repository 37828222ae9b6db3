"""Sweeps: TOML validation, grid expansion, sweep == scans by hand, SIGKILL then resume (local backend)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import sweep_testkit as kit
from scan_testkit import run_and_kill

from robustlab import zoo
from robustlab.cli import main
from robustlab.errors import (
    DataFormatError,
    DataNotFoundError,
    InvalidParameterError,
    InvalidTypeError,
    UnknownNameError,
)
from robustlab.models import load_any
from robustlab.scan import ResultsStore, build_probe, run_scan
from robustlab.scan.runner import job_seed
from robustlab.scan.sweep import expand_sweep, load_sweep, parse_sweep, run_sweep

KIT_DIR = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return kit.save_models(tmp_path_factory.mktemp("models"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- validation
BAD = [
    ("seeds = [0, 0]", InvalidParameterError, "'seeds' parameter must be an array of distinct"),
    ("seeds = [-1]", InvalidParameterError, r"'seeds\[0\]' parameter"),
    ("seeds = 3", InvalidTypeError, "'seeds' parameter must be a non-empty array"),
    ("datasets = ['digits', 'no/such/file.npz']", DataNotFoundError, r"'datasets\[1\]' parameter"),
    ("modls = ['mlp']", InvalidParameterError, "'config' parameter .* unknown key 'modls'"),
    ("models = ['mlp', 'no-such-arch']", DataNotFoundError, r"'models\[1\].name' parameter"),
    ("[[models]]\nname = 'mlp'\n[[models]]\nname = 'mlp'\nepochs = 0", InvalidParameterError,
     r"'models\[1\].epochs' parameter must be an integer >= 1. Got 0"),
    ("[[models]]\nname = 'mlp'\nmethod = ['ce', 'nope']", UnknownNameError, r"'models\[0\].method\[1\]' parameter"),
    ("[[models]]\nname = 'mlp'\nlabel_noise = 'symm:0.2'", InvalidParameterError, r"'models\[0\].label_noise'"),
    ("[[models]]\nname = 'mlp'\nmethod = 'gce'\nmethod_params = { zz = 1 }", InvalidParameterError,
     r"'models\[0\].method_params' parameter .*'q'"),
    ("[[models]]\nname = 'mlp'\nlabel = 'a'\n[[models]]\nname = 'small-cnn'\nlabel = 'a'", InvalidParameterError,
     "distinct labels"),
    ("[probes.nope]", UnknownNameError, "'probes' parameter must be one of"),
    ("[probes.adversarial]\nsuite = 'nope'", UnknownNameError, "'probes.adversarial.suite' parameter"),
    ("[probes.adversarial]\nfoo = 1", InvalidParameterError, "'probes.adversarial' parameter .*unknown setting 'foo'"),
    ("[probes.adversarial.grid]\nsuite = ['fast', 'nope']", UnknownNameError,
     "'probes.adversarial.grid.suite' parameter"),
    ("[probes.adversarial.grid]\nsuite = 'fast'", InvalidTypeError, "'probes.adversarial.grid.suite' parameter"),
    ("[probes.adversarial]\nsuite = 'fast'\n[probes.adversarial.grid]\nsuite = ['fast']", InvalidParameterError,
     "'probes.adversarial.grid.suite' parameter must be left out"),
    ("backend = 'spark'", UnknownNameError, "'backend' parameter"),
]


@pytest.mark.parametrize(("text", "error", "match"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_config_fails_in_one_line_naming_the_key(tmp_path, text, error, match):
    with pytest.raises(error, match=match) as info:
        load_sweep(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_saved_model_refuses_training_keys(tmp_path, models):
    with pytest.raises(InvalidParameterError, match=r"'models\[0\].method' parameter must be left out"):
        parse_sweep({"models": [{"name": str(models[0]), "method": "gce"}]})


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"'config' parameter must be a valid TOML file.*line 2"):
        load_sweep(_write(tmp_path, "seeds = [0]\nmodels = [1 2]\n"))
    with pytest.raises(DataNotFoundError, match="'config' parameter"):
        load_sweep(tmp_path / "missing.toml")


def test_cli_errors_exit_2_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "[probes.adversarial]\nsuite = 'nope'")
    assert main(["scan", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustlab: error: The 'probes.adversarial.suite' parameter") and "\n" not in err
    assert main(["scan", "--config", str(path), "--model", "mlp"]) == 2
    assert "--model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a bad config


# --------------------------------------------------------------------------- expansion
def test_expansion_is_the_product_in_order(tmp_path, models):
    config = parse_sweep({
        "seeds": [0, 1],
        "datasets": ["wine", "digits"],
        "models": [str(models[0]), {"name": "mlp", "method": ["ce", "gce"], "label_noise": ["none", "pair:0.2"]}],
        "probes": {"clean": {}, "draws": {"num_jobs": 2, "grid": {"scale": [1.0, 2.0, 3.0]}},
                   "adversarial": {"suite": "fast", "grid": {"num_examples": [10, 20]}}},
    })
    assert [m.label for m in config.models] == ["net0", "mlp-ce-clean", "mlp-ce-pair0.2", "mlp-gce-clean",
                                                "mlp-gce-pair0.2"]
    assert [m.cached for m in config.models] == [False, True, False, False, False]
    runs = expand_sweep(config)
    assert len(runs) == 5 * 2 * 2 * 3 * 2
    first = runs[0]
    assert (first.model.label, first.data, first.seed) == ("net0", "wine", 0)
    # probes in the report's order (clean, adversarial, then others), grids in that order too
    assert first.grid == {"adversarial.num_examples": 10, "draws.scale": 1.0}
    assert [p.name for p in first.probes] == ["clean", "adversarial", "draws"]
    assert first.probes[1].params == {"suite": "fast", "num_examples": 10}
    assert first.probes[2].params == {"num_jobs": 2, "scale": 1.0}
    assert first.folder == "net0-wine-seed0-adversarial.num_examples=10,draws.scale=1.0"
    assert first.label == "net0 · wine · seed0 · adversarial.num_examples=10,draws.scale=1.0"
    assert [r.grid["draws.scale"] for r in runs[:6]] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert [r.grid["adversarial.num_examples"] for r in runs[:6]] == [10, 10, 10, 20, 20, 20]
    assert [(r.data, r.seed) for r in runs[::6][:4]] == [("wine", 0), ("wine", 1), ("digits", 0), ("digits", 1)]
    assert len({r.folder for r in runs}) == len(runs)


def test_defaults_one_run_per_model_with_every_probe():
    from robustlab.scan import PROBES

    runs = expand_sweep(parse_sweep({"models": ["mlp", "small-cnn"]}))
    assert [(r.label, r.folder, r.data, r.seed) for r in runs] == [
        ("mlp", "mlp-digits-seed0", "digits", 0), ("small-cnn", "small-cnn-digits-seed0", "digits", 0)]
    assert {p.name for p in runs[0].probes} == set(PROBES.names())


# --------------------------------------------------------------------------- running
CONFIG = """
seeds = [0, 1]
datasets = ["wine"]
models = [{models}]
[probes.clean]
[probes.draws]
num_jobs = {num_jobs}
delay = {delay}
log = {log!r}
"""


def test_sweep_equals_each_scan_by_hand(tmp_path, models):
    path = _write(tmp_path, CONFIG.format(models=", ".join(repr(str(m)) for m in models), num_jobs=3, delay=0.0,
                                          log=""))
    summary = run_sweep(path, out=tmp_path / "sweep", progress=False)
    assert [r.folder for r, _ in summary.runs] == ["net0-wine-seed0", "net0-wine-seed1", "net1-wine-seed0",
                                                   "net1-wine-seed1"]
    assert summary.comparison == tmp_path / "sweep" / "compare.html"
    page = summary.comparison.read_text()
    assert all(f"{m} · seed{s}" in page for m in ("net0", "net1") for s in (0, 1))
    _, test = zoo.load_splits("wine")
    for run, scan in summary.runs:
        assert scan.jobs_run == 4 and not scan.failed
        by_hand = run_scan(load_any(run.model.name), test, [build_probe("clean"), kit.DrawProbe(num_jobs=3)],
                           out_dir=tmp_path / "hand" / run.folder, seed=run.seed, progress=False)
        expected = kit.stored(by_hand.out_dir)
        assert len(expected) > 6 and kit.same_values(kit.stored(scan.out_dir), expected)
    # the seed matters (else this test could not tell runs apart)
    assert kit.stored(summary.runs[0][1].out_dir) != kit.stored(summary.runs[1][1].out_dir)
    again = run_sweep(path, out=tmp_path / "sweep", progress=False)
    assert all(s.jobs_run == 0 and s.jobs_skipped == 4 for _, s in again.runs)


# --------------------------------------------------------------------------- SIGKILL, then resume
NUM_JOBS = 4
KILL_AFTER = 3

DRIVER = """
import sys
sys.path.insert(0, {kit!r})
import sweep_testkit
from robustlab.cli import main
sys.exit(main({argv!r}))
"""


def start_and_kill(argv: list[str], out: Path) -> None:
    """Run ``robustlab <argv>`` in a subprocess; SIGKILL it once KILL_AFTER jobs are stored."""
    run_and_kill(DRIVER.format(kit=KIT_DIR, argv=argv), lambda: kit.done_jobs(out), after=KILL_AFTER, timeout=120)


def check_killed_then_resumed(tmp_path: Path, models: list[Path], *, backend: str,
                              address: str | None = None) -> None:
    """Kill a sweep mid-way, resume it; every job once, values equal to an uninterrupted sweep."""
    out, log = tmp_path / "sweep", tmp_path / "started.log"
    path = _write(tmp_path, CONFIG.format(models=repr(str(models[0])), num_jobs=NUM_JOBS, delay=0.4, log=str(log)))
    argv = ["scan", "--config", str(path), "--out", str(out), "--backend", backend]
    start_and_kill(argv + (["--address", address] if address else []), out)
    if backend == "ray":
        time.sleep(1.5)  # Ray stops the dead driver's tasks; none may start after the log is read

    folders = ["net0-wine-seed0", "net0-wine-seed1"]
    seeds = {f: s for f, s in zip(folders, (0, 1))}
    before: set[int] = set()  # job generator seeds of the jobs stored before the kill
    for folder in folders:
        if (out / folder / "results.sqlite").exists():
            with ResultsStore(out / folder) as store:
                (run,) = store.runs()
                before |= {job_seed(seeds[folder], j.probe, _key(j.job)) for j in store.jobs(run.run_id)
                           if j.status == "done" and j.probe == "draws"}
    assert kit.done_jobs(out) < 2 * (NUM_JOBS + 1)  # killed mid-way, not after the end
    started_before = log.read_text().split() if log.exists() else []

    summary = run_sweep(path, out=out, backend=backend, progress=False)
    assert sum(s.jobs_skipped for _, s in summary.runs) >= KILL_AFTER
    assert sum(s.jobs_run + s.jobs_skipped for _, s in summary.runs) == 2 * (NUM_JOBS + 1)
    resumed = [int(x) for x in log.read_text().split()[len(started_before):]]
    assert not before & set(resumed)  # stored jobs never run again
    assert Counter(resumed) == Counter(set(resumed))  # and each remaining job ran once

    # delay and log are not part of the probe's identity: the reference runs without them
    ref_path = tmp_path / "reference.toml"
    ref_path.write_text(CONFIG.format(models=repr(str(models[0])), num_jobs=NUM_JOBS, delay=0.0, log=""))
    reference = run_sweep(ref_path, out=tmp_path / "reference", backend="local", progress=False)
    for (run, scan), (_, ref) in zip(summary.runs, reference.runs):
        rows = kit.job_rows(scan.out_dir)
        assert Counter((p, k) for p, k, _ in rows) == Counter({(p, k) for p, k, _ in rows})
        assert len(rows) == NUM_JOBS + 1 and all(status == "done" for *_, status in rows)
        assert kit.same_values(kit.stored(scan.out_dir), kit.stored(ref.out_dir))
        with ResultsStore(scan.out_dir) as store:
            assert store.run().status == "complete"
    assert summary.comparison is not None and summary.comparison.is_file()


def _key(job: dict) -> str:
    from robustlab.scan.probe import canonical_json

    return canonical_json(job)


def test_sigkill_then_resume_local(tmp_path, models):
    check_killed_then_resumed(tmp_path, models, backend="local")


def test_example_config_is_valid():
    runs = expand_sweep(load_sweep(Path(__file__).parents[2] / "examples" / "sweep.toml"))
    assert [r.label for r in runs] == ["small-cnn", "mlp", "cnn-noisy-ce", "cnn-noisy-gce"]
    assert [m.label_noise for m in (r.model for r in runs)] == [None, None, "symmetric:0.3", "symmetric:0.3"]
    assert runs[0].probes[-1].params["eps"] == {"linf": [0.05, 0.1, 0.2]}
