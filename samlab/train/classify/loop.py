"""The epochs of :func:`~samlab.train.classify.train_classifier`: batches, steps, evaluation.

:class:`Batches` serves ``(inputs, targets)`` on the device from tensors, a ``Dataset`` or a
``DataLoader``, in the order drawn from a generator seeded by ``(seed, epoch)``
(:func:`~samlab.utils.epoch_generator`); :func:`lr_factor` is the per-iteration learning-rate
schedule; :func:`train_epoch` calls ``optimizer.step(closure)`` on every batch, reads the passes
and the sharpness gap from ``optimizer.last_step`` where the optimizer keeps one, stops on a
non-finite loss, and ends with :func:`evaluate` (plain cross-entropy and accuracy in eval mode).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from samlab.train.classify.config import ClassifyConfig, EpochMetrics
from samlab.train.closures import make_closure
from samlab.utils import epoch_generator


# --------------------------------------------------------------------------- data
class Batches:
    """Batches of (inputs, targets) on ``device`` from tensors, a Dataset or a DataLoader."""

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        train: bool,
        config: ClassifyConfig,
        device: torch.device,
    ) -> None:
        self.device, self.batch_size, self.train = device, batch_size, train
        self.drop_last = train and config.drop_last
        self.num_workers = config.num_workers
        self.tensors: tuple[Tensor, Tensor] | None = None
        self.loader: DataLoader | None = None
        self.dataset: Dataset | None = None
        if isinstance(data, TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, targets = data
            if len(inputs) != len(targets):
                raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
            self.tensors = (torch.as_tensor(inputs).to(device), torch.as_tensor(targets).to(device))
            self.size = len(inputs)
        elif isinstance(data, DataLoader):
            self.loader = data
            self.size = len(data.dataset)
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.dataset = data
            self.size = len(data)
        else:
            raise TypeError(
                "data must be an (inputs, targets) pair of tensors, a Dataset or a DataLoader, "
                f"got {type(data).__name__}"
            )
        if self.size == 0:
            raise ValueError("the data set is empty")

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(None)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass; training data in the order ``randperm(n, generator)`` for every input
        form but a DataLoader (tensors and Datasets give the same batches)."""
        if self.loader is not None:
            batches = iter(self.loader)
        else:
            shuffle = self.train and generator is not None
            order = torch.randperm(self.size, generator=generator) if shuffle else None
            if self.tensors is not None:
                batches = self._tensor_batches(order)
            else:
                batches = iter(
                    DataLoader(
                        self.dataset,
                        batch_size=self.batch_size,
                        sampler=None if order is None else order.tolist(),
                        generator=generator,  # seeds the workers
                        drop_last=self.drop_last,
                        num_workers=self.num_workers,
                        pin_memory=self.device.type == "cuda",
                    )
                )
        for inputs, targets in batches:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device)

    def _tensor_batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.tensors
        for i in range(len(self)):
            rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                rows = order[rows].to(self.device)
            yield x[rows], y[rows]


# --------------------------------------------------------------------------- helpers
def lr_factor(config: ClassifyConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        progress = min(step / total_steps, 1.0)
        if config.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.lr_schedule == "step":
            return config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
        return 1.0

    return factor


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
            out = model(x)
            total_loss += nn.functional.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(dim=1) == y).sum()
            count += len(y)
    finally:
        model.train(was_training)
    return total_loss.item() / count, correct.item() / count


# --------------------------------------------------------------------------- epoch
def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    train_batches: Batches,
    test_batches: Batches,
    config: ClassifyConfig,
    epoch: int,
    steps: int,
    progress: bool,
) -> EpochMetrics:
    """One epoch of ``optimizer.step(closure)`` on every batch, then the evaluation."""
    from tqdm.auto import tqdm

    group = optimizer.param_groups[0]
    lr = group["lr"]
    loss_sum, correct, seen, passes = 0.0, 0, 0, 0
    gap_sum, gap_count = 0.0, 0
    recorded = {"mask_density": [], "effective_radius": []}  # sparse SAM's diagnostics
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    with bar:
        batches = train_batches.epoch(epoch_generator(config.seed, epoch))
        for step, (x, y) in zip(range(steps), batches):
            closure = make_closure(model, loss_fn, x, y, optimizer, bn_policy=config.bn_policy)
            loss = optimizer.step(closure)
            last = getattr(optimizer, "last_step", None) or {}
            if loss is None:  # the protocol allows it when gradients came from the caller
                loss = last.get("clean_loss", last.get("perturbed_loss"))
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
            scheduler.step()
            n = len(y)
            loss_sum += float(values[0]) * n
            correct += int((closure.last_outputs.argmax(dim=1) == y).sum())
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
    test_loss, test_acc = evaluate(model, test_batches)
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
