"""The epochs of :func:`~samlab.train.classify.train_classifier`: one step, one epoch, evaluation.

:class:`Stepper` runs one training step for any optimizer of the registry: it builds a closure
with :func:`samlab.train.make_closure` (BatchNorm policy, DDP perturbation mode, AMP autocast
and GradScaler) and calls ``optimizer.step(closure)``; it never asks which optimizer it holds.
A one-pass optimizer under fp16 or gradient clipping runs the closure once and steps through
the scaler itself (``GradScaler.step`` takes no closure), a SAM-family optimizer gets the scaler
and clips inside its step (registry flag ``sam_family``). After every step it runs the
``after_step`` hooks (static sparse training re-applies its weight masks there).

:func:`train_epoch` steps through one epoch, reads the passes and the sharpness gap from
``optimizer.last_step`` where the optimizer keeps one, stops on a non-finite loss, and ends with
:func:`evaluate` (plain cross-entropy and accuracy in eval mode).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from samlab.train.classify.batches import Batches
from samlab.train.classify.config import ClassifyConfig, EpochMetrics
from samlab.train.closures import make_closure
from samlab.utils import epoch_generator

__all__ = ["Stepper", "evaluate", "train_epoch"]


class Stepper:
    """One training step: ``stepper(x, y) -> (loss, outputs at w, optimizer.last_step)``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loss_fn: nn.Module,
        config: ClassifyConfig,
        *,
        sam_family: bool,
        scaler: torch.amp.GradScaler | None = None,
        autocast_dtype: torch.dtype | None = None,
        perturbation: str = "global",
        after_step: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.loss_fn = (
            model,
            optimizer,
            scheduler,
            loss_fn,
        )
        self.sam_family, self.scaler, self.after_step = sam_family, scaler, tuple(after_step)
        self.options: dict[str, Any] = {"bn_policy": config.bn_policy}
        if perturbation != "global":
            self.options["perturbation"] = perturbation
        if scaler is not None:
            self.options["scaler"] = scaler
        if autocast_dtype is not None:
            self.options["autocast_dtype"] = autocast_dtype
        # one-pass optimizers: the trainer clips (the SAM family clips inside its step)
        self.clip = None if sam_family else config.max_grad_norm

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Any, Tensor, dict[str, Any]]:
        optimizer, scaler = self.optimizer, self.scaler
        closure = make_closure(self.model, self.loss_fn, x, y, optimizer, **self.options)
        if self.sam_family and scaler is not None:
            loss = optimizer.step(closure, scaler=scaler)
        elif self.clip is None and scaler is None:
            loss = optimizer.step(closure)
        else:  # one pass, then unscale / clip / step by hand
            loss = closure()
            if scaler is not None:
                scaler.unscale_(optimizer)
            if self.clip is not None:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.clip)
            if scaler is not None:
                scaler.step(optimizer)
            else:
                optimizer.step()
        if scaler is not None:
            scaler.update()
        self.scheduler.step()
        for hook in self.after_step:
            hook()
        last = getattr(optimizer, "last_step", None) or {}
        if loss is None:  # the protocol allows it when gradients came from the caller
            loss = last.get("clean_loss", last.get("perturbed_loss"))
        return loss, closure.last_outputs, last


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; the training mode is restored."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=batches.device)
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    count = 0
    try:
        for x, y in batches:
            out = model(x).float()
            total_loss += nn.functional.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(dim=1) == y).sum()
            count += len(y)
    finally:
        model.train(was_training)
    return total_loss.item() / count, correct.item() / count


def train_epoch(
    stepper: Stepper,
    train_batches: Batches,
    test_batches: Batches,
    config: ClassifyConfig,
    epoch: int,
    steps: int,
    progress: bool,
    *,
    eval_model: nn.Module | None = None,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> EpochMetrics:
    """One epoch of ``stepper`` on every batch, then the evaluation of ``eval_model`` (default:
    the stepper's model). ``reduce`` sums the epoch's counters over DDP ranks."""
    from tqdm.auto import tqdm

    group = stepper.optimizer.param_groups[0]
    lr = group["lr"]
    loss_sum, correct, seen, passes = 0.0, 0, 0, 0
    gap_sum, gap_count = 0.0, 0
    recorded = {"mask_density": [], "effective_radius": []}  # sparse SAM's diagnostics
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    with bar:
        batches = train_batches.epoch(epoch_generator(config.seed, epoch))
        for step, (x, y) in zip(range(steps), batches):
            loss, outputs, last = stepper(x, y)
            checked = [loss, last.get("perturbed_loss")]
            values = torch.stack(
                [torch.as_tensor(v).detach().float().cpu() for v in checked if v is not None]
            )
            if not bool(torch.isfinite(values).all()):
                raise FloatingPointError(
                    f"non-finite training loss ({values.tolist()}) at epoch {epoch + 1}, step "
                    f"{step + 1} with optimizer {config.optimizer!r} (lr={group['lr']:.4g}, "
                    f"rho={group.get('rho', 'n/a')}); the run diverged: try a lower lr or rho"
                )
            n = len(y)
            loss_sum += float(values[0]) * n
            correct += int((outputs.argmax(dim=1) == y).sum())
            seen += n
            passes += int(last.get("passes", 1))
            if last.get("sharpness_gap") is not None:
                gap_sum += float(last["sharpness_gap"])
                gap_count += 1
            for key, values in recorded.items():
                if last.get(key) is not None:
                    values.append(float(last[key]))
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if reduce is not None:
        world = reduce([1.0])[0]
        loss_sum, correct, seen, passes, gap_sum, gap_count = reduce(
            [loss_sum, correct, seen, passes, gap_sum, gap_count]
        )
        passes = round(passes / world)  # per step, as one process counts them
        correct, seen = round(correct), round(seen)
    test_loss, test_acc = evaluate(eval_model or stepper.model, test_batches)
    return EpochMetrics(
        epoch=epoch + 1,
        lr=float(lr),
        train_loss=loss_sum / seen,
        train_acc=correct / seen,
        test_loss=test_loss,
        test_acc=test_acc,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        steps=steps,
        passes=passes,
        sharpness_gap=gap_sum / gap_count if gap_count else math.nan,
        **{k: sum(v) / len(v) if v else math.nan for k, v in recorded.items()},
    )
