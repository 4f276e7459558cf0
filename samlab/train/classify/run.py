"""The classification run: :func:`train_classifier` (model, optimizer, schedule, AMP, DDP,
sparse weights, checkpoints) around the epochs of :mod:`samlab.train.classify.loop`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.devices import resolve_device as landscape_device
from landscape.io import DIGEST_KEY, atomic_path, atomic_write, payload_sha256
from samlab.optim import ProportionalRho, create_optimizer, get_optimizer_info
from samlab.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from samlab.train.classify import distributed
from samlab.train.classify.batches import Batches
from samlab.train.classify.checkpointing import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_JSON_NAME,
    METRICS_NAME,
    append_metrics,
    data_check,
    find_checkpoint,
    resume_check,
    summary,
    write_json,
    write_metrics,
)
from samlab.train.classify.config import ClassifyConfig, EpochMetrics, TrainResult
from samlab.train.classify.digest import DIGEST_FIELD, data_digest
from samlab.train.classify.loop import Stepper, train_epoch
from samlab.train.classify.schedules import lr_factor
from samlab.train.classify.sparse import weight_masks_for
from samlab.train.locks import run_folder_lock

__all__ = ["resolve_device", "train_classifier"]


def resolve_device(name: str) -> torch.device:
    """The device of a config's ``device`` ("auto": CUDA when available); otherwise the command
    lines' one rule (:func:`landscape.devices.resolve_device`): an absent CUDA device is a
    ``ValueError`` naming the devices there are."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return landscape_device(name)


@contextlib.contextmanager
def _runtime(config: ClassifyConfig) -> Iterator[None]:
    """Threads and deterministic kernels for the run; restored afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def _detaching(hooks: Sequence[Any]) -> Iterator[None]:
    """Detach the step hooks when the run ends, however it ends."""
    try:
        yield
    finally:
        for hook in hooks:
            hook.detach()


def _amp(config: ClassifyConfig, device: torch.device):
    """(autocast dtype, GradScaler) of ``config.amp``."""
    if config.amp == "bf16":
        return torch.bfloat16, None
    if config.amp == "fp16":
        if device.type != "cuda":
            raise ValueError(
                "amp='fp16' needs a CUDA device (fp16 training uses a GradScaler); on "
                f"{device.type} use amp='bf16'"
            )
        return torch.float16, torch.amp.GradScaler("cuda")
    return None, None


def _optimizer_options(config: ClassifyConfig, train_samples: int) -> dict[str, Any]:
    """The optimizer's keywords: the config's, and bSAM's training-set size ``num_data``."""
    options = config.optimizer_options()
    if get_optimizer_info(config.optimizer).samples_weights:  # bSAM's N
        options.setdefault("num_data", train_samples)
    return options


def _optimizer(config: ClassifyConfig, params, options: dict[str, Any]) -> torch.optim.Optimizer:
    options = dict(options)
    if config.rho_min is not None:  # GSAM's rho follows the lr from rho (peak) to rho_min
        options["rho_schedule"] = ProportionalRho(config.rho, config.rho_min, lr_min=config.lr_min)
    return create_optimizer(config.optimizer, params, **options)


def _history(checkpoint: dict[str, Any]) -> list[EpochMetrics]:
    saved = checkpoint.get("extra", {}).get("history", [])
    names = [f.name for f in dataclasses.fields(EpochMetrics)]
    return [EpochMetrics(**{n: row.get(n, math.nan) for n in names}) for row in saved]


def train_classifier(
    config: ClassifyConfig,
    train_data: Any,
    test_data: Any,
    *,
    model: nn.Module | None = None,
    progress: bool = True,
    output_dir: str | Path | None = None,
    callback: Callable[[EpochMetrics], None] | None = None,
    resume: bool = True,
    extend: bool = False,
    step_hooks: Sequence[Any] = (),
) -> TrainResult:
    """Train a classifier with ``config`` and return its per-epoch history and final state.

    Args:
        config: the run (see :class:`ClassifyConfig`).
        train_data, test_data: an ``(inputs, targets)`` pair of tensors (moved to the device
            once; fastest for small data), a ``Dataset`` of such pairs, or a ``DataLoader``
            (used as it is: its own batch size, order and workers; not under DDP).
        model: train this module in place instead of ``create_model(config.model)``.
        progress: tqdm bars (per run and per epoch) showing loss and accuracy.
        output_dir: where ``config.json``, ``metrics.csv``, ``metrics.json``, ``last.pt`` and
            ``best.pt`` go; the run resumes from a ``last.pt`` (or a samlab 0.2
            ``checkpoint.pt``) there written under the same config, bit for bit.
        callback: called with each epoch's :class:`EpochMetrics` after its checkpoint is saved.
        resume: False starts afresh even if ``output_dir`` holds a checkpoint.
        extend: allow a larger ``config.epochs`` than the checkpoint's: the finished epochs are
            kept and the learning-rate schedule is recomputed over the new total from the step
            reached (recorded in ``config.json`` under ``extensions``).
        step_hooks: objects with ``attach(model, optimizer, start_step=...)`` and ``detach()``,
            attached for the run (``start_step``: the steps already done by a resumed run), e.g.
            :class:`landscape.curvature.TopEigenvalueTracker` to record λ_max every N steps.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP, ``batch_size`` is the
    global batch (each rank steps on its part), and only rank 0 writes files.

    Raises:
        FloatingPointError: a non-finite training loss (names the epoch and step).
        ValueError: ``output_dir`` holds a checkpoint of a different config, or one trained on
            other data (``data_sha256``, :mod:`samlab.train.classify.digest`, naming both
            digests); fp16 off CUDA.
        samlab.train.locks.FolderBusyError: another run holds ``output_dir``.

    A run is tied to its data: ``last.pt``, ``best.pt``, ``config.json`` and ``metrics.json``
    record ``data_sha256`` (also ``TrainResult.data_sha256``); a checkpoint written before the
    digest is accepted once and stamped. One run per folder: the run holds
    ``output_dir/.lock`` (:func:`samlab.train.locks.run_folder_lock`, released by the kernel
    when the process dies). Every file is written atomically (a kill or SIGTERM leaves the
    previous ``last.pt`` whole).
    """
    from tqdm.auto import tqdm

    from samlab.models import create_model

    device = resolve_device(config.device)
    world = distributed.world_from_env()
    if world.distributed:
        device = distributed.init(world, device)
    autocast_dtype, scaler = _amp(config, device)
    if config.sync_bn and device.type != "cuda":
        raise ValueError(
            "sync_bn needs CUDA: torch's SyncBatchNorm works with GPU modules only (on CPU "
            "each DDP rank normalises over its part of the batch)"
        )
    progress = progress and world.main
    out = Path(output_dir) if output_dir is not None else None
    digest = data_digest(train_data, test_data)
    lock = run_folder_lock(out) if out is not None and world.main else contextlib.nullcontext()
    with lock:  # one run per folder: a second one is refused at once (FolderBusyError)
        checkpoint, extended_from, stamp = None, None, False
        found = find_checkpoint(out) if out is not None and resume else None
        if found is not None:
            checkpoint = load_checkpoint(found, map_location=device)
            extended_from = resume_check(found, checkpoint.get("config"), config, extend=extend)
            recorded = checkpoint.get("extra", {}).get(DIGEST_FIELD)
            stamp = data_check(found, recorded, digest)
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with _runtime(config), torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed)
            kwargs = dict(config.model_kwargs)
            net = model if model is not None else create_model(config.model, **kwargs)
            net.to(device).train()
            extra = checkpoint.get("extra", {}) if checkpoint is not None else {}
            if checkpoint is not None:
                net.load_state_dict(checkpoint["model"])
            masks = weight_masks_for(config, net, saved=extra.get("weight_masks"))
            train_batches = Batches(
                train_data, config.batch_size, train=True, device=device,
                drop_last=config.drop_last, num_workers=config.num_workers,
                shard=(world.rank, world.size),
            )  # fmt: skip
            test_batches = Batches(test_data, config.eval_batch_size, train=False, device=device)
            steps = min(len(train_batches), config.steps_per_epoch or len(train_batches))
            options = _optimizer_options(config, train_batches.size)
            optimizer = _optimizer(config, net.parameters(), options)
            factor = lr_factor(config, steps)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            history: list[EpochMetrics] = []
            extensions = list(extra.get("extensions", []))
            if checkpoint is not None:
                optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
                if scaler is not None and "scaler" in extra:
                    scaler.load_state_dict(extra["scaler"])
                set_rng_state(checkpoint["rng"])
                history = _history(checkpoint)
            start = len(history)
            if extended_from is not None:  # the lr of the next step on the recomputed schedule
                for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = base * factor(scheduler.last_epoch)
                extensions.append({"from_epochs": extended_from, "to_epochs": config.epochs,
                                   "at_epoch": start, "at_step": scheduler.last_epoch})  # fmt: skip
                if world.main:
                    print(
                        f"note: extending the run in {out} from {extended_from} to "
                        f"{config.epochs} epochs at epoch {start}: the learning-rate schedule is "
                        "recomputed over the new total from here, so this run differs from a "
                        f"fresh run of {config.epochs} epochs",
                        file=sys.stderr,
                    )
            wrapped = net
            if world.distributed:
                wrapped = distributed.wrap(net, device, sync_bn=config.sync_bn)
            train_model = torch.compile(wrapped) if config.compile else wrapped
            info = get_optimizer_info(config.optimizer)
            after_step = [] if masks is None else [lambda: masks.apply(net)]
            stepper = Stepper(
                train_model, optimizer, scheduler,
                nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), config,
                sam_family=info.sam_family, scaler=scaler, autocast_dtype=autocast_dtype,
                perturbation=config.perturbation if world.distributed else "global",
                after_step=after_step,
            )  # fmt: skip
            writes = out is not None and world.main
            if writes:
                resolved = {
                    "config": config.to_dict(),
                    "resolved": {
                        "device": str(device),
                        "world_size": world.size,
                        "optimizer": info.name,
                        "optimizer_options": options,
                        "model_class": type(net).__name__,
                        "parameters": sum(p.numel() for p in net.parameters()),
                        "weight_density": None if masks is None else masks.density(),
                        "train_samples": train_batches.size,
                        "test_samples": test_batches.size,
                        "steps_per_epoch": steps,
                        "lr_schedule_steps": f"per {config.lr_step}",
                        "torch": torch.__version__,
                    },
                    "extensions": extensions,
                    DIGEST_FIELD: digest,
                }
                atomic_write(out / CONFIG_NAME, json.dumps(resolved, indent=2, default=str) + "\n")
                write_metrics(out / METRICS_NAME, history)
            runs = tqdm(
                total=config.epochs, initial=start, desc=info.name, disable=not progress, unit="ep"
            )
            for hook in step_hooks:
                hook.attach(net, optimizer, start_step=start * steps)
            best = max((m.test_acc for m in history), default=-math.inf)
            reduce = distributed.sum_over_ranks if world.distributed else None
            with runs, _detaching(step_hooks):
                if start:
                    runs.set_postfix(test_acc=f"{history[-1].test_acc:.3f}")
                for epoch in range(start, config.epochs):
                    refresh_seconds = math.nan
                    if info.refreshes_masks:
                        refresh_seconds = _refresh_masks(
                            optimizer, wrapped, stepper.loss_fn, train_batches, config, epoch
                        )
                    metrics = train_epoch(
                        stepper, train_batches, test_batches, config, epoch, steps, progress,
                        eval_model=net, reduce=reduce,
                    )  # fmt: skip
                    metrics = dataclasses.replace(metrics, refresh_seconds=refresh_seconds)
                    history.append(metrics)
                    if writes:  # the checkpoint first: a row in metrics.csv implies its last.pt
                        state = dict(
                            model=net, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1,
                            config=config,
                            extra={
                                "history": [dataclasses.asdict(m) for m in history],
                                "extensions": extensions,
                                DIGEST_FIELD: digest,
                                **({} if masks is None else {"weight_masks": masks.state_dict()}),
                                **({} if scaler is None else {"scaler": scaler.state_dict()}),
                            },
                        )  # fmt: skip
                        save_checkpoint(out / CHECKPOINT_NAME, **state)
                        if metrics.test_acc > best:
                            save_checkpoint(out / BEST_NAME, **state)
                        append_metrics(out / METRICS_NAME, metrics)
                        partial = TrainResult(config, tuple(history), {}, out, start, digest)
                        write_json(out / METRICS_JSON_NAME, summary(partial))
                    best = max(best, metrics.test_acc)
                    runs.update(1)
                    runs.set_postfix(
                        loss=f"{metrics.train_loss:.4f}", test_acc=f"{metrics.test_acc:.3f}"
                    )
                    if callback is not None:
                        callback(metrics)
            if writes and start == len(history) and history:  # a finished run, loaded
                if stamp:  # written before runs recorded their data: accepted once, stamped
                    _stamp(found, checkpoint, digest)
                finished = TrainResult(config, tuple(history), {}, out, start, digest)
                write_json(out / METRICS_JSON_NAME, summary(finished))
        state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        return TrainResult(config, tuple(history), state, out, start, digest)


def _stamp(path: Path, checkpoint: dict[str, Any], digest: str) -> None:
    """Record ``digest`` in the checkpoint at ``path`` that has none (its contents otherwise
    unchanged; written atomically with a new checksum)."""
    payload = {k: v for k, v in checkpoint.items() if k != DIGEST_KEY}
    payload["extra"] = {**payload.get("extra", {}), DIGEST_FIELD: digest}
    payload[DIGEST_KEY] = payload_sha256(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    print(f"note: {path} had no data digest; stamped with that of the data given", file=sys.stderr)


def _refresh_masks(optimizer, model, loss_fn, train_batches, config, epoch: int) -> float:
    """The capability ``refreshes_masks`` (sparse SAM): new masks at the start of a due epoch,
    from the training data in an order seeded by the run's seed and the epoch (resumable);
    returns the refresh's wall seconds (0 when the epoch is not due)."""
    import time

    if not optimizer.masks_due(epoch):
        return 0.0
    began = time.perf_counter()
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    optimizer.refresh_masks(
        model, loss_fn, train_batches.epoch(order), epoch=epoch, epochs=config.epochs
    )
    return time.perf_counter() - began
