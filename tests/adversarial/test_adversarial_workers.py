"""evaluate(workers=...): an attack's chunks in forked worker processes (robustlab.adversarial._workers).

What must hold: the same results as in one process, bit for bit; errors and warnings of a worker
reach the caller; the caller's global RNG and model are untouched; no worker process outlives the
call; bad values of ``workers`` are one-line errors naming it.
"""

from __future__ import annotations

import multiprocessing
import warnings

import pytest
import torch

from robustlab.adversarial import AttackResult
from robustlab.adversarial import _workers
from robustlab.adversarial.evaluate import evaluate
from robustlab.errors import InvalidParameterError, InvalidTypeError, RobustlabError

EPS = 0.1

pytestmark = pytest.mark.skipif(not _workers._can_fork(), reason="worker processes need Linux's fork")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _recording_identity(sizes: list[int]):
    """An 'attack' that changes nothing and appends the size of every batch it sees to ``sizes``."""
    def attack(model, inputs, labels, *, generator=None):
        sizes.append(inputs.shape[0])
        return AttackResult(adv_inputs=inputs.clone(), success=torch.zeros(len(labels), dtype=torch.bool),
                            norms=torch.zeros(len(labels)), queries=torch.zeros(len(labels), dtype=torch.int64),
                            num_iterations=0, norm="linf", eps=0.0)
    return attack


def _pgd(model, inputs, labels, *, generator=None):
    from robustlab.adversarial.gradient import pgd

    return pgd(model, inputs, labels, eps=EPS, num_steps=5, generator=generator)


def test_workers_give_the_same_results_bit_for_bit(digits_cnn, attack_batch):
    x, y = attack_batch
    state = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    rng, mode = torch.get_rng_state(), digits_cnn.training
    one = evaluate(digits_cnn, x, y, eps=EPS, suite="fast", generator=_gen(5), batch_size=12, workers=1)
    two = evaluate(digits_cnn, x, y, eps=EPS, suite="fast", generator=_gen(5), batch_size=12, workers=2)
    three = evaluate(digits_cnn, x, y, eps=EPS, suite="fast", generator=_gen(5), batch_size=12, workers=3)
    assert one.attack_stats[0].num_attacked > 12  # apgd-ce had several chunks to share
    for other in (two, three):
        assert torch.equal(one.adv_inputs, other.adv_inputs) and torch.equal(one.robust, other.robust)
        assert one.broken_by == other.broken_by
        assert [s.num_broken for s in one.attack_stats] == [s.num_broken for s in other.attack_stats]
    # a different seed changes the draws (the workers really use the chunk seeds)
    other_seed = evaluate(digits_cnn, x, y, eps=EPS, suite="fast", generator=_gen(6), batch_size=12, workers=2)
    assert not torch.equal(one.adv_inputs, other_seed.adv_inputs)
    assert torch.equal(torch.get_rng_state(), rng)  # workers reseed their own copy only
    assert all(torch.equal(v, state[k]) for k, v in digits_cnn.state_dict().items())
    assert digits_cnn.training == mode
    assert multiprocessing.active_children() == []  # the pool is gone


def test_custom_attacks_run_in_workers_only_when_asked(digits_cnn, attack_batch, monkeypatch):
    """A custom attack object may record state; by default it runs in this process."""
    x, y = attack_batch
    seen: list[int] = []

    def recording(model, inputs, labels, *, generator=None):
        seen.append(inputs.shape[0])
        return _pgd(model, inputs, labels, generator=generator)

    monkeypatch.setattr(_workers, "default_workers", lambda device: 2)  # as on a 2-core machine
    res = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=10, attacks=[("rec", recording)])
    assert sum(seen) == int(res.clean_correct.sum()) and max(seen) <= 10
    seen.clear()
    res2 = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=10, attacks=[("rec", recording)],
                    workers=2)
    assert seen == []  # ran in the workers' copies
    assert torch.equal(res.adv_inputs, res2.adv_inputs)


def test_an_error_in_a_worker_reaches_the_caller(digits_cnn, attack_batch):
    x, y = attack_batch

    def broken(model, inputs, labels, *, generator=None):
        raise ValueError("the attack failed on purpose")

    with pytest.raises(ValueError, match="on purpose") as info:
        evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=10, attacks=[("b", broken)], workers=2)
    assert any("evaluation worker" in note for note in getattr(info.value, "__notes__", []))
    assert multiprocessing.active_children() == []


def test_warnings_in_a_worker_reach_the_caller(digits_cnn, attack_batch):
    x, y = attack_batch

    def noisy(model, inputs, labels, *, generator=None):
        warnings.warn("a warning from inside the attack", RuntimeWarning, stacklevel=1)
        return _pgd(model, inputs, labels, generator=generator)

    with pytest.warns(RuntimeWarning, match="from inside the attack"):
        evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=10, attacks=[("n", noisy)], workers=2)


def test_a_worker_returning_no_tensor_is_refused(digits_cnn, attack_batch):
    x, y = attack_batch

    def wrong(model, inputs, labels, *, generator=None):
        return {"adv": inputs}

    with pytest.raises(RobustlabError, match="'w' must return an AttackResult.*dict") as info:
        evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=10, attacks=[("w", wrong)], workers=2)
    assert "\n" not in str(info.value)


def test_one_chunk_runs_in_this_process(digits_cnn, attack_batch):
    """Nothing is forked for an attack with one chunk (the call stays cheap for small batches)."""
    x, y = attack_batch
    seen: list[int] = []
    recording = _recording_identity(seen)
    evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), batch_size=64, attacks=[("r", recording)], workers=2)
    assert len(seen) == 1


@pytest.mark.parametrize(("workers", "error"), [(0, InvalidParameterError), (-2, InvalidParameterError),
                                                (1.5, InvalidTypeError), (True, InvalidTypeError),
                                                ("2", InvalidTypeError)])
def test_bad_workers_one_line_errors(digits_cnn, attack_batch, workers, error):
    x, y = attack_batch
    with pytest.raises(error, match="'workers'") as info:
        evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), workers=workers)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_workers_refused_for_gpu_inputs(digits_cnn, attack_batch):
    x, y = attack_batch
    with pytest.raises(InvalidParameterError, match="'workers'.*CPU"):
        evaluate(digits_cnn.cuda(), x.cuda(), y.cuda(), eps=EPS, generator=torch.Generator("cuda"), workers=2)


def test_default_workers_follow_torch_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert _workers.default_workers(torch.device("cpu")) == min(2, _workers._cores())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert _workers.default_workers(torch.device("cpu")) == 1
    assert _workers.default_workers(torch.device("meta")) == 1


# --------------------------------------------------------------------------- target ranks
def test_target_ranks_equal_num_target_classes(digits_cnn, attack_batch):
    """Ranks 1..k in order are exactly what num_target_classes=k runs (APGD-T and FAB-T)."""
    from robustlab.adversarial.apgd import apgd_targeted
    from robustlab.adversarial.fab import fab

    x, y = attack_batch
    a = apgd_targeted(digits_cnn, x, y, eps=EPS, num_target_classes=3, num_steps=10, generator=_gen(2))
    b = apgd_targeted(digits_cnn, x, y, eps=EPS, target_ranks=[1, 2, 3], num_steps=10, generator=_gen(2))
    assert torch.equal(a.adv_inputs, b.adv_inputs)
    c = fab(digits_cnn, x, y, eps=EPS, targeted=True, num_target_classes=2, num_steps=10)
    d = fab(digits_cnn, x, y, eps=EPS, targeted=True, target_ranks=(1, 2), num_steps=10)
    assert torch.equal(c.adv_inputs, d.adv_inputs)
    # one rank alone attacks towards that class only: rank 2's success is a subset of ranks 1-2's
    only2 = fab(digits_cnn, x, y, eps=EPS, targeted=True, target_ranks=(2,), num_steps=10)
    assert bool((only2.success <= d.success).all())


@pytest.mark.parametrize(("ranks", "error"), [((0,), InvalidParameterError), ((10,), InvalidParameterError),
                                              ((1, 1), InvalidParameterError), ((), InvalidTypeError),
                                              ("12", InvalidTypeError), ((1.0,), InvalidTypeError)])
def test_bad_target_ranks_one_line_errors(digits_cnn, attack_batch, ranks, error):
    from robustlab.adversarial.apgd import apgd_targeted
    from robustlab.adversarial.fab import fab

    x, y = attack_batch
    for call in (lambda: apgd_targeted(digits_cnn, x, y, eps=EPS, target_ranks=ranks, generator=_gen()),
                 lambda: fab(digits_cnn, x, y, eps=EPS, targeted=True, target_ranks=ranks)):
        with pytest.raises(error, match="'target_ranks'") as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(InvalidParameterError, match="'target_ranks'.*targeted=True"):
        fab(digits_cnn, x, y, eps=EPS, target_ranks=(1,))


def test_suite_targets_are_split_into_ranks():
    from robustlab.adversarial.evaluate import suite_attacks

    attacks = dict(suite_attacks("standard", eps=EPS, num_classes=10))
    for name in ("apgd-t", "fab-t"):
        parts = attacks[name].parts
        assert [p.settings["target_ranks"] for p in parts] == [(r,) for r in range(1, 10)]
    assert attacks["apgd-ce"].parts == () and attacks["square"].parts == ()
    four = dict(suite_attacks("standard", eps=EPS, num_classes=4))
    assert len(four["apgd-t"].parts) == 3  # at most K - 1 targets


def test_split_targets_give_the_sequential_verdicts(digits_cnn, attack_batch):
    """FAB-T is deterministic: its 9 target ranks run side by side (the suite's split) must break
    exactly the examples that the ranks run in turn (AutoAttack's order) break."""
    from robustlab.adversarial.evaluate import suite_attacks
    from robustlab.adversarial.fab import fab

    x, y = attack_batch
    fab_t = dict(suite_attacks("standard", eps=0.06, num_classes=10))["fab-t"]
    assert len(fab_t.parts) == 9

    def sequential(model, inputs, labels, *, generator=None):
        return fab(model, inputs, labels, **fab_t.settings)

    split = evaluate(digits_cnn, x, y, eps=0.06, generator=_gen(1), batch_size=20, attacks=[("fab-t", fab_t)],
                     workers=2)
    in_turn = evaluate(digits_cnn, x, y, eps=0.06, generator=_gen(1), batch_size=20,
                       attacks=[("fab-t", sequential)])
    assert 0 < split.attack_stats[0].num_broken < split.attack_stats[0].num_attacked
    assert torch.equal(split.robust, in_turn.robust) and split.broken_by == in_turn.broken_by


# --------------------------------------------------------------------------- chunking
@pytest.mark.parametrize(("m", "batch_size", "even", "expected"),
                         [(63, 128, True, 1), (64, 128, True, 2), (128, 128, True, 2), (300, 128, True, 4),
                          (300, 128, False, 3), (10, 3, True, 4), (64, 128, False, 1), (1, 128, True, 1)])
def test_number_of_chunks(m, batch_size, even, expected):
    from robustlab.adversarial.evaluate import _num_chunks

    assert _num_chunks(m, batch_size, even) == expected


def test_default_cpu_chunks_are_even_and_equal(digits_cnn, digits_split):
    """Default batch size on CPU: at most 128 per chunk, an even number of chunks of equal size
    from 64 examples on; an explicit batch_size is taken as given."""
    _, _, x, y = digits_split
    x, y = x[:150], y[:150]
    sizes: list[int] = []
    recording = _recording_identity(sizes)
    res = evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), attacks=[("r", recording)])
    m = int(res.clean_correct.sum())
    assert m >= 128 and len(sizes) == 2 and sum(sizes) == m and max(sizes) - min(sizes) <= 1
    sizes.clear()
    evaluate(digits_cnn, x, y, eps=EPS, generator=_gen(), attacks=[("r", recording)], batch_size=m)
    assert sizes == [m]


def test_randomised_model_is_reproducible_in_workers(digits_cnn, attack_batch):
    """A model drawing from torch's global generator: each worker reseeds its own copy per chunk,
    so the 'rand' suite (EoT) gives the same numbers twice, and the caller's generator is untouched."""

    class GlobalNoise(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x + 0.2 * torch.randn_like(x))

    x, y = attack_batch
    x, y = x[:24], y[:24]
    model = GlobalNoise(digits_cnn)
    rng = torch.get_rng_state()
    try:
        results = []
        for _ in range(2):
            torch.manual_seed(0)  # the clean passes run here and draw from the global generator
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the final check warns: a randomised model varies per draw
                results.append(evaluate(model, x, y, eps=EPS, suite="rand", generator=_gen(4), batch_size=8,
                                        workers=2))
    finally:
        torch.set_rng_state(rng)
    a, b = results
    assert a.attack_stats[0].num_attacked > 8  # several chunks, which the workers take in any order
    assert torch.equal(a.adv_inputs, b.adv_inputs) and a.broken_by == b.broken_by
