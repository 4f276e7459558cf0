"""The command line's flags: samlab's own and the seed projects' spellings of them.

Every option has one destination and several spellings; each spelling belongs to a *dialect*
(``samlab``, ``ssam``: Mi et al.'s SSAM ``train.py``, ``gsam``: GSAM's ``example/train.py``,
``samv2``: SAM.v2's ``main_prune_train.py``, ``sampytorch``: sam.pytorch's ``cifar10.py``,
``vgg9``: sam_experiments' VGG-9 ``main.py``) or to none (spelled the same by several). The
parsed flags are merged per destination: two spellings with different values, or spellings of
two seed dialects in one command, are an error. The dialect used decides the defaults of the
flags left out (:mod:`samlab.train.classify.cli.presets`), so a seed's command runs with the
seed's settings.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["DIALECTS", "OPTIONS", "Given", "Option", "build_parser", "parse"]

DIALECTS = {
    "samlab": "samlab",
    "ssam": "SSAM (Mi et al., train.py)",
    "gsam": "GSAM (example/train.py)",
    "samv2": "SAM.v2 (main_prune_train.py)",
    "sampytorch": "sam.pytorch (cifar10.py)",
    "vgg9": "sam_experiments VGG-9 (code/experiments/vgg/main.py)",
}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Option:
    """One destination: ``spellings`` are (flag, dialect or None) pairs."""

    dest: str
    spellings: tuple[tuple[str, str | None], ...]
    help: str
    type: Any = str
    kind: str = "value"  # value | flag (store_true) | optional_bool (--adaptive [true|false])
    nargs: Any = None
    choices: tuple[str, ...] | None = None


def _o(dest, spellings, help, type=str, kind="value", nargs=None, choices=None) -> Option:
    pairs = tuple((s, None) if isinstance(s, str) else s for s in spellings)
    return Option(dest, pairs, help, type, kind, nargs, choices)


S, G, V, P, N = "ssam", "gsam", "samv2", "sampytorch", "vgg9"
L = "samlab"
OPTIONS: tuple[Option, ...] = (
    # ---- what to run
    _o("preset", [("--preset", L)], "a seed experiment's settings (--list-presets)"),
    _o("list_models", [("--list-models", L)], "print the model names and exit", kind="flag"),
    _o("list_presets", [("--list-presets", L)], "print the presets and exit", kind="flag"),
    _o(
        "dataset",
        ["--dataset"],
        "digits, fakedata, cifar10, cifar100, imagenet or a seed "
        "spelling (CIFAR10_cutout, CIFAR100_base, ImageNet_base, ...)",
    ),  # fmt: skip
    _o("augment", [("--augment", L)], "training augmentation: none, base (crop+flip), cutout"),
    _o(
        "data_dir",
        [("--data-dir", L), ("--data_dir", L), ("--datadir", S)],
        "data folder (default $SAMLAB_DATA)",
    ),  # fmt: skip
    _o(
        "download", [("--download", L)], "fetch a missing CIFAR copy (needs internet)", kind="flag"
    ),  # fmt: skip
    _o("model", ["--model", ("--arch", V)], "a model name or seed spelling (--list-models)"),
    _o("depth", ["--depth"], "with --arch (SAM.v2) or --width_factor (GSAM)", type=int),
    _o("width", [("--width_factor", G), ("--width-factor", L)], "WideResNet width", type=int),
    _o(
        "optimizer",
        [("--optimizer", L), ("--opt", S), ("--optmzr", V), ("--optim.name", P)],
        "an optimizer of samlab.optim's registry or a seed spelling (sam-sgd, ssamf-sgd, "
        "sgd-sam, ...)",
    ),  # fmt: skip
    _o(
        "optimizer_impl",
        [("--optimizer-impl", L)],
        "SAM family: auto (compiles the ascent on CPU from 2M parameters), loop, foreach, compiled",
        choices=("auto", "loop", "foreach", "compiled"),
    ),  # fmt: skip
    _o("sam_v2", [("--sam-v2", V)], "SAM.v2: one-step SAM", kind="flag"),
    _o("no_sam", [("--no_sam", N), ("--no-sam", N)], "the base optimizer alone", kind="flag"),
    _o(
        "adaptive",
        ["--adaptive"],
        "ASAM's adaptive perturbation ([true|false])",
        kind="optional_bool",
    ),  # fmt: skip
    _o(
        "rho",
        ["--rho", ("--sam-rho", V), ("--optim.rho", P), ("--rho_max", G)],
        "SAM radius (GSAM: at the peak lr)",
        type=float,
    ),  # fmt: skip
    _o(
        "rho_min", [("--rho_min", G), ("--rho-min", L)], "GSAM: rho at the lowest lr", type=float
    ),  # fmt: skip
    _o("alpha", [("--alpha", G)], "GSAM's alpha", type=float),
    # ---- optimisation
    _o(
        "lr",
        ["--lr", ("--learning_rate", G), ("--optim.lr", P), ("--lrate", N)],
        "peak learning rate",
        type=float,
    ),  # fmt: skip
    _o(
        "lr_min", [("--lr-min", L), ("--eta_min", S)], "lr at the end of cosine/linear", type=float
    ),  # fmt: skip
    _o("momentum", ["--momentum"], "SGD momentum", type=float),
    _o("nesterov", [("--nesterov", S)], "Nesterov momentum", kind="flag"),
    _o(
        "weight_decay",
        ["--weight-decay", "--weight_decay", ("--optim.weight_decay", P), ("--wdecay", N)],
        "weight decay",
        type=float,
    ),  # fmt: skip
    _o("epochs", ["--epochs", ("--optim.epochs", P), ("--max_epochs", N)], "epochs", type=int),
    _o("batch_size", ["--batch-size", "--batch_size"], "(global) batch size", type=int),
    _o(
        "eval_batch_size",
        [("--eval-batch-size", L), ("--test-batch-size", V)],
        "evaluation batch size",
        type=int,
    ),  # fmt: skip
    _o(
        "lr_schedule",
        [("--lr-schedule", L), ("--lr_scheduler", S), ("--lr-scheduler", V)],
        "cosine, linear, step, multistep, constant (SSAM: CosineLRscheduler, "
        "MultiStepLRscheduler; SAM.v2: default, cosine)",
    ),  # fmt: skip
    _o(
        "lr_step",
        [("--lr-step", L)],
        "the lr changes per iteration or per epoch",
        choices=("iteration", "epoch"),
    ),  # fmt: skip
    _o(
        "milestones",
        [("--milestones", L), ("--milestone", S)],
        "multistep epochs",
        type=int,
        nargs="+",
    ),  # fmt: skip
    _o("gamma", [("--lr-gamma", L), ("--gamma", S)], "multistep factor", type=float),
    _o(
        "warmup_epochs",
        ["--warmup-epochs", ("--warmup_epoch", S)],
        "linear warm-up epochs",
        type=float,
    ),  # fmt: skip
    _o(
        "warmup_lr",
        [("--warmup-lr", V), ("--warmup_init_lr", S)],
        "lr at the warm-up's start",
        type=float,
    ),  # fmt: skip
    _o("warmup", [("--warmup", V)], "SAM.v2: turn the warm-up on", kind="flag"),
    _o(
        "label_smoothing",
        [("--label-smoothing", L), ("--label_smoothing", G), ("--smooth-eps", V)],
        "label smoothing",
        type=float,
    ),  # fmt: skip
    _o("smooth", [("--smooth", V)], "SAM.v2: turn label smoothing on", kind="flag"),
    _o("max_grad_norm", [("--max-grad-norm", L)], "clip the final gradient", type=float),
    _o("bn_policy", [("--bn-policy", L)], "BatchNorm statistics: clean, perturbed, both, none"),
    # ---- sparse SAM (SSAM)
    _o("sparsity", [("--sparsity", S)], "SSAM: fraction NOT perturbed", type=float),
    _o("num_samples", [("--num_samples", S)], "SSAM: Fisher samples", type=int),
    _o("update_freq", [("--update_freq", S)], "SSAM: epochs between mask refreshes", type=int),
    _o(
        "pattern",
        [("--pattern", S)],
        "SSAM: unstructured, structured, nm",
        choices=("unstructured", "structured", "nm"),
    ),  # fmt: skip
    _o("n_structured", [("--n_structured", S)], "SSAM: N of N:M", type=int),
    _o("m_structured", [("--m_structured", S)], "SSAM: M of N:M", type=int),
    _o("drop_rate", [("--drop_rate", S)], "SSAM-D death rate", type=float),
    _o("drop_strategy", [("--drop_strategy", S)], "SSAM-D death score"),
    _o("growth_strategy", [("--growth_strategy", S)], "SSAM-D growth score"),
    _o(
        "implicit",
        [("--implicit", S), ("--samconv", S), ("--culinear", S)],
        "SSAM's implicit sparse backward (not in samlab: an error)",
        kind="flag",
    ),  # fmt: skip
    _o("wandb", [("--wandb", S)], "accepted and ignored (samlab writes CSV/JSON)", kind="flag"),
    _o("log_freq", [("--log_freq", S)], "accepted and ignored", type=int),
    # ---- static sparse weights
    _o(
        "weight_sparsity", [("--weight-sparsity", L)], "fraction of weights held at 0", type=float
    ),  # fmt: skip
    _o("weight_mask", [("--weight-mask", L)], "magnitude or erk", choices=("magnitude", "erk")),
    # ---- runtime
    _o("output", [("--output", L), ("-o", L), ("--output_dir", S)], "output folder"),
    _o("seed", ["--seed"], "random seed", type=int),
    _o("seeds", [("--seeds", L)], "run seeds S..S+N-1 into OUT/seed_S/", type=int),
    _o("resume", ["--resume"], "continue the run in --output", kind="flag"),
    _o(
        "extend", [("--extend", L)], "with --resume: continue to a larger --epochs", kind="flag"
    ),  # fmt: skip
    _o("amp", [("--amp", L)], "none, bf16, fp16 (CUDA)", choices=("none", "bf16", "fp16")),
    _o("use_amp", [("--use_amp", P)], "sam.pytorch: fp16 autocast (CUDA)", kind="flag"),
    _o(
        "perturbation",
        [("--perturbation", L)],
        "DDP: global or per_worker",
        choices=("global", "per_worker"),
    ),  # fmt: skip
    _o("sync_bn", [("--sync-bn", L)], "DDP: SyncBatchNorm", kind="flag"),
    _o(
        "compile", [("--compile", L), ("--jit_model", P)], "torch.compile the model", kind="flag"
    ),  # fmt: skip
    _o("deterministic", [("--deterministic", L)], "deterministic kernels", kind="flag"),
    _o("device", ["--device"], "cpu, cuda, cuda:N or auto"),
    _o("cuda", [("--cuda", L)], "a GPU when there is one, else the CPU (with a note)", kind="flag"),
    _o("gpu", [("--gpu", P)], "sam.pytorch: CUDA device index", type=int),
    _o("threads", ["--threads"], "torch threads", type=int),
    _o(
        "num_workers",
        ["--num_workers", ("--num-workers", L), ("--workers", V), ("-j", V)],
        "DataLoader workers",
        type=int,
    ),  # fmt: skip
    _o("steps_per_epoch", [("--steps-per-epoch", L)], "cap on steps per epoch", type=int),
    _o("smoke", [("--smoke", L)], "2 epochs of 8 steps on one CPU thread", kind="flag"),
    _o("quiet", [("--quiet", L)], "no progress bars", kind="flag"),
    _o("eval_only", [("--eval-only", L)], "evaluate --checkpoint and exit", kind="flag"),
    _o("checkpoint", [("--checkpoint", L)], "a last.pt/best.pt for --eval-only"),
    _o(
        "sharpness",
        [("--sharpness", L)],
        "report lambda_max and trace of the final model",
        kind="flag",
    ),  # fmt: skip
    _o(
        "sharpness_samples",
        [("--sharpness-samples", L)],
        "training samples for --sharpness",
        type=int,
    ),  # fmt: skip
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m samlab.train.classify",
        description="Train an image classifier with SGD or any SAM variant (one loop for all: "
        "optimizer.step(closure)). Accepts samlab's flags and the seed projects' spellings; "
        "the spelling decides the defaults of the flags left out.",
        argument_default=None,
        allow_abbrev=False,
    )
    for opt in OPTIONS:
        for i, (flag, dialect) in enumerate(opt.spellings):
            where = f" [{DIALECTS[dialect]}]" if dialect and dialect != "samlab" else ""
            kw: dict[str, Any] = {"dest": f"{opt.dest}@{i}", "help": opt.help + where}
            others = [f for f, _ in opt.spellings[1:]]
            if i == 0 and others:  # the other spellings are listed here, not repeated
                kw["help"] += f" (also {', '.join(others)})"
            if i:
                kw["help"] = argparse.SUPPRESS
            if opt.kind == "flag":
                kw.update(action="store_const", const=True)
            elif opt.kind == "optional_bool":
                kw.update(nargs="?", const=True, type=_bool, metavar="BOOL")
            else:
                kw.update(type=opt.type, nargs=opt.nargs, choices=opt.choices)
                if opt.choices is None:
                    kw["metavar"] = opt.dest.upper()
            p.add_argument(flag, **kw)
    return p


@dataclass(frozen=True)
class Given:
    """The flags of one command line: ``values`` by destination, the flag that gave each
    (``flags``), and the seed dialect they are spelled in (None: samlab's or shared ones)."""

    values: dict[str, Any]
    flags: dict[str, str]
    dialect: str | None


class UsageError(ValueError):
    """A contradictory or unsupported command line (exit status 2)."""


def parse(argv: list[str] | None = None) -> Given:
    """Parse and merge ``argv``; UsageError for contradictions, SystemExit(2) from argparse
    for unknown flags and bad values."""
    ns = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    values: dict[str, Any] = {}
    flags: dict[str, str] = {}
    dialects: dict[str, str] = {}
    for opt in OPTIONS:
        for i, (flag, dialect) in enumerate(opt.spellings):
            value = ns.get(f"{opt.dest}@{i}")
            if value is None:
                continue
            if opt.dest in values and values[opt.dest] != value:
                raise UsageError(
                    f"contradictory flags: {flags[opt.dest]} {values[opt.dest]!r} and "
                    f"{flag} {value!r} set the same option"
                )
            values[opt.dest], flags[opt.dest] = value, flag
            if dialect not in (None, "samlab"):
                dialects.setdefault(dialect, flag)
    if len(dialects) > 1:
        named = " and ".join(f"{flag} ({DIALECTS[d]})" for d, flag in dialects.items())
        raise UsageError(
            f"flags of two seed projects in one command: {named}; use one project's "
            "spellings (samlab's own flags go with any)"
        )
    return Given(values, flags, next(iter(dialects), None))
