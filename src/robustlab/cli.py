"""The ``robustlab`` command.

Every command validates its input through the library; a :class:`~robustlab.errors.RobustlabError`
or a usage error is printed as one line on stderr with exit status 2. ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from robustlab import __version__
from robustlab._constants import (
    AUDIT_CLI_EPOCHS,
    AUDIT_CLI_FOLDS,
    AUDIT_TOP_SUSPECTS,
    DEFAULT_SEED,
)

app = typer.Typer(
    name="robustlab",
    help="Classifiers that stay right under noise: scan a model, train robustly, inspect data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
repair_app = typer.Typer(help="Repair a model in weight space: robust weight signatures, interpolation.",
                         no_args_is_help=True)
app.add_typer(repair_app, name="repair")
signature_app = typer.Typer(help="Robust weight signatures: extract, apply, remove.", no_args_is_help=True)
repair_app.add_typer(signature_app, name="signature")

_STATE: dict[str, bool] = {"debug": False}
log = logging.getLogger("robustlab.cli")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress lines.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    _STATE["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("robustlab").setLevel(level)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- scan
@app.command(epilog="Examples: robustlab scan --data digits --model small-cnn --out runs/digits ·  "
                    "robustlab scan --config examples/sweep.toml --backend ray")
def scan(
    model: Annotated[Optional[list[str]], typer.Option(
        help="A saved model (folder, .safetensors, TorchScript .pt) or an architecture name to train "
        "(cached) on the data. Repeat to scan several models and compare them in one page. "
        "Default: small-cnn.")] = None,
    data: Annotated[Optional[str], typer.Option(help="A built-in dataset name or a path (CIFAR folder, MNIST "
                                                "IDX folder, ImageFolder, .npz, .csv). Default: digits.")] = None,
    probes: Annotated[Optional[str], typer.Option(help="Comma-separated probe names, or 'all' (the "
                                                  "default).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (results.sqlite + report.html); with several "
                                                "--model or --config, the folder holding one run folder per "
                                                "run and compare.html. Default: runs/scan-DATA-MODEL.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="A sweep file (TOML): models x datasets x seeds x probe-setting grids, one run each; "
        "see below and examples/sweep.toml. Replaces --model, --data, --probes, --seed and --epochs.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Where probe jobs run: local (this process, the "
                                                   "default) or ray.")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address for --backend ray (host:port, "
                                                   "auto or local; default: RAY_ADDRESS, else the latest "
                                                   "local cluster, else a new local Ray).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for training and every probe (the test split is "
                                                "fixed). Default: 0.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs when training the model (default: "
                                                  "the architecture's recipe).")] = None,
    retrain: Annotated[bool, typer.Option(help="Ignore the cached trained model.")] = False,
) -> None:
    """Scan a model on a dataset with every probe and write one HTML report.

    With no arguments: trains (or reuses a cached) small CNN on the built-in digits data and scans it.
    Running the same command again resumes an interrupted scan and skips what is already stored.
    With several --model (e.g. the same architecture trained with different methods on the same
    noisy labels), each is scanned into its own run folder and compare.html puts them side by side.

    Sweeps (--config FILE, TOML; every key optional): out = "runs/sweep"; seeds = \\[0, 1];
    datasets = \\["digits"]; models = \\["small-cnn", "runs/elr/model"], or one \\[\\[models]] table per
    model with name, label, epochs, method, method_params, label_noise (a list of epochs, methods or
    noise specs such as "symmetric:0.2" sweeps it; "none" = clean labels); one \\[probes.NAME] table
    per probe with its settings (e.g. eps = {linf = \\[0.05, 0.1]}, one job per eps), and
    \\[probes.NAME.grid] with arrays of settings to sweep (one run per combination). Without
    \\[probes] every probe runs. Each (model, dataset, seed, grid point) gets a run folder under --out
    and compare.html compares them all; running the same command again resumes every run.
    """
    from robustlab.scan import PROBES, build_probe, run_scan
    from robustlab.scan.runner import check_backend

    if config is not None:
        given = [flag for flag, value in (("--model", model), ("--data", data), ("--probes", probes),
                                          ("--seed", seed), ("--epochs", epochs)) if value is not None]
        if given:
            from robustlab._checks import fail

            fail("config", f"used without {', '.join(given)} (the sweep file lists models, data, probes "
                 "and seeds)", " ".join(given), describe_got=False)
        _scan_sweep(config, out=out, backend=backend, address=address, retrain=retrain)
        return
    backend = backend or "local"
    check_backend(backend, address=address)
    model = model or ["small-cnn"]
    data = data or "digits"
    probes = probes or "all"
    seed = DEFAULT_SEED if seed is None else seed
    from robustlab._constants import SCAN_PROBE_ORDER

    def position(name: str) -> tuple[int, str]:  # the report's order: known probes first
        order = list(SCAN_PROBE_ORDER)
        return (order.index(name) if name in order else len(order), name)

    names = (sorted(PROBES.names(), key=position) if probes.strip() == "all"
             else [p.strip() for p in probes.split(",") if p.strip()])
    probe_objs = [build_probe(n) for n in names]
    labels = _model_labels(model)
    if len(model) == 1:
        default = Path("runs") / _slug(f"scan-{Path(data).name}-{labels[0]}")
        run_dirs = [out if out is not None else default]
    else:
        base = out if out is not None else Path("runs") / _slug(f"scan-{Path(data).name}-compare")
        run_dirs = [base / _slug(label) for label in labels]
    for one, out_dir in zip(model, run_dirs):
        entry_model, test_data, model_info = _scan_model(one, data, seed=seed, epochs=epochs, retrain=retrain)
        summary = run_scan(entry_model, test_data, probe_objs, out_dir=out_dir, seed=seed,
                           model_info=model_info, data_info=test_data.info() | {"source": data},
                           backend=backend, address=address)
        _print_scan_summary(summary)
    if len(model) > 1:
        from robustlab.scan.compare import write_comparison

        page = write_comparison(run_dirs, run_dirs[0].parent, labels=labels)
        _console().print(f"comparison: {page}")


def _scan_sweep(config: Path, *, out: Path | None, backend: str | None, address: str | None,
                retrain: bool) -> None:
    """``scan --config``: every run of the sweep, a summary line per run and the comparison page."""
    from robustlab.scan.sweep import expand_sweep, load_sweep, run_sweep

    sweep = load_sweep(config)
    runs = expand_sweep(sweep)
    points = len(runs) // (len(sweep.models) * len(sweep.datasets) * len(sweep.seeds))
    _console().print(f"sweep {config}: {len(runs)} runs ({len(sweep.models)} models x {len(sweep.datasets)} "
                     f"datasets x {len(sweep.seeds)} seeds x {points} grid points)")
    result = run_sweep(sweep, out=out, backend=backend, address=address, retrain=retrain)
    console = _console()
    for run, summary in result.runs:
        console.print(f"{run.label}: jobs run {summary.jobs_run}, skipped {summary.jobs_skipped}, failed "
                      f"{len(summary.failed)} — {summary.report_path}")
        for probe, job, error in summary.failed:
            console.print(f"  [red]failed[/red] {probe} {job}: {error}")
    if result.comparison is not None:
        console.print(f"comparison: {result.comparison}")

def _model_labels(models: list[str]) -> list[str]:
    """A short name per ``--model``: a saved model's folder (``runs/elr/model`` -> ``elr``), else its name."""
    labels = []
    for m in models:
        p = Path(m)
        label = p.parent.name if p.name in ("model", "model.safetensors") and p.parent.name else p.stem or m
        labels.append(label)
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


def _scan_model(model: str, data: str, *, seed: int, epochs: int | None,
                retrain: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Resolve ``--model``: an architecture name trains (cached) on the data, else a file is loaded."""
    from robustlab import zoo
    from robustlab._checks import fail
    from robustlab.errors import DataNotFoundError
    from robustlab.models import load_any, model_names

    if not Path(model).exists() and model not in model_names():
        names = ", ".join(model_names())
        fail("model", f"a saved model path or an architecture name ({names})", model,
             error=DataNotFoundError)
    if model in model_names() and not Path(model).exists():
        entry = zoo.get_model(data, model, seed=seed, epochs=epochs, retrain=retrain)
        final = entry.history[-1] if entry.history else {}
        info = {"name": model, "source": "trained" if not entry.cached else "cache",
                "path": str(entry.path), "epochs": len(entry.history),
                "val_acc": final.get("val_acc")}
        return entry.model, entry.test, info
    loaded = load_any(model)
    _, test = zoo.load_splits(data)
    return loaded, test, {"name": Path(model).name, "source": "file", "path": str(model)}


def _print_scan_summary(summary: Any) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"robustlab scan — run {summary.run_id}", show_lines=False)
    table.add_column("probe")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for probe, metric, value in summary.headline:
        table.add_row(probe, metric, _format_value(value))
    console.print(table)
    console.print(f"jobs run: {summary.jobs_run}, skipped (already stored): {summary.jobs_skipped}, "
                  f"failed: {len(summary.failed)}")
    for probe, job, error in summary.failed:
        console.print(f"[red]failed[/red] {probe} {job}: {error}")
    console.print(f"report: {summary.report_path}")


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# --------------------------------------------------------------------------- train
@app.command(epilog="Example: robustlab train --data digits --model small-cnn --method ce --epochs 10 "
                    "--out runs/train-digits")
def train(
    data: Annotated[str, typer.Option(help="A built-in dataset name or a path.")] = "digits",
    model: Annotated[str, typer.Option(help="Architecture name (see `robustlab train --help`).")] = "small-cnn",
    method: Annotated[str, typer.Option(help="Training objective, e.g. ce.")] = "ce",
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, history.json, the final model.")] =
        Path("runs/train"),
    epochs: Annotated[int, typer.Option(help="Number of epochs.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 64,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "adamw",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="constant, cosine, step or linear-decay.")] = "cosine",
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this value.")] = None,
    record_examples: Annotated[bool, typer.Option(help="Keep per-example loss/margin records.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order (the test split is fixed).")] = DEFAULT_SEED,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
    label_noise: Annotated[Optional[str], typer.Option(
        "--label-noise", help="Inject label noise into the training split, KIND:RATE with KIND one of "
        "symmetric, symmetric-inclusive, pair, cifar10-asym, instance (or transition:PATH.npy); "
        "seeded by --seed, saved to noise.npz in --out.")] = None,
    eps: Annotated[Optional[float], typer.Option(
        help="Perturbation radius of an adversarial method (pgd-at, trades, mart, fast-at, vat); also the "
        "radius of the per-epoch PGD robust accuracy in history.json.")] = None,
    method_param: Annotated[Optional[list[str]], typer.Option(
        "--method-param", help="KEY=VALUE option of the method (repeatable), e.g. --method-param beta=6 "
        "--method-param norm=l2; VALUE is read as int, float, true/false, none or text.")] = None,
    sam_rho: Annotated[Optional[float], typer.Option(
        help="Sharpness-aware minimisation radius around any method (0.05 is usual).")] = None,
    warmup_epochs: Annotated[int, typer.Option(
        help="Linear learning-rate warm-up epochs (with --schedule linear-decay: the slow start of "
        "adversarial fine-tuning).")] = 0,
    init: Annotated[Optional[Path], typer.Option(
        help="Fine-tune this saved model folder instead of training --model from scratch.")] = None,
    eval_eps: Annotated[Optional[float], typer.Option(
        help="Radius of the per-epoch PGD robust accuracy on the test split (val_robust_acc in "
        "history.json); default: --eps when given; 0 turns it off.")] = None,
) -> None:
    """Train a model on a dataset with a named objective; checkpoints every epoch (--resume continues).

    Adversarial training: robustlab train --method pgd-at --eps 0.1 (history.json then holds the
    clean and PGD robust test accuracy of every epoch). Fine-tuning a trained model adversarially:
    --init MODEL_DIR --schedule linear-decay --warmup-epochs K.
    """
    from robustlab import zoo
    from robustlab._checks import check_writable_dir
    from robustlab.models import save_model
    from robustlab.training import Trainer, TrainConfig, build_objective

    out_dir = check_writable_dir("out", out)
    noise_spec = _parse_label_noise(label_noise)
    objective = build_objective(method, **_method_params(method, method_param, eps))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         weight_decay=weight_decay, schedule=schedule, grad_clip_norm=grad_clip,
                         record_examples=record_examples, seed=seed, sam_rho=sam_rho,
                         warmup_epochs=warmup_epochs)
    if eval_eps is not None:
        from robustlab.adversarial._core import check_eps

        check_eps(eval_eps, name="eval_eps")
    val_metrics = _robust_curve(objective, eval_eps if eval_eps is not None else eps)
    train_ds, test_ds = zoo.load_splits(data)
    train_ds = _apply_label_noise(noise_spec, train_ds, seed=seed, out_dir=out_dir, resume=resume)
    net, mconf = _initial_model(init, model, train_ds, seed=seed)
    result = Trainer(net, objective, config).fit(train_ds, val=test_ds, run_dir=out_dir, resume=resume,
                                                 val_metrics=val_metrics)
    save_model(result.model, out_dir / "model", mconf)
    (out_dir / "history.json").write_text(json.dumps(result.history, indent=1))
    last = result.history[-1] if result.history else {}
    robust = (f", PGD robust accuracy {last['val_robust_acc']:.4f}" if last.get("val_robust_acc") is not None
              else "")
    _console().print(f"trained {mconf.name} on {data} with {method}: val accuracy "
                     f"{last.get('val_acc', float('nan')):.4f}{robust} after {len(result.history)} epochs; "
                     f"model saved to {out_dir / 'model'}")


def _parse_param_value(text: str) -> Any:
    """``--method-param`` values: int, float, true/false, none, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _method_params(method: str, pairs: list[str] | None, eps: float | None) -> dict[str, Any]:
    """``--method-param KEY=VALUE`` (and ``--eps``) as keyword arguments of the method, checked by name."""
    import inspect

    from robustlab._checks import fail
    from robustlab.training import OBJECTIVES

    cls = OBJECTIVES.get(method)
    accepted = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    listing = ", ".join(accepted) or "none"
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            fail("method_param", "KEY=VALUE", pair)
        if key not in accepted:
            fail("method_param", f"KEY=VALUE with KEY one of the {method!r} method's parameters ({listing})",
                 key)
        params[key] = _parse_param_value(value)
    if eps is not None:
        if "eps" not in accepted:
            fail("eps", f"left out for the {method!r} method, which has no perturbation radius "
                 "(use --eval-eps for a robust-accuracy curve)", eps)
        if "eps" in params:
            fail("method_param", "free of 'eps' when --eps is given", "eps", describe_got=False)
        params["eps"] = eps
    return params


def _robust_curve(objective: Any, eps: float | None) -> Any:
    """Per-epoch PGD robust accuracy on the test split (history.json ``val_robust_acc``), or None."""
    if eps is None or eps == 0:
        return None
    from robustlab.adversarial.training import robust_accuracy_metric

    norm = getattr(objective, "norm", "linf")
    return robust_accuracy_metric(eps=eps, norm=norm)


def _initial_model(init: Path | None, arch: str, train_ds: Any, *, seed: int) -> tuple[Any, Any]:
    """A fresh ``arch`` for the data, or the saved model to fine-tune (checked against the data)."""
    from robustlab import zoo

    if init is None:
        return zoo.build_for_data(arch, train_ds, seed=seed)
    from robustlab._checks import fail
    from robustlab.errors import DataNotFoundError
    from robustlab.models import load_model

    if not init.exists():
        fail("init", "a saved model folder", str(init), error=DataNotFoundError)
    net, mconf = load_model(init)
    if tuple(mconf.input_shape) != tuple(train_ds.input_shape) or mconf.num_classes != train_ds.num_classes:
        fail("init", f"a model for inputs {tuple(train_ds.input_shape)} and {train_ds.num_classes} classes",
             f"inputs {tuple(mconf.input_shape)}, {mconf.num_classes} classes", describe_got=False)
    return net, mconf


# --------------------------------------------------------------------------- train --label-noise
def _parse_label_noise(text: str | None) -> Any:
    """Parse ``--label-noise`` before any work, so a bad spec fails fast."""
    if text is None:
        return None
    from robustlab.label_noise import parse_noise_spec

    return parse_noise_spec(text, name="label_noise")


def _apply_label_noise(spec: Any, train_ds: Any, *, seed: int, out_dir: Path, resume: bool) -> Any:
    """Noise the training split (seeded from --seed); noise.npz in the run folder, checked on --resume."""
    from robustlab._constants import NOISE_FILENAME
    from robustlab.label_noise.noise_file import noisy_training_split

    noisy_ds, noisy = noisy_training_split(spec, train_ds, seed=seed, run_dir=out_dir, resume=resume)
    if noisy is not None:
        _console().print(f"label noise {spec} on the training split: {noisy.num_flipped} of {len(train_ds)} "
                         f"labels changed (realised rate {noisy.realised_rate:.4f}); saved to "
                         f"{out_dir / NOISE_FILENAME}")
    return noisy_ds


# --------------------------------------------------------------------------- report
@app.command(epilog="Example: robustlab report runs/scan-digits-small-cnn")
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="One run folder (holding results.sqlite) to re-render "
                                                   "its report, or several to compare them on one page.")],
    out: Annotated[Optional[Path], typer.Option(help="Where the comparison page goes (a .html file or a "
                                                "folder). Default: compare.html in the current folder.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Comma-separated column names for a comparison, one "
                                                  "per run (default: the run folder names).")] = None,
) -> None:
    """Re-render a run's HTML report, or compare several runs side by side in one page.

    Example: robustlab report runs/ce runs/pgd-at --out compare.html
    """
    if len(run_dirs) == 1 and out is None and labels is None:
        from robustlab.scan import write_report

        path = write_report(run_dirs[0])
    else:
        from robustlab.scan.compare import write_comparison

        names = [x.strip() for x in labels.split(",")] if labels is not None else None
        path = write_comparison(run_dirs, out if out is not None else Path("compare.html"), labels=names)
    _console().print(f"report: {path}")


# --------------------------------------------------------------------------- data
@data_app.command("info", epilog="Example: robustlab data info digits")
def data_info(
    data: Annotated[str, typer.Argument(help="A built-in dataset name or a path.")] = "digits",
    split: Annotated[str, typer.Option(help="train, test or all.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Describe a dataset: size, input shape, classes and their counts."""
    from rich.table import Table

    from robustlab.data import load_dataset

    info = load_dataset(data, split=split).info()
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    table = Table(title=f"dataset {info['name']}")
    table.add_column("field")
    table.add_column("value")
    for key in ("kind", "num_examples", "input_shape", "num_classes", "storage"):
        table.add_row(key, str(info[key]))
    counts = ", ".join(f"{n}: {c}" for n, c in zip(info["class_names"], info["class_counts"]))
    table.add_row("class counts", counts)
    _console().print(table)


# --------------------------------------------------------------------------- corrupt
@app.command(epilog="Example: robustlab corrupt --data digits --out runs/digits-c --corruptions fog,contrast "
                    "--severities 1-5 --seed 0")
def corrupt(
    out: Annotated[Path, typer.Option(help="Output folder: <corruption>.npy per corruption + labels.npy "
                                      "(CIFAR-10-C layout).")],
    data: Annotated[str, typer.Option(help="A built-in image dataset name or a path.")] = "digits",
    split: Annotated[str, typer.Option(help="train, test or all.")] = "test",
    corruptions: Annotated[str, typer.Option(help="Comma-separated corruption names, or 'all' (the 19 "
                                             "ImageNet-C corruptions).")] = "all",
    severities: Annotated[str, typer.Option(help="Severities: a range '1-5' or a list '1,3,5'.")] = "1-5",
    preset: Annotated[Optional[str], typer.Option(help="Parameter table (cifar, tinyimagenet, imagenet, "
                                                  "mnist); default: chosen from the image size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the corruptions' randomness.")] = DEFAULT_SEED,
    batch_size: Annotated[int, typer.Option(help="Images corrupted at a time (memory bound).")] = 256,
) -> None:
    """Write a dataset corrupted in the CIFAR-10-C layout, with a progress bar.

    Files already complete in --out are skipped, so an interrupted run resumes where it stopped.
    """
    import torch

    from robustlab.corruptions import write_corrupted
    from robustlab.corruptions.image import IMAGE_CORRUPTIONS
    from robustlab.data import load_dataset

    names = list(IMAGE_CORRUPTIONS) if corruptions.strip() == "all" else [
        c.strip() for c in corruptions.split(",") if c.strip()]
    levels = _parse_severities(severities)
    dataset = load_dataset(data, split=split)
    result = write_corrupted(dataset, out, corruptions=names, severities=levels, preset=preset,
                             generator=torch.Generator().manual_seed(seed), batch_size=batch_size)
    _console().print(f"wrote {len(result.written)} corruption file(s), skipped {len(result.skipped)} "
                     f"already complete; {result.num_examples} images x {len(result.severities)} "
                     f"severities each, in {result.out_dir}")


def _parse_severities(text: str) -> list[int]:
    """'1-5' -> [1, 2, 3, 4, 5]; '1,3' -> [1, 3]; anything else is a one-line error."""
    from robustlab._checks import fail

    parts = text.replace(" ", "")
    try:
        if "-" in parts and "," not in parts:
            lo, hi = (int(p) for p in parts.split("-"))
            values = list(range(lo, hi + 1))
        else:
            values = [int(p) for p in parts.split(",") if p]
    except ValueError:
        values = []
    if not values or any(v < 1 or v > 5 for v in values):
        fail("severities", "a range like '1-5' or a list like '1,3,5' of severities in 1-5", text)
    return values


# --------------------------------------------------------------------------- audit


@app.command(epilog="Example: robustlab audit --data digits --folds 5 --epochs 10 --out runs/audit-digits")
def audit(
    data: Annotated[str, typer.Option(help="A built-in dataset name or a path.")] = "digits",
    model: Annotated[Optional[str], typer.Option(help="Architecture trained on each fold, or a saved robustlab "
                                                 "model folder (its architecture is retrained). Default: "
                                                 "small-cnn for images, mlp for tabular data.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder: suspects.csv, results.sqlite, "
                                                "report.html. Default: runs/audit-DATA.")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = AUDIT_CLI_FOLDS,
    epochs: Annotated[int, typer.Option(help="Training epochs per fold (short by default).")] = AUDIT_CLI_EPOCHS,
    split: Annotated[str, typer.Option(help="Which part of the data to audit: all, train or test.")] = "all",
    top: Annotated[int, typer.Option(help="Suspects listed in the report.")] = AUDIT_TOP_SUSPECTS,
    dynamics: Annotated[bool, typer.Option(help="Also train once with per-example records (AUM, forgetting "
                                           "events).")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the folds and of every model.")] = DEFAULT_SEED,
) -> None:
    """Find likely label errors, estimate the label noise and describe dataset health.

    Trains a model on K-1 folds and predicts the held-out fold (out-of-sample probabilities), runs
    confident learning, kNN label consistency and training-dynamics detectors, and writes the ranked
    suspects (suspects.csv) and an HTML report.
    """
    from robustlab._checks import check_choice
    from robustlab.data import load_dataset
    from robustlab.label_noise.audit import audit_dataset, write_audit

    check_choice("split", split, ("all", "train", "test"))
    from robustlab.label_noise.oof import check_folds

    dataset = load_dataset(data, split=split)
    check_folds(dataset, folds, name="folds")
    arch = _audit_model(model)
    outcome = audit_dataset(dataset, model=arch, n_splits=folds, seed=seed, epochs=epochs, dynamics=dynamics)
    out_dir = out if out is not None else Path("runs") / _slug(f"audit-{Path(data).name}")
    files = write_audit(outcome, dataset, out_dir, data_info=dataset.info() | {"source": data, "split": split},
                        top=top)
    health = outcome.health
    console = _console()
    console.print(f"audited {len(dataset)} examples of {data} ({split}) with {folds}-fold {outcome.model_name}: "
                  f"estimated noise rate {health.noise_rate:.2%}, {health.num_label_issues} likely label "
                  f"error(s), {health.num_exact_duplicates} exact duplicate(s), "
                  f"{int(health.outlier_mask.sum())} outlier(s)")
    console.print(f"suspects: {files.suspects_csv}")
    console.print(f"report: {files.report_path}")


def _audit_model(model: str | None) -> Any:
    """``--model``: None, an architecture name, or a saved model folder (its config is retrained)."""
    from robustlab._checks import fail
    from robustlab.errors import DataNotFoundError
    from robustlab.models import load_model, model_names

    if model is None or (model in model_names() and not Path(model).exists()):
        return model
    if not Path(model).exists():
        fail("model", f"a saved model folder or an architecture name ({', '.join(model_names())})", model,
             error=DataNotFoundError)
    return load_model(model)[1]


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors with exit status 2; ``--debug`` shows tracebacks."""
    from robustlab.errors import RobustlabError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="robustlab", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print("robustlab: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("robustlab: interrupted (stored results are kept; run the same command to resume)",
              file=sys.stderr)
        return 130
    except RobustlabError as exc:
        if debug:
            raise
        print(f"robustlab: error: {_as_cli_message(_one_line(str(exc)), args)}", file=sys.stderr)
        return 2
    except typer.exceptions.TyperException as exc:  # usage errors from the vendored click
        if debug:
            raise
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"robustlab: usage error: {_one_line(message)} (see --help)", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2) or 2)


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: Library argument names that a CLI flag feeds under another name.
_FLAG_FOR_ARGUMENT = {
    "name_or_path": "--data", "root": "--data", "out_dir": "--out", "run_dir": "--out", "probe": "--probes",
    "grad_clip_norm": "--grad-clip", "label_noise": "--label-noise",
}


def _as_cli_message(message: str, args: list[str]) -> str:
    """Name the command-line flag a user typed, not the library argument it was passed to."""
    import re

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        flag = _FLAG_FOR_ARGUMENT.get(name, "--" + name.replace("_", "-"))
        known = name in _FLAG_FOR_ARGUMENT and flag.startswith("--")
        return f"The '{flag}' option" if known or flag in args else match.group(0)

    return re.sub(r"^The '(\w+)' parameter", swap, message)


# --------------------------------------------------------------------------- attack


def _check_attack_flags(eps: str, norm: str, suite: str, num_examples: int | None, seed: int,
                        batch_size: int | None, workers: int | None = None) -> float:
    """Check the threat-model and evaluation flags shared by ``attack`` and ``repair interpolate``;
    return the radius (``--eps`` accepts fractions such as 8/255)."""
    from robustlab._checks import check_choice, check_int
    from robustlab.adversarial import NORMS
    from robustlab.adversarial.evaluate import SUITES
    from robustlab.adversarial.probe import parse_eps

    radius = parse_eps(eps, name="eps")
    check_choice("norm", norm, NORMS)
    check_choice("suite", suite, SUITES)
    if num_examples is not None:
        check_int("num_examples", num_examples, low=1)
    check_int("seed", seed, low=0)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    if workers is not None:
        check_int("workers", workers, low=1)
    return radius


@app.command(epilog="Example: robustlab attack --model small-cnn --data digits --eps 8/255 --norm linf "
                    "--suite standard --num-examples 200 --out attack.json")
def attack(
    eps: Annotated[str, typer.Option(help="Radius of the threat model: a decimal (0.1) or a fraction "
                                     "(8/255), for inputs in [0, 1].")],
    model: Annotated[str, typer.Option(help="A saved model (folder, .safetensors, TorchScript .pt) or an "
                                       "architecture name to train (cached) on the data.")] = "small-cnn",
    data: Annotated[str, typer.Option(help="A built-in dataset name or a path; its test split is "
                                      "attacked.")] = "digits",
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    suite: Annotated[str, typer.Option(help="standard, plus, rand (AutoAttack's) or fast "
                                       "(APGD-CE + APGD-T).")] = "standard",
    num_examples: Annotated[Optional[int], typer.Option(help="Attack a seeded random subset of this many "
                                                        "test examples (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of the attacks' randomness.")] = DEFAULT_SEED,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples attacked at a time (default: 250 on "
                                                      "a GPU, 128 on CPU).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes sharing an attack's batches on CPU "
                                                   "(default: torch's thread count; results do not "
                                                   "depend on it).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON to this file.")] = None,
) -> None:
    """Evaluate a model's robust accuracy with an attack suite (AutoAttack's standard by default).

    Each attack of the suite runs on the examples still unbroken; the table shows how many each
    one broke and how long it took.
    """
    import time

    import torch

    from robustlab._checks import check_writable_dir
    from robustlab.adversarial.evaluate import evaluate, resolve_batch_size
    from robustlab.adversarial.probe import select_examples

    # every flag is checked before a model is trained or loaded
    radius = _check_attack_flags(eps, norm, suite, num_examples, seed, batch_size, workers)
    if out is not None:
        check_writable_dir("out", out.parent if str(out.parent) else Path("."))
    entry_model, test_data, model_info = _scan_model(model, data, seed=seed, epochs=None, retrain=False)
    x, y = test_data.load(select_examples(len(test_data), num_examples, seed))
    start = time.perf_counter()
    # batch_size as given (None keeps evaluate's default chunking); the record says what it was
    result = evaluate(entry_model, x, y, eps=radius, norm=norm, suite=suite, batch_size=batch_size,
                      generator=torch.Generator().manual_seed(seed), workers=workers)
    seconds = time.perf_counter() - start
    record = {
        "model": model_info, "data": data, "num_examples": len(y), "norm": norm, "eps": radius, "eps_text": eps,
        "suite": suite, "seed": seed, "batch_size": resolve_batch_size(batch_size, x.device),
        "clean_accuracy": float(result.clean_accuracy),
        "robust_accuracy": float(result.robust_accuracy), "seconds": seconds, "version": __version__,
        "attacks": [{"name": s.name, "num_attacked": int(s.num_attacked), "num_broken": int(s.num_broken),
                     "seconds": float(s.seconds)} for s in result.attack_stats],
    }
    _print_attack(record)
    if out is not None:
        from robustlab._io import atomic_write_text

        atomic_write_text(out, json.dumps(record, indent=1) + "\n")
        _console().print(f"result: {out}")


def _print_attack(record: dict[str, Any]) -> None:
    from rich.table import Table

    n = record["num_examples"]
    table = Table(title=f"robustlab attack — {record['model']['name']} on {record['data']}, {record['norm']} "
                        f"eps={record['eps_text']} ({record['eps']:.4g}), {record['suite']} suite, {n} examples")
    for name, justify in (("stage", "left"), ("attacked", "right"), ("broken", "right"),
                          ("accuracy after", "right"), ("seconds", "right")):
        table.add_column(name, justify=justify)
    correct = round(record["clean_accuracy"] * n)
    table.add_row("clean", str(n), str(n - correct), f"{record['clean_accuracy']:.4f}", "")
    for s in record["attacks"]:
        correct -= s["num_broken"]
        table.add_row(s["name"], str(s["num_attacked"]), str(s["num_broken"]), f"{correct / n:.4f}",
                      f"{s['seconds']:.2f}")
    table.add_row("[bold]robust accuracy[/bold]", "", "", f"[bold]{record['robust_accuracy']:.4f}[/bold]",
                  f"{record['seconds']:.2f}")
    _console().print(table)


_FLAG_FOR_ARGUMENT.update({"eps": "--eps", "norm": "--norm", "suite": "--suite",
                           "num_examples": "--num-examples"})


# --------------------------------------------------------------------------- repair signature
def _load_patched(model_dir: Path, flag: str) -> tuple[Any, Any]:
    """A saved model and, when its folder holds one, the undo record of the signatures on it."""
    from robustlab._checks import fail
    from robustlab._constants import RWS_PATCH_LOG_FILENAME
    from robustlab.errors import DataNotFoundError
    from robustlab.models import load_model
    from robustlab.repair.signatures import load_patch_log

    if not model_dir.exists():
        fail(flag, "a saved model folder", str(model_dir), error=DataNotFoundError)
    net, mconf = load_model(model_dir)
    if model_dir.is_dir():
        load_patch_log(net, model_dir / RWS_PATCH_LOG_FILENAME)
    return net, mconf


def _check_out(out: Path, *, overwrite: bool, is_file: bool) -> None:
    from robustlab._checks import fail
    from robustlab._constants import MODEL_WEIGHTS_FILENAME

    taken = out.exists() if is_file else (out / MODEL_WEIGHTS_FILENAME).exists()
    if taken and not overwrite:
        fail("out", f"a path that does not hold a {'file' if is_file else 'model'} yet (or pass --overwrite)",
             str(out))
    if is_file and (out.is_dir() or not out.parent.is_dir()):
        fail("out", "a file path in an existing folder", str(out))


def _save_patched(net: Any, mconf: Any, out: Path) -> None:
    from robustlab._constants import RWS_PATCH_LOG_FILENAME
    from robustlab.models import save_model
    from robustlab.repair.signatures import save_patch_log

    save_model(net, out, mconf)
    if save_patch_log(net, out / RWS_PATCH_LOG_FILENAME) is None:
        (out / RWS_PATCH_LOG_FILENAME).unlink(missing_ok=True)


def _print_signature(sig: Any, title: str) -> None:
    import math

    from rich.table import Table

    table = Table(title=title)
    for name, justify in (("layer", "left"), ("parameters", "right"), ("relative change", "right")):
        table.add_column(name, justify=justify)
    for layer in sig.layers:
        count = sum(math.prod(s) for p, s in zip(sig.params, sig.shapes) if p.startswith(layer + ".") or p == layer)
        change = sig.relative_change.get(layer)
        table.add_row(layer, str(count), "" if change is None else f"{change:.4g}")
    _console().print(table)
    kind = "float" if sig.bits is None else f"int{sig.bits}"
    _console().print(f"{kind} signature{f' ({sig.name})' if sig.name else ''}: {sig.num_bytes:,} bytes, full "
                     f"weight copy {sig.full_copy_bytes:,} bytes, {sig.compression_ratio:.1f}x smaller")


@signature_app.command("extract", epilog="Example: robustlab repair signature extract --base runs/clean/model "
                       "--tuned runs/fog/model --out fog.safetensors --bits 8 --name fog")
def signature_extract(
    base: Annotated[Path, typer.Option(help="The clean model (a saved model folder).")],
    tuned: Annotated[Path, typer.Option(help="The same architecture fine-tuned from --base on a corruption.")],
    out: Annotated[Path, typer.Option(help="Where the signature goes (.safetensors).")],
    layers: Annotated[str, typer.Option(help="auto (the shallow layers that changed most), shallow (the first "
                                        "--num-layers) or comma-separated layer/parameter names.")] = "auto",
    num_layers: Annotated[Optional[int], typer.Option(help="Layers kept by auto/shallow (default: half the "
                                                      "model's, rounded up).")] = None,
    bits: Annotated[Optional[int], typer.Option(help="Quantise to 8 or 4 bits (default: float, exact).")] = None,
    name: Annotated[Optional[str], typer.Option(help="The corruption's name, stored with the signature.")] = None,
    buffers: Annotated[bool, typer.Option("--buffers", help="Also carry the chosen layers' BatchNorm running "
                                          "statistics (for a fine-tune with BatchNorm in training mode).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Extract a robust weight signature: --tuned minus --base on a few shallow layers (Cai et al. 2023)."""
    import warnings

    from robustlab.repair.signatures import extract_signature, save_signature

    _check_out(out, overwrite=overwrite, is_file=True)
    base_net, _ = _load_patched(base, "base")
    tuned_net, _ = _load_patched(tuned, "tuned")
    spec: Any = layers if layers in ("auto", "shallow") else [x.strip() for x in layers.split(",") if x.strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sig = extract_signature(base_net, tuned_net, layers=spec, num_layers=num_layers, bits=bits, name=name,
                                include_buffers=buffers)
    save_signature(sig, out)
    _print_signature(sig, f"robustlab repair signature extract — {len(sig.layers)} layers")
    _console().print(f"signature: {out}")


def _scales_for(scale: list[float] | None, n: int) -> list[float]:
    from robustlab._checks import fail

    values = list(scale or [1.0])
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        fail("scale", f"given once (for all) or once per --signature ({n})", f"{len(values)} values",
             describe_got=False)
    return values


@signature_app.command("apply", epilog="Example: robustlab repair signature apply --model runs/clean/model "
                       "--signature fog.safetensors --signature snow.safetensors --scale 0.8 --out runs/patched")
def signature_apply(
    model: Annotated[Path, typer.Option(help="The model to patch (a saved model folder).")],
    signature: Annotated[list[Path], typer.Option(help="A signature file; repeat to compose several.")],
    out: Annotated[Path, typer.Option(help="Folder for the patched model (with its undo record).")],
    scale: Annotated[Optional[list[float]], typer.Option(help="Strength: once for all, or once per "
                                                         "--signature (default 1.0).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --out.")] = False,
) -> None:
    """Add robust weight signatures to a model: theta + sum_i scale_i * signature_i.

    The undo record written next to the model lets `remove` restore the weights bit for bit.
    """
    from robustlab._checks import check_number
    from robustlab.repair.signatures import apply_signatures, load_signature

    scales = [check_number("scale", s) for s in _scales_for(scale, len(signature))]
    _check_out(out, overwrite=overwrite, is_file=False)
    net, mconf = _load_patched(model, "model")
    sigs = [load_signature(p) for p in signature]
    patched = apply_signatures(net, sigs, scales)
    _save_patched(patched, mconf, out)
    for sig, s in zip(sigs, scales):
        _print_signature(sig, f"applied at scale {s:g}")
    _console().print(f"patched model: {out} (signatures on it: {len(patched.robustlab_patches.applied())})")


@signature_app.command("remove", epilog="Example: robustlab repair signature remove --model runs/patched "
                       "--signature fog.safetensors --scale 0.8 --out runs/unpatched")
def signature_remove(
    model: Annotated[Path, typer.Option(help="A patched model folder.")],
    signature: Annotated[Path, typer.Option(help="The signature file to take off.")],
    out: Annotated[Path, typer.Option(help="Folder for the model without the signature.")],
    scale: Annotated[float, typer.Option(help="The scale it was applied with.")] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --out.")] = False,
) -> None:
    """Take a robust weight signature off a model.

    Exact (bit for bit) when --model holds the undo record `apply` wrote; otherwise arithmetic,
    within floating-point rounding (a warning says so).
    """
    import warnings

    from robustlab._checks import check_number
    from robustlab.repair.signatures import load_signature, remove_signature

    check_number("scale", scale)
    _check_out(out, overwrite=overwrite, is_file=False)
    net, mconf = _load_patched(model, "model")
    sig = load_signature(signature)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = remove_signature(net, sig, scale=scale)
    exact = not caught
    _save_patched(restored, mconf, out)
    _print_signature(sig, f"removed at scale {scale:g}")
    if not exact:
        _console(stderr=True).print("warning: no undo record for this signature at this scale; removed "
                                    "arithmetically (exact up to floating-point rounding)")
    _console().print(f"model: {out} ({'exact' if exact else 'arithmetic'} removal)")


_FLAG_FOR_ARGUMENT.update({"base": "--base", "tuned": "--tuned", "sig": "--signature", "sigs": "--signature",
                           "scales": "--scale", "num_layers": "--num-layers", "bits": "--bits",
                           "layers": "--layers"})


# --------------------------------------------------------------------------- repair interpolate
from robustlab._constants import (
    INTERP_CLI_ALPHAS,
    INTERP_CLI_EPS,
    INTERP_CLI_NUM_EXAMPLES,
    INTERP_CLI_SUITE,
)


@repair_app.command("interpolate", epilog="Example: robustlab repair interpolate --model-a runs/ce/model "
                    "--model-b runs/pgd-at/model --data digits --alphas 0,0.25,0.5,0.75,1 --eps 8/255 "
                    "--suite fast --num-examples 200 --save-alpha 0.5 --out runs/interpolate")
def repair_interpolate(
    model_a: Annotated[str, typer.Option("--model-a", help="The model at alpha = 0 (e.g. the standard one): "
                                         "a saved model folder, or an architecture name to train (cached).")],
    model_b: Annotated[str, typer.Option("--model-b", help="The model at alpha = 1 (e.g. the adversarially "
                                         "trained one), of --model-a's architecture.")],
    data: Annotated[str, typer.Option(help="A built-in dataset name or a path; its test split is "
                                      "evaluated.")] = "digits",
    alphas: Annotated[str, typer.Option(help="Comma-separated mixing coefficients; the weights are "
                                        "(1 - alpha) * a + alpha * b (values outside [0, 1] "
                                        "extrapolate).")] = INTERP_CLI_ALPHAS,
    eps: Annotated[str, typer.Option(help="Radius of the threat model: a decimal (0.1) or a fraction "
                                     "(8/255), for inputs in [0, 1].")] = INTERP_CLI_EPS,
    norm: Annotated[str, typer.Option(help="linf, l2 or l1.")] = "linf",
    suite: Annotated[str, typer.Option(help="fast (APGD-CE + APGD-T), standard, plus or rand.")] = INTERP_CLI_SUITE,
    num_examples: Annotated[Optional[int], typer.Option(help="Evaluate a seeded random subset of this many "
                                                        "test examples.")] = INTERP_CLI_NUM_EXAMPLES,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of the attacks' randomness.")] = DEFAULT_SEED,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples attacked at a time (default: 250 on "
                                                      "a GPU, 128 on CPU).")] = None,
    save_alpha: Annotated[Optional[float], typer.Option(help="Also save the model interpolated at this "
                                                        "alpha to OUT/model (needs --out).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for interpolation.json, .svg (and the saved "
                                                "model).")] = None,
) -> None:
    """Trace clean and robust accuracy along the line between two models' weights (WiSE-FT / RiFT).

    Every alpha is evaluated with the same attack randomness, so the points differ by their weights
    only; the table also names the alpha with the best clean accuracy that keeps the best robust
    accuracy on the curve (a RiFT-style pick).
    """
    import torch

    from robustlab._checks import check_number, check_writable_dir, fail
    from robustlab.adversarial.probe import select_examples
    from robustlab.repair.interpolate import (
        check_alphas,
        check_same_architecture,
        interpolation_curve,
    )

    grid = check_alphas("alphas", _parse_alphas(alphas))  # every flag is checked before models load
    radius = _check_attack_flags(eps, norm, suite, num_examples, seed, batch_size)
    if save_alpha is not None:
        check_number("save_alpha", save_alpha)
        if out is None:
            fail("out", "given with --save-alpha (the folder the interpolated model is saved to)", None)
    if out is not None:
        check_writable_dir("out", out)
    _check_model_flag("model_a", model_a)
    _check_model_flag("model_b", model_b)
    net_a, test_data, info_a = _scan_model(model_a, data, seed=seed, epochs=None, retrain=False)
    net_b, _, info_b = _scan_model(model_b, data, seed=seed, epochs=None, retrain=False)
    check_same_architecture(net_a, net_b, name="model_b", other="--model-a")
    x, y = test_data.load(select_examples(len(test_data), num_examples, seed))
    curve = interpolation_curve(net_a, net_b, x, y, alphas=grid, eps=radius, norm=norm, suite=suite,
                                batch_size=batch_size, generator=torch.Generator().manual_seed(seed))
    record = {
        "model_a": info_a, "model_b": info_b, "data": data, "num_examples": curve.num_examples,
        "norm": norm, "eps": radius, "eps_text": eps, "suite": suite, "seed": seed,
        "alphas": list(curve.alphas), "clean_accuracy": list(curve.clean_accuracy),
        "robust_accuracy": list(curve.robust_accuracy), "selected_alpha": curve.select_alpha(),
        "seconds": curve.seconds, "version": __version__,
    }
    _print_interpolation(record)
    if out is None:
        return
    if save_alpha is not None:
        from robustlab.models import save_model
        from robustlab.repair.interpolate import interpolate_weights

        config = _saved_config(info_a["path"])
        path = save_model(interpolate_weights(net_a, net_b, save_alpha), out / "model", config)
        record["saved_model"] = {"alpha": save_alpha, "path": str(path)}
        _console().print(f"model (alpha = {save_alpha:g}): {path}")
    from robustlab._io import atomic_write_text

    atomic_write_text(out / "interpolation.json", json.dumps(record, indent=1) + "\n")
    from matplotlib.figure import Figure

    from robustlab.scan.probe import figure_to_svg

    fig = Figure(figsize=(5.0, 3.5))
    curve.plot(ax=fig.subplots())
    atomic_write_text(out / "interpolation.svg", figure_to_svg(fig))
    _console().print(f"result: {out / 'interpolation.json'}, figure: {out / 'interpolation.svg'}")


def _parse_alphas(text: str) -> list[float]:
    from robustlab._checks import fail

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        fail("alphas", "comma-separated numbers (e.g. 0,0.25,0.5,0.75,1)", text)


def _check_model_flag(name: str, model: str) -> None:
    """The error _scan_model would raise, naming this command's flag instead of --model."""
    from robustlab._checks import fail
    from robustlab.errors import DataNotFoundError
    from robustlab.models import model_names

    if not Path(model).exists() and model not in model_names():
        fail(name, f"a saved model path or an architecture name ({', '.join(model_names())})", model,
             error=DataNotFoundError)


def _saved_config(path: str) -> Any:
    """The ModelConfig of --model-a, needed to save an interpolated copy."""
    from robustlab._checks import fail
    from robustlab.errors import CheckpointError
    from robustlab.models import load_model

    try:
        return load_model(path)[1]
    except CheckpointError:
        fail("model_a", "a robustlab model folder (or an architecture name) to save an interpolated model "
             "with --save-alpha", path)


def _print_interpolation(record: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"robustlab repair interpolate — {record['model_a']['name']} (alpha 0) to "
                        f"{record['model_b']['name']} (alpha 1) on {record['data']}, {record['norm']} "
                        f"eps={record['eps_text']} ({record['eps']:.4g}), {record['suite']} suite, "
                        f"{record['num_examples']} examples")
    for name in ("alpha", "clean accuracy", "robust accuracy"):
        table.add_column(name, justify="right")
    for a, c, r in zip(record["alphas"], record["clean_accuracy"], record["robust_accuracy"]):
        mark = a == record["selected_alpha"]
        cells = (f"{a:g}", f"{c:.4f}", f"{r:.4f}")
        table.add_row(*(f"[bold]{v}[/bold]" if mark else v for v in cells))
    _console().print(table)
    _console().print(f"best clean accuracy at the best robust accuracy (RiFT-style pick): alpha = "
                     f"{record['selected_alpha']:g}; {record['seconds']:.1f} s")


_FLAG_FOR_ARGUMENT.update({"model_a": "--model-a", "model_b": "--model-b", "alphas": "--alphas",
                           "save_alpha": "--save-alpha", "out": "--out"})


# --------------------------------------------------------------------------- certify
from robustlab._constants import (
    CERT_CLI_EPS,
    CERT_CLI_N,
    CERT_CLI_SIGMA,
    CERT_PROBE_ALPHA,
    CERT_PROBE_BOUNDS_BATCH_SIZE,
    CERT_PROBE_N0,
    CERT_PROBE_RADII,
    SMOOTHING_BATCH_SIZE,
)

_CERTIFY_METHODS = ("ibp", "crown", "crown-ibp", "smoothing")


@app.command("certify", epilog="Example: robustlab certify --model small-cnn --data digits --method crown "
                               "--eps 8/255 --num-examples 100 --out certify.json  (or --method smoothing "
                               "--sigma 0.25 --n 10000)")
def certify_command(
    method: Annotated[str, typer.Option(help="ibp, crown or crown-ibp (bound propagation: a proof for "
                                        "every input in the eps-ball) or smoothing (randomized "
                                        "smoothing: L2 radii that hold with probability 1 - alpha).")],
    model: Annotated[str, typer.Option(help="A saved model (folder, .safetensors, TorchScript .pt) or an "
                                       "architecture name to train (cached) on the data.")] = "small-cnn",
    data: Annotated[str, typer.Option(help="A built-in dataset name or a path; its test split is "
                                      "certified.")] = "digits",
    eps: Annotated[Optional[str], typer.Option(help="Radius: a decimal (0.03) or a fraction (8/255), for "
                                               "inputs in [0, 1]. Bound propagation: the threat model "
                                               "(default 8/255). Smoothing: also report the certified "
                                               "accuracy at this L2 radius.")] = None,
    norm: Annotated[Optional[str], typer.Option(help="linf or l2 for bound propagation (default linf); "
                                                "smoothing certifies l2 only.")] = None,
    sigma: Annotated[float, typer.Option(help="Smoothing: standard deviation of the Gaussian noise.")] =
        CERT_CLI_SIGMA,
    n: Annotated[int, typer.Option("--n", help="Smoothing: estimation samples per example (Cohen et al. "
                                   "use 100000).")] = CERT_CLI_N,
    n0: Annotated[int, typer.Option("--n0", help="Smoothing: selection samples per example.")] = CERT_PROBE_N0,
    alpha: Annotated[float, typer.Option(help="Smoothing: failure probability per example, in (0, 1).")] =
        CERT_PROBE_ALPHA,
    batch_size: Annotated[Optional[int], typer.Option(help="Noisy copies per forward pass (smoothing, "
                                                      "default 1000) or examples bounded at a time (bound "
                                                      "propagation, default 128).")] = None,
    num_examples: Annotated[Optional[int], typer.Option(help="Certify a seeded random subset of this many "
                                                        "test examples (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of the smoothing noise.")] = DEFAULT_SEED,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as JSON to this file.")] = None,
) -> None:
    """Certify a model's robustness: verified accuracy by IBP / CROWN / CROWN-IBP, or randomized smoothing.

    Bound propagation proves that no input in the eps-ball (intersected with [0, 1]) changes the
    prediction; randomized smoothing (Cohen et al. 2019, CERTIFY) certifies L2 radii of the
    smoothed classifier, each correct with probability at least 1 - alpha, and abstains when unsure.
    """
    import time

    from robustlab._checks import (
        check_choice,
        check_int,
        check_number,
        check_writable_dir,
        fail,
    )
    from robustlab._constants import CERTIFIED_NORMS
    from robustlab.adversarial.probe import parse_eps, select_examples

    # every flag is checked before a model is trained or loaded
    check_choice("method", method, _CERTIFY_METHODS)
    smoothing = method == "smoothing"
    if eps is not None:
        radius: float | None = parse_eps(eps, name="eps")
    else:
        radius = None if smoothing else parse_eps(CERT_CLI_EPS, name="eps")
    if smoothing:
        if norm is not None and norm != "l2":
            fail("norm", "'l2' with --method smoothing (Gaussian noise certifies L2 radii)", norm)
        norm = "l2"
    else:
        norm = check_choice("norm", norm if norm is not None else "linf", CERTIFIED_NORMS)
    # named by flag here: "--n=0" would not be recognised as the '--n' flag by _as_cli_message
    sigma = _named_by_flag("--sigma", check_number, sigma, low=0.0, low_inclusive=False)
    _named_by_flag("--n", check_int, n, low=1)
    _named_by_flag("--n0", check_int, n0, low=1)
    alpha = _named_by_flag("--alpha", check_number, alpha, low=0.0, high=1.0, low_inclusive=False,
                           high_inclusive=False)
    if batch_size is None:
        batch_size = SMOOTHING_BATCH_SIZE if smoothing else CERT_PROBE_BOUNDS_BATCH_SIZE
    check_int("batch_size", batch_size, low=1)
    if num_examples is not None:
        check_int("num_examples", num_examples, low=1)
    check_int("seed", seed, low=0)
    if out is not None:
        check_writable_dir("out", out.parent if str(out.parent) else Path("."))
    entry_model, test_data, model_info = _scan_model(model, data, seed=seed, epochs=None, retrain=False)
    x, y = test_data.load(select_examples(len(test_data), num_examples, seed))
    record: dict[str, Any] = {"model": model_info, "data": data, "method": method, "num_examples": len(y),
                              "norm": norm, "eps": radius, "eps_text": eps if eps is not None else (
                                  None if smoothing else CERT_CLI_EPS), "seed": seed, "version": __version__}
    start = time.perf_counter()
    if smoothing:
        record.update(_certify_smoothing(entry_model, x, y, test_data.num_classes, sigma=sigma, n0=n0, n=n,
                                         alpha=alpha, batch_size=batch_size, seed=seed, radius=radius))
    else:
        record.update(_certify_bounds(entry_model, x, y, test_data.num_classes, method=method, norm=norm,
                                      eps=radius, batch_size=batch_size))
    record["seconds"] = time.perf_counter() - start
    _print_certify(record)
    if out is not None:
        from robustlab._io import atomic_write_text

        atomic_write_text(out, json.dumps(record, indent=1) + "\n")
        _console().print(f"result: {out}")


def _named_by_flag(flag: str, check: Any, value: Any, **bounds: Any) -> Any:
    """Run a ``robustlab._checks`` check whose error names the command-line ``flag``."""
    from robustlab.errors import RobustlabError

    name = flag.lstrip("-").replace("-", "_")
    try:
        return check(name, value, **bounds)
    except RobustlabError as exc:
        raise type(exc)(str(exc).replace(f"The '{name}' parameter", f"The '{flag}' option", 1)) from None


def _clean_accuracy(model: Any, x: Any, y: Any, num_classes: int) -> float:
    from robustlab.models.inference import predict_logits

    return float((predict_logits(model, x, num_classes=num_classes).argmax(1) == y).double().mean())


def _certify_bounds(model: Any, x: Any, y: Any, num_classes: int, *, method: str, norm: str, eps: float,
                    batch_size: int) -> dict[str, Any]:
    """Verified accuracy of ``model`` on ``(x, y)``; a model or data bounds cannot handle is an error."""
    import torch

    from robustlab._checks import fail
    from robustlab.certified.bounds import verified

    if not isinstance(model, torch.nn.Module):
        fail("model", "a torch.nn.Module for bound propagation (use --method smoothing for a black-box "
             "model)", model)
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        fail("data", "a dataset with inputs in [0, 1] for bound propagation (normalisation belongs inside "
             "the model; use --method smoothing otherwise)",
             f"inputs in [{float(x.min()):.4g}, {float(x.max()):.4g}]", describe_got=False)
    device = next((t.device for t in (*model.parameters(), *model.buffers())), x.device)
    proven = torch.cat([verified(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device),
                                 eps=eps, norm=norm, method=method).cpu()
                        for i in range(0, len(y), batch_size)]) if len(y) else torch.zeros(0, dtype=torch.bool)
    return {"clean_accuracy": _clean_accuracy(model, x, y, num_classes), "batch_size": batch_size,
            "num_verified": int(proven.sum()),
            "verified_accuracy": float(proven.double().mean()) if len(y) else float("nan")}


def _certify_smoothing(model: Any, x: Any, y: Any, num_classes: int, *, sigma: float, n0: int, n: int,
                       alpha: float, batch_size: int, seed: int, radius: float | None) -> dict[str, Any]:
    """CERTIFY on ``(x, y)``: certified accuracy per radius, abstentions, ACR."""
    import torch

    from robustlab.certified.probe import max_certifiable_radius
    from robustlab.certified.smoothing import (
        average_certified_radius,
        certified_accuracy_curve,
        certify,
    )

    device = next((t.device for t in (*model.parameters(), *model.buffers())), x.device) if isinstance(
        model, torch.nn.Module) else x.device
    cert = certify(model, x.to(device), sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                   generator=torch.Generator().manual_seed(seed), num_classes=num_classes)
    labels = y.to(cert.predictions.device)
    radii = sorted({*CERT_PROBE_RADII, *(() if radius is None else (radius,))})
    _, acc = certified_accuracy_curve(cert, labels, radii)
    at = float(acc[radii.index(radius if radius is not None else 0.0)])
    noisy = float((cert.counts.gather(1, labels[:, None])[:, 0].double() / n).mean()) if len(y) else float("nan")
    return {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "batch_size": batch_size,
            "clean_accuracy": _clean_accuracy(model, x, y, num_classes), "certified_accuracy": at,
            "abstention_rate": cert.abstention_rate, "num_abstained": int(cert.abstained.sum()),
            "average_certified_radius": average_certified_radius(cert, labels), "noisy_accuracy": noisy,
            "max_certifiable_radius": max_certifiable_radius(sigma, n, alpha),
            "curve": [{"radius": float(r), "certified_accuracy": float(a)} for r, a in zip(radii, acc)]}


def _print_certify(record: dict[str, Any]) -> None:
    from rich.table import Table

    smoothing = record["method"] == "smoothing"
    what = (f"sigma={record['sigma']:g}, n0={record['n0']}, n={record['n']}, alpha={record['alpha']:g}"
            if smoothing else f"{record['norm']} eps={record['eps_text']} ({record['eps']:.4g})")
    table = Table(title=f"robustlab certify — {record['model']['name']} on {record['data']}, {record['method']}, "
                        f"{what}, {record['num_examples']} examples")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("clean accuracy", f"{record['clean_accuracy']:.4f}")
    if smoothing:
        at = f" (L2 radius {record['eps']:.4g})" if record["eps"] is not None else " (radius 0)"
        table.add_row(f"[bold]certified accuracy{at}[/bold]", f"[bold]{record['certified_accuracy']:.4f}[/bold]")
        for point in record["curve"]:
            table.add_row(f"  at L2 radius {point['radius']:g}", f"{point['certified_accuracy']:.4f}")
        table.add_row("abstentions", f"{record['num_abstained']} ({record['abstention_rate']:.2%})")
        table.add_row("average certified radius", f"{record['average_certified_radius']:.4f}")
        table.add_row("base accuracy under noise", f"{record['noisy_accuracy']:.4f}")
        table.add_row("largest certifiable radius", f"{record['max_certifiable_radius']:.4f}")
    else:
        table.add_row(f"[bold]verified accuracy ({record['method']})[/bold]",
                      f"[bold]{record['verified_accuracy']:.4f}[/bold]")
        table.add_row("verified examples", f"{record['num_verified']} of {record['num_examples']}")
    table.add_row("wall time (s)", f"{record['seconds']:.2f}")
    _console().print(table)
