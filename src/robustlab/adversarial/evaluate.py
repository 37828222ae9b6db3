"""Reliable robustness evaluation: AutoAttack's suites as one per-example worst case.

:func:`evaluate` runs an ensemble of attacks the way fra31/AutoAttack does (Croce & Hein, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks", ICML
2020, Sec. 5): examples the model already misclassifies are never attacked, every attack only sees
the examples that survived the attacks before it, and an example counts as robust only if no attack
breaks it. The suites copy the attack SETS and parameters of the reference implementation
(``/tmp/fra31-autoattack/autoattack/autoattack.py``, ``AutoAttack.set_version`` and the
constructor), so the same model and data give the same robust accuracy as AutoAttack up to the
attacks' randomness.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustlab._checks import check_bool, check_choice, check_int, describe, fail
from robustlab._constants import (
    ADV_EVAL_BALL_RTOL,
    ADV_EVAL_BATCH_SIZE,
    ADV_EVAL_CPU_BATCH_SIZE,
    ADV_EVAL_CPU_MIN_CHUNK,
    ADV_EVAL_RANDOMIZED_ATOL,
    ATTACK_BALL_ATOL,
    AUTOATTACK_L1_RESTARTS,
    AUTOATTACK_L1_TARGET_CLASSES,
    AUTOATTACK_NUM_STEPS,
    AUTOATTACK_PLUS_RESTARTS,
    AUTOATTACK_RAND_EOT_ITER,
    AUTOATTACK_RHO,
    AUTOATTACK_SQUARE_P_INIT,
    AUTOATTACK_SQUARE_QUERIES,
    AUTOATTACK_SQUARE_SR_ALPHA,
    AUTOATTACK_TARGET_CLASSES,
    IMAGE_RANGE_ATOL,
)
from robustlab._progress import progress as _progress
from robustlab.adversarial._core import (
    AttackResult,
    check_attack_args,
    check_eps,
    check_norm,
    model_view,
    perturbation_norms,
)
from robustlab.adversarial._workers import ChunkPool, NotATensor, resolve_workers
from robustlab.errors import InvalidTypeError, ModelOutputError, RobustlabError

__all__ = ["SUITES", "AttackStat", "RobustnessResult", "evaluate", "resolve_batch_size", "suite_attacks"]

#: The evaluation suites :func:`evaluate` knows, in the order the CLI lists them.
SUITES: tuple[str, ...] = ("standard", "plus", "rand", "fast")

#: A callable attack: ``attack(model, inputs, labels, *, generator) -> AttackResult``.
AttackFn = Callable[..., AttackResult]

#: Substring of the probability warning of :class:`~robustlab.adversarial._core.ModelView`; after
#: the clean pass has shown it once, the attacks' own views stay quiet.
_PROBABILITY_WARNING = "seems to return probabilities"


# --------------------------------------------------------------------------- result types
@dataclass(frozen=True)
class AttackStat:
    """What one attack of an evaluation did.

    Attributes
    ----------
    name : str
        The attack's name in the suite (``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"``, ``"square"``...).
    num_attacked : int
        Examples it was run on: those still unbroken when its turn came.
    num_broken : int
        Of those, how many it broke (misclassified by one forward pass on its output).
    seconds : float
        Wall time of the attack over all its batches (including that forward pass).
    robust_accuracy : float
        Robust accuracy over all examples after this attack (AutoAttack logs the same number).
    """

    name: str
    num_attacked: int
    num_broken: int
    seconds: float
    robust_accuracy: float


@dataclass(frozen=True, eq=False)
class RobustnessResult:
    """Per-example worst case over an attack suite.

    Attributes
    ----------
    robust_accuracy : float
        Fraction of all examples classified correctly and broken by no attack.
    clean_accuracy : float
        Fraction of examples classified correctly without attack.
    robust : bool Tensor (N,)
        Per example: correct and unbroken. ``robust`` implies ``clean_correct``.
    clean_correct : bool Tensor (N,)
        Per example: correct without attack.
    broken_by : tuple of (str or None), length N
        ``"clean"`` where the model is wrong without attack, else the name of the first attack that
        broke the example, ``None`` where it is robust.
    adv_inputs : Tensor, shape and dtype of the inputs
        The adversarial input that broke each broken example; the original input elsewhere
        (robust and clean-misclassified examples), as AutoAttack returns it.
    attack_stats : tuple of AttackStat
        One entry per attack, in the order they ran.
    eps : float
    norm : str
    suite : str
        The suite name, or ``"custom"`` when ``attacks=`` was given.
    seconds : float
        Wall time of the whole evaluation.
    num_examples : int
    """

    robust_accuracy: float
    clean_accuracy: float
    robust: torch.Tensor
    clean_correct: torch.Tensor
    broken_by: tuple[str | None, ...]
    adv_inputs: torch.Tensor
    attack_stats: tuple[AttackStat, ...]
    eps: float
    norm: str
    suite: str
    seconds: float
    num_examples: int

    @property
    def num_robust(self) -> int:
        return int(self.robust.sum())

    def summary(self) -> dict[str, Any]:
        """Headline numbers as a plain dict (robust accuracy after each attack included)."""
        out: dict[str, Any] = {
            "suite": self.suite, "norm": self.norm, "eps": self.eps,
            "num_examples": self.num_examples, "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy, "seconds": self.seconds,
        }
        for stat in self.attack_stats:
            out[f"robust_accuracy_after_{stat.name}"] = stat.robust_accuracy
        return out

    def to_rows(self) -> list[dict[str, Any]]:
        """``[{"metric", "value", "params"}]`` rows for a results store (one per number)."""
        params = {"suite": self.suite, "norm": self.norm, "eps": self.eps}
        rows = [
            {"metric": "clean_accuracy", "value": self.clean_accuracy, "params": dict(params)},
            {"metric": "robust_accuracy", "value": self.robust_accuracy, "params": dict(params)},
        ]
        for stat in self.attack_stats:
            p = dict(params, attack=stat.name)
            rows += [
                {"metric": "robust_accuracy_after", "value": stat.robust_accuracy, "params": p},
                {"metric": "examples_broken", "value": float(stat.num_broken), "params": p},
                {"metric": "attack_seconds", "value": stat.seconds, "params": p},
            ]
        return rows


# --------------------------------------------------------------------------- suites
class _SuiteAttack:
    """One attack of a suite: a function imported lazily from its module, with fixed settings."""

    def __init__(self, module: str, function: str, *, split_targets: int = 0, **settings: Any) -> None:
        self.module = module
        self.function = function
        self.settings = settings
        #: APGD-T / FAB-T: one attack per target rank, which evaluate runs side by side (each on
        #: every example of the chunk; an example counts as broken by the first rank that breaks
        #: it, as when the ranks run in turn)
        self.parts: tuple[_SuiteAttack, ...] = tuple(
            _SuiteAttack(module, function, **settings, target_ranks=(r,)) for r in range(1, split_targets + 1)
        ) if split_targets > 1 else ()

    def __call__(self, model: Any, inputs: torch.Tensor, labels: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> AttackResult:
        import importlib

        fn = getattr(importlib.import_module(self.module), self.function)
        return fn(model, inputs, labels, generator=generator, **self.settings)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{self.function}({args})"


_APGD = "robustlab.adversarial.apgd"
_FAB = "robustlab.adversarial.fab"
_SQUARE = "robustlab.adversarial.square"


def suite_attacks(suite: str, *, eps: float, norm: str = "linf",
                  num_classes: int | None = None) -> tuple[tuple[str, AttackFn], ...]:
    """The ``(name, attack)`` pairs a suite runs, in order, configured as AutoAttack configures them.

    Parameters
    ----------
    suite : {"standard", "plus", "rand", "fast"}
    eps : float
    norm : {"linf", "l2", "l1"}
    num_classes : int, optional
        Number of classes of the model. Targeted attacks try at most ``num_classes - 1`` target
        classes (AutoAttack only warns when 9 targets exceed the classes, ``checks.check_n_classes``).

    Notes
    -----
    From ``autoattack.py`` (fra31/auto-attack; ``AutoAttack.__init__`` and ``set_version``):

    * all APGD attacks: 100 iterations, ``rho = 0.75``, ``eot_iter = 1``; FAB: 100 iterations;
      Square: ``p_init = 0.8``, 5000 queries, 1 restart. In "standard", Square draws its update
      windows from AutoAttack's range (``windows="fra31"``: never touching the last row/column),
      so the suite reproduces AutoAttack's numbers; "plus" uses the paper's full range, which is
      markedly stronger on small images (about 18 points on 8x8 digits at 500-1000 queries).
    * ``"standard"`` = APGD-CE (1 restart), APGD-T (DLR, 9 target classes, 1 restart each),
      FAB-T (9 target classes, 1 restart), Square. For L1 AutoAttack runs the same four attacks,
      but APGD-CE with 5 restarts and APGD-T with 5 target classes, both with ``use_largereps``
      (the APGD-L1 eps schedule of Croce & Hein, ICCV 2021). robustlab's :func:`apgd` has no
      ``use_largereps`` setting yet: where the function does not accept it, the L1 suite runs
      without it; and robustlab's Square offers only linf/l2, so the L1 suites run without Square
      (documented deviations: L1 robust accuracy may be slightly higher than AutoAttack's).
    * ``"plus"`` = APGD-CE and APGD-DLR with 5 restarts, FAB (untargeted) with 5 restarts, Square
      (5000 queries; AutoAttack keeps Square at 1 restart in "plus" too), APGD-T (9 targets,
      1 restart), FAB-T (9 targets, 1 restart: ``run_standard_evaluation`` resets
      ``fab.n_restarts = 1`` for FAB-T). AutoAttack prints a warning for "plus" with L1; so does this.
    * ``"rand"`` = APGD-CE and APGD-DLR, 1 restart, EoT over 20 forward passes per gradient
      (randomised defenses; Athalye et al. 2018).
    * ``"fast"`` (robustlab, not AutoAttack) = APGD-CE + APGD-T of "standard": the two attacks
      that account for almost all of AutoAttack's successes on undefended and adversarially
      trained models (Croce & Hein 2020, Table 2); used for curves and scans.
    """
    check_choice("suite", suite, SUITES)
    eps = check_eps(eps)
    norm = check_norm(norm)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, low=2)
    return _suite_attacks(suite, eps, norm, num_classes)


def _targets(n: int, num_classes: int | None) -> int:
    return n if num_classes is None else max(1, min(n, num_classes - 1))


def _suite_attacks(suite: str, eps: float, norm: str,
                   num_classes: int | None) -> tuple[tuple[str, AttackFn], ...]:
    steps, rho = AUTOATTACK_NUM_STEPS, AUTOATTACK_RHO
    t9 = _targets(AUTOATTACK_TARGET_CLASSES, num_classes)

    def apgd(loss: str, restarts: int, eot_iter: int = 1, **extra: Any) -> _SuiteAttack:
        return _SuiteAttack(_APGD, "apgd", eps=eps, norm=norm, loss=loss, num_steps=steps,
                            restarts=restarts, rho=rho, eot_iter=eot_iter, **extra)

    def apgd_t(num_targets: int, **extra: Any) -> _SuiteAttack:
        return _SuiteAttack(_APGD, "apgd_targeted", eps=eps, norm=norm, num_target_classes=num_targets,
                            num_steps=steps, restarts=1, loss="dlr", rho=rho, eot_iter=1,
                            split_targets=num_targets, **extra)

    def fab(targeted: bool, restarts: int) -> _SuiteAttack:
        return _SuiteAttack(_FAB, "fab", eps=eps, norm=norm, num_steps=steps, restarts=restarts,
                            targeted=targeted, num_target_classes=t9, split_targets=t9 if targeted else 0)

    def square(windows: str) -> _SuiteAttack:
        return _SuiteAttack(_SQUARE, "square", eps=eps, norm=norm, max_queries=AUTOATTACK_SQUARE_QUERIES,
                            p_init=AUTOATTACK_SQUARE_P_INIT, restarts=1, windows=windows)

    if suite in ("standard", "fast"):
        if norm == "l1":
            large = _largereps_kwargs()
            first = (("apgd-ce", apgd("ce", AUTOATTACK_L1_RESTARTS, **large)),
                     ("apgd-t", apgd_t(_targets(AUTOATTACK_L1_TARGET_CLASSES, num_classes), **large)))
        else:
            first = (("apgd-ce", apgd("ce", 1)), ("apgd-t", apgd_t(t9)))
        if suite == "fast":
            return first
        # AutoAttack's window range, so "standard" reproduces AutoAttack's numbers (see square()).
        tail = (("fab-t", fab(True, 1)),) + ((("square", square("fra31")),) if _square_offers(norm) else ())
        return first + tail
    if suite == "plus":
        r = AUTOATTACK_PLUS_RESTARTS
        # "plus" is the stronger check: Square with the paper's full window range.
        sq = (("square", square("paper")),) if _square_offers(norm) else ()
        return ((("apgd-ce", apgd("ce", r)), ("apgd-dlr", apgd("dlr", r)), ("fab", fab(False, r)))
                + sq + (("apgd-t", apgd_t(t9)), ("fab-t", fab(True, 1))))
    # "rand"
    e = AUTOATTACK_RAND_EOT_ITER
    return (("apgd-ce", apgd("ce", 1, eot_iter=e)), ("apgd-dlr", apgd("dlr", 1, eot_iter=e)))


def _square_offers(norm: str) -> bool:
    """Whether robustlab's Square attack offers ``norm`` (AutoAttack's Square also has L1)."""
    import importlib

    try:
        return norm in importlib.import_module(_SQUARE).SQUARE_NORMS
    except (ImportError, AttributeError):
        return norm in ("linf", "l2")


def _largereps_kwargs() -> dict[str, Any]:
    """``{"use_largereps": True}`` if robustlab's APGD offers AutoAttack's L1 schedule, else ``{}``."""
    import importlib
    import inspect

    try:
        fn = importlib.import_module(_APGD).apgd
    except (ImportError, AttributeError):
        return {}
    params = inspect.signature(fn).parameters
    return {"use_largereps": True} if "use_largereps" in params else {}


# --------------------------------------------------------------------------- validation
def _check_attacks(attacks: Any) -> tuple[tuple[str, AttackFn], ...]:
    expected = "a list of (name, attack) pairs, attack being an Attack instance or a callable " \
               "attack(model, inputs, labels, *, generator) -> AttackResult"
    if isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence) or not attacks:
        fail("attacks", f"a non-empty {expected}", attacks, error=InvalidTypeError)
    out = []
    seen: set[str] = set()
    for i, item in enumerate(attacks):
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)
                and item[0] and callable(item[1])):
            fail("attacks", expected, f"{describe(item)} at index {i}", error=InvalidTypeError,
                 describe_got=False)
        name = item[0]
        if name in seen or name == "clean":
            fail("attacks", "pairs with unique names other than 'clean'", f"{name!r} at index {i}",
                 describe_got=False)
        seen.add(name)
        out.append((name, item[1]))
    return tuple(out)


# --------------------------------------------------------------------------- helpers
def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _logits(model: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``x`` in batches, model in eval mode, no gradients (caller's state restored)."""
    with model_view(model, x, differentiable=False) as view:
        parts = [view(x[s]) for s in _batches(x.shape[0], batch_size)]
    return torch.cat(parts) if parts else x.new_zeros((0, 0))


#: Odd 64-bit constant (the golden-ratio increment of SplitMix64) that spreads batch indices
#: over the seed space, so batch b of attack a never reuses the seed of another (a, b) pair.
_SEED_STRIDE = 0x9E3779B97F4A7C15
_SEED_MOD = 2**63


def _attack_seeds(generator: torch.Generator, n: int) -> list[int]:
    draws = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device)
    return [int(v) for v in draws.cpu()]


def resolve_batch_size(batch_size: Any, device: torch.device) -> int:
    """``batch_size`` checked, or its default for inputs on ``device`` when ``None``: 250
    (AutoAttack's ``bs``) on an accelerator, 128 on CPU (``ADV_EVAL_CPU_BATCH_SIZE``)."""
    if batch_size is None:
        return ADV_EVAL_CPU_BATCH_SIZE if device.type == "cpu" else ADV_EVAL_BATCH_SIZE
    return check_int("batch_size", batch_size, low=1)


def _num_chunks(m: int, batch_size: int, even: bool) -> int:
    """Chunks for ``m`` examples: ``ceil(m / batch_size)``; with ``even`` (the CPU default batch
    size), from ``2 * ADV_EVAL_CPU_MIN_CHUNK`` examples on, an even number (at least 2), so that
    worker processes share them evenly. Never a function of ``workers``."""
    k = -(-m // batch_size)
    if even and m >= 2 * ADV_EVAL_CPU_MIN_CHUNK:
        k = max(k, 2)
        k += k % 2
    return k


def _outside_threat_model(x: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> tuple[float, float]:
    """``(largest norm, largest box violation)`` of ``adv - x`` over the examples given."""
    if not adv.shape[0]:
        return 0.0, 0.0
    norms = perturbation_norms(adv - x, norm)
    box = float(torch.maximum(-adv.amin(), adv.amax() - 1).clamp_min(0))
    return float(norms.max()), box


def _randomized(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two forward passes of the same inputs differ (fra31 ``checks.check_randomized``: outputs
    normalised to unit L2 norm per row, then compared)."""
    def unit(z: torch.Tensor) -> torch.Tensor:
        return z / (z.norm(dim=1, keepdim=True) + 1e-10)
    return bool(((unit(a.float()) - unit(b.float())).norm(dim=1) > ADV_EVAL_RANDOMIZED_ATOL).any())


# --------------------------------------------------------------------------- public
def evaluate(
    model: Any,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    suite: str = "standard",
    batch_size: int | None = None,
    generator: torch.Generator,
    attacks: Sequence[tuple[str, AttackFn]] | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> RobustnessResult:
    """Robust accuracy under an AutoAttack suite: the per-example worst case over its attacks.

    Threat model: ``||x_adv - x||_norm <= eps`` and ``0 <= x_adv <= 1``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs to logits (white-box attacks differentiate through it; eval mode and frozen
        parameters during the evaluation, the caller's state restored afterwards).
    inputs : float Tensor (N, ...)
        Values in ``[0, 1]``, unnormalised (normalisation is a layer of the model).
    labels : int64 Tensor (N,)
    eps : float
        Radius of the threat model, ``>= 0``. ``eps = 0`` runs no attack (robust = clean correct).
    norm : {"linf", "l2", "l1"}, default "linf"
    suite : {"standard", "plus", "rand", "fast"}, default "standard"
        See :func:`suite_attacks` for the attacks and their settings (those of fra31/AutoAttack).
    batch_size : int, optional
        Most examples per attack call; memory grows with it. Default: 250 (AutoAttack's ``bs``)
        for inputs on an accelerator, 128 on CPU, where a forward-backward pass of a small model
        costs less per example at about 128 rows than at 256 and where smaller chunks give the
        ``workers`` something to share. The examples an attack runs on are split
        into ``ceil(m / batch_size)`` chunks of equal size (within one); with the CPU default, into
        an even number of them (at least 2) from 64 examples on, so that two or four workers share
        them evenly (a ``batch_size`` given explicitly is taken as it is).
    generator : torch.Generator
        Source of every random draw (random starts, restarts, Square's squares). Required.
    attacks : list of (str, attack), optional
        A custom ensemble instead of a suite: each attack is an :class:`~robustlab.adversarial.Attack`
        instance (or any callable ``attack(model, inputs, labels, *, generator) -> AttackResult``)
        already configured with its own eps/norm. Its adversarial inputs must respect this call's
        ``eps``/``norm``, or the evaluation stops with an error. ``suite`` is then ignored and the
        result says ``"custom"``.
    progress : bool, default False
        Show a progress bar (one step per attack) when stderr is a terminal.
    workers : int, optional
        Processes that attack an attack's chunks side by side (CPU inputs on Linux; forked, one
        torch thread each; an attack with a single chunk runs in the calling process). Default:
        for the suites, ``torch.get_num_threads()`` on CPU (capped by the usable cores), 1
        elsewhere; for custom ``attacks``, 1, as a worker runs a forked copy of the attack object
        and any state it records stays in the worker. Results do not depend on it (see
        Determinism below).

    Returns
    -------
    RobustnessResult

    Raises
    ------
    RobustlabError
        When an attack returns a misclassified input outside the threat model, or when the final
        check (below) finds that the returned adversarial inputs do not reproduce the robust mask
        on a deterministic model.

    Notes
    -----
    The procedure is ``AutoAttack.run_standard_evaluation`` (fra31/auto-attack ``autoattack.py``):

    1. one clean forward pass; misclassified examples are ``broken_by = "clean"`` and never
       attacked;
    2. for each attack in turn, the still-robust examples are attacked in chunks of
       ``batch_size``; an example is broken when one forward pass on the attack's output
       misclassifies it (the attack's own ``success`` flag is not trusted); its adversarial
       input is kept and later attacks skip it. One deviation in how the work is cut, not in what
       is computed: AutoAttack runs APGD-T's and FAB-T's target classes in turn, each on the
       examples no earlier target broke; robustlab runs each target class on every example of
       the chunk, so the targets can run side by side in ``workers`` (an example is broken by
       the first target, in AutoAttack's order, whose output misclassifies it; every target
       AutoAttack would try on an example is tried on it, and examples an earlier target broke
       are attacked again, wasted work that is small because APGD-CE has removed the easy ones);
    3. the final sanity check: the model is run again on all returned ``adv_inputs`` and must
       misclassify exactly the non-robust examples. AutoAttack only logs the perturbation size
       here; robustlab raises when the two disagree on a deterministic model, and warns when the
       model is randomised (a second pass differs), as robust accuracy is then per draw.

    Like AutoAttack, it warns when the model looks randomised under a non-``"rand"`` suite
    (``checks.check_randomized``) and when Square, run after the white-box attacks, still lowers
    robust accuracy by more than 0.2 percentage points (``checks.check_square_sr``): both hint at
    gradient masking (see :func:`robustlab.adversarial.check_gradient_masking`).

    Determinism: every attack gets its own seed drawn from ``generator`` up front, and every
    (attack, batch) its own child generator seeded from it, so one attack's consumption of random
    numbers never shifts another's. The same generator state, inputs, ``batch_size``, device and
    dtype give identical results (up to non-deterministic GPU kernels). Results are NOT invariant
    to ``batch_size``: the chunks, hence the random draws each example sees, change with it (the
    same holds for AutoAttack, which reseeds every batch). They are invariant to ``workers``: a
    chunk's result depends on its examples and seed only, not on the process that runs it (given
    the same torch thread count per process: an attack with one chunk runs in the calling
    process with its threads, chunks of a split attack in workers with one thread each).

    References
    ----------
    F. Croce and M. Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks. ICML 2020.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> result = evaluate(model, x_test, y_test, eps=8 / 255, norm="linf", generator=g)  # doctest: +SKIP
    >>> result.robust_accuracy, [(s.name, s.num_broken) for s in result.attack_stats]  # doctest: +SKIP
    """
    inputs, labels, _ = check_attack_args(inputs, labels, generator=generator, needs_generator=True)
    if inputs.shape[0] == 0:
        fail("inputs", "a batch of at least one example", inputs)
    eps = check_eps(eps)
    norm = check_norm(norm)
    even_chunks = batch_size is None and inputs.device.type == "cpu"
    batch_size = resolve_batch_size(batch_size, inputs.device)
    progress = check_bool("progress", progress)
    if attacks is not None:
        custom = _check_attacks(attacks)
        suite_name = "custom"
    else:
        check_choice("suite", suite, SUITES)
        custom = None
        suite_name = suite
        if suite == "plus" and norm == "l1":
            warnings.warn("AutoAttack's 'plus' suite is meant for linf and l2 (autoattack.py "
                          "set_version prints a warning for L1); check the result with 'standard'.",
                          UserWarning, stacklevel=2)
    # auto: robustlab's own attacks only (a custom attack may keep state, which a forked copy would
    # not bring back); workers > 1 given explicitly runs custom attacks in workers too
    ours = custom is None or all(isinstance(a, _SuiteAttack) for _, a in custom)
    workers = resolve_workers(workers, inputs.device) if workers is not None or ours else 1
    return _evaluate_impl(model, inputs, labels, eps=eps, norm=norm, suite=suite_name,
                          batch_size=batch_size, generator=generator, custom=custom, progress=progress,
                          workers=workers, even_chunks=even_chunks)


def _evaluate_impl(model: Any, inputs: torch.Tensor, labels: torch.Tensor, *, eps: float, norm: str,
                   suite: str, batch_size: int, generator: torch.Generator,
                   custom: tuple[tuple[str, AttackFn], ...] | None, progress: bool,
                   workers: int, even_chunks: bool = False) -> RobustnessResult:
    start = time.perf_counter()
    n = inputs.shape[0]

    # 1. clean pass (model_view warns once here if the outputs look like probabilities)
    clean_logits = _logits(model, inputs, batch_size)
    num_classes = int(clean_logits.shape[1])
    clean_correct = clean_logits.argmax(dim=1) == labels
    if suite != "rand":
        first = slice(0, min(batch_size, n))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f".*{_PROBABILITY_WARNING}")
            again = _logits(model, inputs[first], batch_size)
        if _randomized(clean_logits[first], again):
            warnings.warn("Two forward passes of the same inputs differ: the model seems randomised. "
                          "Evaluate it with suite='rand' (APGD with Expectation over Transformation).",
                          UserWarning, stacklevel=3)

    attacks = custom if custom is not None else _suite_attacks(suite, eps, norm, num_classes)
    if custom is None and inputs.ndim != 4 and any(name == "square" for name, _ in attacks):
        # Square perturbs square windows of an image (N, C, H, W); it has no meaning for other inputs.
        attacks = tuple((name, a) for name, a in attacks if name != "square")
        warnings.warn(f"The '{suite}' suite runs without Square: its square windows need images "
                      f"(N, C, H, W), the inputs have shape {tuple(inputs.shape)}.", UserWarning, stacklevel=3)
    seeds = _attack_seeds(generator, len(attacks))

    robust = clean_correct.clone()
    broken_by: list[str | None] = [None if bool(c) else "clean" for c in clean_correct.tolist()]
    adv_inputs = inputs.clone()
    stats: list[AttackStat] = []

    # 2. the attacks, each on what survived the previous ones; an attack's chunks are independent
    # (own examples, own seed), so a ChunkPool may run them in worker processes
    callables: list[AttackFn] = []
    spans: list[tuple[int, int]] = []  # per attack: (index of its first callable, number of parts)
    for _, attack in attacks:
        parts = getattr(attack, "parts", ()) or (attack,)
        spans.append((len(callables), len(parts)))
        callables.extend(parts)
    max_items = -(-int(clean_correct.sum()) // batch_size) * max(p for _, p in spans)
    pool = ChunkPool(model, inputs, labels, tuple(callables), workers=workers, max_items=max_items,
                     generator_device=generator.device)
    with pool, _progress(f"evaluate ({suite}, {norm}, eps={eps:g})", total=len(attacks),
                         enabled=None if progress else False) as bar, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{_PROBABILITY_WARNING}")
        for i, ((name, attack), seed) in enumerate(zip(attacks, seeds)):
            t0 = time.perf_counter()
            todo = robust.nonzero().flatten()
            num_broken = 0
            if eps > 0 and todo.numel():
                first, nparts = spans[i]
                chunks = list(torch.tensor_split(todo, _num_chunks(todo.numel(), batch_size, even_chunks)))
                outputs = pool.run([(first + p, idx, (seed + (b * nparts + p) * _SEED_STRIDE) % _SEED_MOD)
                                    for b, idx in enumerate(chunks) for p in range(nparts)])
                for k, adv in enumerate(outputs):  # parts in rank order: the first break counts
                    num_broken += _record(model, adv, name, inputs, labels, chunks[k // nparts], eps, norm,
                                          batch_size, custom is not None, robust, adv_inputs, broken_by)
            stats.append(AttackStat(name=name, num_attacked=int(todo.numel()) if eps > 0 else 0,
                                    num_broken=num_broken, seconds=time.perf_counter() - t0,
                                    robust_accuracy=float(robust.sum()) / n))
            bar.advance()

    _square_check(stats, float(clean_correct.sum()) / n)
    # 3. AutoAttack's final check, as a hard consistency check
    _final_check(model, adv_inputs, labels, robust, batch_size)
    return RobustnessResult(
        robust_accuracy=float(robust.sum()) / n, clean_accuracy=float(clean_correct.sum()) / n,
        robust=robust, clean_correct=clean_correct, broken_by=tuple(broken_by), adv_inputs=adv_inputs,
        attack_stats=tuple(stats), eps=eps, norm=norm, suite=suite,
        seconds=time.perf_counter() - start, num_examples=n,
    )


def _record(model: Any, adv: Any, name: str, inputs: torch.Tensor, labels: torch.Tensor,
            idx: torch.Tensor, eps: float, norm: str, batch_size: int, is_custom: bool,
            robust: torch.Tensor, adv_inputs: torch.Tensor, broken_by: list[str | None]) -> int:
    """Check an attack's output ``adv`` for ``inputs[idx]``; record the broken ones among those
    still robust in place; return how many broke."""
    x = inputs[idx]
    if not isinstance(adv, torch.Tensor) or adv.shape != x.shape:
        got = adv.description if isinstance(adv, NotATensor) else describe(adv)
        raise RobustlabError(
            f"Attack {name!r} must return an AttackResult whose adv_inputs have the inputs' shape "
            f"{tuple(x.shape)}. Got {got} instead.")
    alive = robust[idx]
    if not bool(alive.all()):  # an earlier part (target rank) of this attack broke some already
        if not bool(alive.any()):
            return 0
        idx, x, adv = idx[alive], x[alive], adv[alive]
    y = labels[idx]
    adv = adv.to(device=x.device, dtype=x.dtype)  # detached by the ChunkPool
    with torch.no_grad():
        broken = _logits(model, adv, batch_size).argmax(dim=1) != y
    if bool(broken.any()):
        worst, box = _outside_threat_model(x[broken], adv[broken], eps, norm)
        if worst > eps * (1 + ADV_EVAL_BALL_RTOL) + ATTACK_BALL_ATOL or box > IMAGE_RANGE_ATOL:
            where = "the 'attacks' parameter" if is_custom else "robustlab's suite (a bug)"
            raise RobustlabError(
                f"Attack {name!r} (from {where}) returned misclassified inputs outside the threat "
                f"model: largest {norm} perturbation {worst:.6g} for eps={eps:g}, largest box "
                f"violation {box:.3g}. Configure the attack with this evaluation's eps and norm.")
    hit = idx[broken]
    robust[hit] = False
    adv_inputs[hit] = adv[broken]
    for i in hit.tolist():
        broken_by[i] = name
    return int(hit.numel())


def _square_check(stats: list[AttackStat], clean_accuracy: float) -> None:
    """fra31 ``checks.check_square_sr``: Square lowering robust accuracy after the white-box
    attacks by more than 0.2 percentage points hints at gradient masking."""
    accs = {s.name: s.robust_accuracy for s in stats}
    if "square" not in accs or len(stats) < 2:
        return
    others = [clean_accuracy] + [s.robust_accuracy for s in stats if s.name != "square"]
    before = min(others)
    if accs["square"] < before - AUTOATTACK_SQUARE_SR_ALPHA:
        warnings.warn(
            f"Square Attack (black-box) lowered robust accuracy by {before - accs['square']:.2%} "
            "after the gradient-based attacks: the white-box evaluation may be unreliable "
            "(gradient masking). Consider check_gradient_masking and adaptive attacks.",
            UserWarning, stacklevel=4)


def _final_check(model: Any, adv_inputs: torch.Tensor, labels: torch.Tensor, robust: torch.Tensor,
                 batch_size: int) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{_PROBABILITY_WARNING}")
        logits = _logits(model, adv_inputs, batch_size)
        correct = logits.argmax(dim=1) == labels
        mismatch = correct != robust
        if not bool(mismatch.any()):
            return
        again = _logits(model, adv_inputs, batch_size)
    acc_now, acc_eval = float(correct.float().mean()), float(robust.float().mean())
    if _randomized(logits, again):
        warnings.warn(
            f"The model is randomised: re-running it on the returned adversarial inputs gives "
            f"{acc_now:.2%} accuracy against {acc_eval:.2%} robust accuracy during the evaluation "
            f"({int(mismatch.sum())} example(s) changed). Robust accuracy of a randomised model "
            "holds per draw; use suite='rand' and report the spread over seeds.",
            UserWarning, stacklevel=4)
        return
    raise ModelOutputError(
        f"The final check failed: the model classifies the returned adversarial inputs with "
        f"{acc_now:.2%} accuracy, but the evaluation found {acc_eval:.2%} robust accuracy "
        f"({int(mismatch.sum())} example(s) disagree) although two forward passes agree. The model's "
        "output depends on the batch it is in (e.g. batch statistics), or an attack is wrong.")

