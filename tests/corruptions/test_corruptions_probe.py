"""The `corruptions` scan probe on tiny models: jobs, rows, the summary job, tabular data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.corruptions import (
    IMAGE_CORRUPTIONS,
    MNIST_C_CORRUPTIONS,
    TABULAR_CORRUPTIONS,
)
from robustlab.data import Dataset
from robustlab.errors import InvalidParameterError, UnknownNameError
from robustlab.scan import PROBES, build_probe, run_scan


class MeanBrightness(nn.Module):
    """Class 1 when the image's mean is above 0.5 (tabular: the first feature above 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1) if x.ndim == 4 else x[:, 0]
        return torch.stack([0.5 - m, m - 0.5], 1) * 20


@pytest.fixture(scope="module")
def images() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=g) * 0.6 + torch.linspace(0, 0.4, 24).view(-1, 1, 1, 1)
    return Dataset(x, (x.mean(dim=(1, 2, 3)) > 0.5).long(), name="toy-images")


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_registered_and_jobs() -> None:
    assert "corruptions" in PROBES
    probe = build_probe("corruptions")
    jobs = probe.jobs()
    assert [j["corruption"] for j in jobs if j["family"] == "image"] == list(IMAGE_CORRUPTIONS)
    assert [j["corruption"] for j in jobs if j["family"] == "tabular"] == list(TABULAR_CORRUPTIONS)
    assert jobs[-1] == {"family": "all", "corruption": "all"}
    with_mnist = build_probe("corruptions", mnist_c=True, summary=False).jobs()
    assert [j["corruption"] for j in with_mnist if j["family"] == "mnist_c"] == list(MNIST_C_CORRUPTIONS)
    assert all(j["family"] != "all" for j in with_mnist)


def test_rows_and_summary_reproduce_each_other(images: Dataset) -> None:
    probe = build_probe("corruptions", corruptions=["gaussian_noise", "brightness"], severities=[1, 5])
    model = MeanBrightness()
    per_job = {}
    for job in probe.jobs():
        if job["family"] == "image":
            result = probe.run(model, images, job=job, generator=_g())
            rows = {(r.metric, r.params.get("severity")): r.value for r in result.rows}
            assert set(rows) == {("accuracy", 1), ("accuracy", 5), ("corruption_error", None)}
            assert rows[("corruption_error", None)] == pytest.approx(1 - (rows[("accuracy", 1)]
                                                                          + rows[("accuracy", 5)]) / 2)
            per_job[job["corruption"]] = [rows[("accuracy", 1)], rows[("accuracy", 5)]]
        elif job["family"] == "tabular":
            assert probe.run(model, images, job=job, generator=_g()).rows == ()
    # brightness pushes every image over the threshold: severity 5 hurts more than severity 1
    assert per_job["brightness"][1] <= per_job["brightness"][0] < 1.0
    summary = probe.run(model, images, job={"family": "all", "corruption": "all"}, generator=_g())
    table = {row[0]: row[1:3] for row in summary.tables[0].rows}
    for name, accs in per_job.items():  # the summary job recomputes exactly the same cells
        assert list(table[name]) == pytest.approx(accs, abs=1e-6)
    values = {r.metric: r.value for r in summary.rows}
    assert values["mean_corruption_error"] == pytest.approx(1 - np.mean(list(per_job.values())))
    assert values["clean_accuracy"] == 1.0
    assert "mce" not in values  # no AlexNet normalisation off ImageNet
    assert summary.figures[0].name == "accuracy_heatmap" and summary.figures[0].svg.startswith("<svg")
    assert any(r.headline for r in summary.rows)


def test_tabular_data() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 4, generator=g)
    x[:, 3] = torch.randint(0, 3, (60,), generator=g).float()
    data = Dataset(x, (x[:, 0] > 0.5).long())
    probe = build_probe("corruptions", categorical=[3], severities=[1, 5])
    image_job = probe.run(MeanBrightness(), data, job={"family": "image", "corruption": "fog"}, generator=_g())
    assert image_job.rows == () and "not applicable" in image_job.summary
    noise = probe.run(MeanBrightness(), data, job={"family": "tabular", "corruption": "feature_shuffle"},
                      generator=_g())
    accs = [r.value for r in noise.rows if r.metric == "accuracy"]
    assert len(accs) == 2 and accs[1] <= accs[0]
    summary = probe.run(MeanBrightness(), data, job={"family": "all", "corruption": "all"}, generator=_g())
    assert [row[0] for row in summary.tables[0].rows] == list(TABULAR_CORRUPTIONS)


def test_in_a_scan(images: Dataset, tmp_path: Path) -> None:
    probe = build_probe("corruptions", corruptions=["contrast"], severities=[2], tabular_corruptions=[])
    summary = run_scan(MeanBrightness(), images, [probe], out_dir=tmp_path, progress=False,
                       model_info={"name": "mean-brightness"})
    assert not summary.failed
    html = (tmp_path / "report.html").read_text()
    assert "mean_corruption_error" in html and "Accuracy under image corruptions" in html


def test_bad_settings() -> None:
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        build_probe("corruptions", corruptions=["rain"])
    with pytest.raises(InvalidParameterError, match="severities"):
        build_probe("corruptions", severities=[6])
    with pytest.raises(UnknownNameError, match="cifar"):
        build_probe("corruptions", preset="huge")


class Shifted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1) + self.shift
        return torch.stack([0.5 - m, m - 0.5], 1) * 20


def test_summary_does_not_reuse_results_of_a_changed_model(images: Dataset) -> None:
    probe = build_probe("corruptions", corruptions=["contrast"], severities=[1], tabular_corruptions=[])
    model = Shifted()
    probe.run(model, images, job={"family": "image", "corruption": "contrast"}, generator=_g())
    with torch.no_grad():
        model.shift.add_(0.3)  # in place: predictions change
    stale = probe.run(model, images, job={"family": "all", "corruption": "all"}, generator=_g())
    fresh_probe = build_probe("corruptions", corruptions=["contrast"], severities=[1], tabular_corruptions=[])
    fresh = fresh_probe.run(model, images, job={"family": "all", "corruption": "all"}, generator=_g())
    assert stale.tables[0].rows == fresh.tables[0].rows


def test_probe_pickles_after_running(images: Dataset) -> None:
    import pickle

    probe = build_probe("corruptions", corruptions=["contrast"], severities=[1], tabular_corruptions=[])
    probe.run(MeanBrightness(), images, job={"family": "image", "corruption": "contrast"}, generator=_g())
    clone = pickle.loads(pickle.dumps(probe))
    assert clone.params() == probe.params() and clone._cache == {}
