"""From parsed flags to a run: :func:`build_run` merges the flags, the preset and the dialect's
defaults into a frozen :class:`~samlab.train.classify.ClassifyConfig` and a :class:`Run` (data,
output folder, seeds, resume), and lists the notes to print (seed semantics reproduced or
changed, flags ignored)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from landscape.devices import resolve_device
from samlab.optim import get_optimizer_info
from samlab.train.classify.cli.flags import DIALECTS, Given, UsageError
from samlab.train.classify.cli.presets import DEFAULTS, NOTES, PRESETS
from samlab.train.classify.config import ClassifyConfig

__all__ = ["Run", "build_run"]

#: SSAM's --pattern -> samlab's (pattern, scope)
_SSAM_PATTERNS = {
    "unstructured": {"pattern": "unstructured", "scope": "global"},
    "structured": {"pattern": "tensor"},
    "nm": {"pattern": "nm"},
}
_SSAM_SCHEDULES = {"CosineLRscheduler": "cosine", "MultiStepLRscheduler": "multistep"}


@dataclass(frozen=True)
class Run:
    """What the command does besides the config."""

    config: ClassifyConfig
    dialect: str
    output: str | None = None
    data_dir: str | None = None
    download: bool = False
    seeds: tuple[int, ...] = (0,)
    resume: bool = False
    extend: bool = False
    sharpness: bool = False
    sharpness_samples: int = 512
    quiet: bool = False
    notes: tuple[str, ...] = field(default=())


def _dataset(name: str, augment: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """(canonical name, augmentation, model keywords) of a dataset spelling."""
    if name.strip().lower() == "digits":
        return "digits", None, {}
    from samlab.datasets.images import get_image_dataset_spec, resolve_image_dataset

    canonical, default_augment = resolve_image_dataset(name)
    spec = get_image_dataset_spec(canonical)
    return canonical, augment or default_augment, {"num_classes": spec.num_classes}


def _model(values: dict[str, Any], dialect: str, dataset: str) -> str:
    from samlab.models import list_models

    name, depth = values.get("model"), values.get("depth")
    if dialect == "gsam" and name is None:
        name = f"wideresnet{depth}x{values.get('width') or 1}"
        depth = None
    if name is None:
        raise UsageError("give the model: --arch NAME --depth N (SAM.v2) or --model NAME")
    if depth is None and name in list_models():
        return name
    from samlab.models import resolve_model_name

    try:
        return resolve_model_name(name, dataset, depth=depth)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _optimizer(values: dict[str, Any], dialect: str, notes: list[str]) -> tuple[str, dict]:
    """(registry spelling, extra optimizer keywords)."""
    name = str(values["optimizer"]).lower()
    extra: dict[str, Any] = {}
    if dialect == "vgg9":
        name = name if values.get("no_sam") else f"sam-{name}"
    if dialect == "samv2":
        if name == "sgd":
            if values.get("weight_decay", 1e-4) != 1e-4:
                notes.append("SAM.v2 hard-codes weight decay 1e-4 for --optmzr sgd (its "
                             "--weight-decay is ignored there): reproduced")  # fmt: skip
            values["weight_decay"] = 1e-4
        elif name == "adam":
            values["weight_decay"] = 0.0
            notes.append("SAM.v2's --optmzr adam takes no weight decay: reproduced")
        elif name == "sgd-sam" and values.get("sam_v2"):
            name = "onestep-sam"
    info = get_optimizer_info(name)  # ValueError naming the known ones
    if values.get("adaptive"):
        if not info.sam_family:
            raise UsageError(f"--adaptive applies to SAM-family optimizers, not {name!r}")
        extra["adaptive"] = True
    if values.get("nesterov"):
        extra["nesterov"] = True
    if values.get("optimizer_impl"):
        if not info.sam_family:
            raise UsageError(f"--optimizer-impl applies to the SAM family, not {name!r}")
        extra["impl"] = values["optimizer_impl"]
    if info.name == "gsam":
        if "alpha" in values:
            extra["alpha"] = float(values["alpha"])
    elif "alpha" in values and dialect != "gsam":
        raise UsageError(f"--alpha is GSAM's; the optimizer is {info.name!r}")
    if info.refreshes_masks:
        extra.update(_SSAM_PATTERNS[values.get("pattern", "unstructured")])
        if values.get("pattern") == "nm":
            extra.update(n=values.get("n_structured", 2), m=values.get("m_structured", 4))
        for key in ("sparsity", "num_samples", "update_freq"):
            if key in values:
                extra[key] = values[key]
        if info.name == "ssamd":
            for key in ("drop_rate", "drop_strategy", "growth_strategy"):
                if key in values:
                    extra[key] = values[key]
    return name, extra


def _schedule(values: dict[str, Any], dialect: str) -> dict[str, Any]:
    name = values.get("lr_schedule", "cosine")
    out: dict[str, Any] = {}
    if dialect == "ssam":
        if name not in _SSAM_SCHEDULES:
            raise UsageError(f"--lr_scheduler must be one of {sorted(_SSAM_SCHEDULES)}")
        name = _SSAM_SCHEDULES[name]
        out["lr_step"] = "epoch"
    elif dialect == "samv2":
        if name not in ("default", "cosine"):
            raise UsageError("--lr-scheduler must be 'default' or 'cosine'")
        if name == "default":  # MultiStep at epochs 80 and 120, x0.1, per iteration
            values.setdefault("milestones", [80, 120])
            values.setdefault("gamma", 0.1)
            name = "multistep"
        else:
            values.setdefault("lr_min", 4e-8)
        if not values.get("warmup"):
            values["warmup_epochs"] = 0.0
    out["lr_schedule"] = name
    if "milestones" in values and name == "multistep":
        out["lr_milestone_epochs"] = tuple(values["milestones"])
    if "gamma" in values:
        out["lr_gamma"] = float(values["gamma"])
    for key in ("lr_min", "warmup_epochs"):
        if key in values:
            out[key] = float(values[key])
    if values.get("lr_step"):
        out["lr_step"] = values["lr_step"]
    if out.get("warmup_epochs") and values.get("warmup_lr") is not None:
        out["warmup_start"] = min(float(values["warmup_lr"]) / float(values["lr"]), 1.0)
    return out


def build_run(given: Given) -> Run:
    """The config and run of a parsed command line (UsageError / ValueError when it cannot
    be built)."""
    preset = None
    if "preset" in given.values:
        name = given.values["preset"]
        if name not in PRESETS:
            raise UsageError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[name]
        if given.dialect not in (None, preset.dialect):
            raise UsageError(
                f"--preset {name} is a {DIALECTS[preset.dialect]} experiment, but "
                f"{DIALECTS[given.dialect]} flags were given"
            )
    dialect = given.dialect or (preset.dialect if preset else "samlab")
    values = {**DEFAULTS[dialect], **(preset.values if preset else {}), **given.values}
    notes = [
        note
        for note in NOTES.get(dialect, ())
        if "--pattern" not in note
        or "pattern" in given.values
        or "ssam" in str(values.get("optimizer"))
    ] + list(preset.notes if preset else ())  # the mask-pattern note only where masks are used
    for flag in ("wandb", "log_freq"):
        if flag in given.values:
            notes.append(f"{given.flags[flag]} is accepted and ignored (samlab writes CSV/JSON)")
    if values.get("implicit"):
        raise UsageError(
            f"{given.flags['implicit']}: SSAM's implicit sparse backward is not in samlab; use "
            "--opt ssamf-sgd (explicit Fisher masks) instead"
        )
    if values.get("extend") and not values.get("resume"):
        raise UsageError("--extend continues a run: use it together with --resume")
    if values.get("seeds") is not None and values["seeds"] < 1:
        raise UsageError(f"--seeds must be >= 1, got {values['seeds']}")
    if dialect == "gsam" and "threads" in given.values:  # davda54's example: loader workers
        values["num_workers"] = values.pop("threads")
    dataset, augment, model_kwargs = _dataset(str(values["dataset"]), values.get("augment"))
    optimizer, extra = _optimizer(values, dialect, notes)
    options: dict[str, Any] = dict(
        model=_model(values, dialect, dataset), model_kwargs=model_kwargs, dataset=dataset,
        augment=augment, optimizer=optimizer, optimizer_kwargs=extra, lr=float(values["lr"]),
        weight_decay=float(values["weight_decay"]), epochs=int(values["epochs"]),
        batch_size=int(values["batch_size"]), seed=int(values["seed"]),
        **_schedule(values, dialect),
    )  # fmt: skip
    if "momentum" in values:
        options["momentum"] = float(values["momentum"])
    if "rho" in values:
        options["rho"] = float(values["rho"])
    if "rho_min" in values and get_optimizer_info(optimizer).name == "gsam":
        options["rho_min"] = float(values["rho_min"])
    label_smoothing = values.get("label_smoothing")
    if dialect == "samv2" and not values.get("smooth"):
        label_smoothing = None
    if label_smoothing:
        options["label_smoothing"] = float(label_smoothing)
    if values.get("use_amp"):
        options["amp"] = "fp16"
    if values.get("gpu") is not None:
        options["device"] = f"cuda:{values['gpu']}"
    if values.get("cuda") and values.get("device") is None and values.get("gpu") is None:
        # the habit flag of every samlab command line: the CPU, with a note, without a GPU
        chosen = resolve_device(None, cuda=True, note=lambda line: print(line, file=sys.stderr))
        options["device"] = str(chosen)
    for key in ("amp", "device", "threads", "num_workers", "eval_batch_size", "bn_policy",
                "max_grad_norm", "weight_sparsity", "weight_mask", "perturbation",
                "steps_per_epoch"):  # fmt: skip
        if values.get(key) is not None:
            options[key] = values[key]
    for key in ("sync_bn", "compile", "deterministic"):
        if values.get(key):
            options[key] = True
    if values.get("smoke"):
        smoke = dict(epochs=2, steps_per_epoch=8, device="cpu", threads=1)
        kept = {k: v for k, v in options.items() if k not in smoke or k in given.values}
        config = ClassifyConfig.smoke(**kept)
    else:
        config = ClassifyConfig(**options)
    output = values.get("output")
    if output is None and dialect != "samlab":  # the seeds always write their logs
        output = f"runs/{dialect}-{config.model}-{config.dataset}-{config.optimizer}-s{config.seed}"
        notes.append(f"no --output given: writing to {output}")
    n = values.get("seeds")
    seeds = tuple(range(config.seed, config.seed + n)) if n else (config.seed,)
    return Run(
        config, dialect, output=output, data_dir=values.get("data_dir"),
        download=bool(values.get("download")), seeds=seeds, resume=bool(values.get("resume")),
        extend=bool(values.get("extend")), sharpness=bool(values.get("sharpness")),
        sharpness_samples=int(values.get("sharpness_samples") or 512),
        quiet=bool(values.get("quiet")), notes=tuple(notes),
    )  # fmt: skip
