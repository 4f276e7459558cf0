"""``SSAMF`` / ``SSAMD`` with Mi-Peng's sparse-SAM API, on samlab's sparse SAM.

Seed usage (Systematic-Investigation repo; unchanged but for the import)::

    from samlab.compat import SSAMF            # was: from solver.sam import SSAMF

    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    optimizer = SSAMF(model.parameters(), base, rho=0.2, sparsity=0.5, num_samples=128,
                      update_freq=1, pattern="unstructured", n=2, m=4)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)          # the clean pass, before step
            optimizer.zero_grad()
            loss.backward()
            def closure():                         # the perturbed pass
                optimizer.zero_grad()
                criterion(model(x), y).backward()
            optimizer.step(closure, model=model, train_data=train_set, logger=logger,
                           update=(i == 0 and epoch % update_freq == 0))

``step`` perturbs with the clean gradient, ``e = rho * mask * g / (||g|| + 1e-7)`` (the norm over
all of ``g``, as the seed), runs the closure at ``w + e``, restores ``w`` and steps the base
optimizer; with ``update`` it then refreshes the mask (SSAM-F: the empirical Fisher of
``num_samples`` shuffled samples of ``train_data``, global top-k for "unstructured", whole
tensors for "structured", N:M groups for "nm"; SSAM-D: drop and grow with the cosine-decayed
drop rate). The NeurIPS repository's ``step(closure, model=, epoch=, batch_idx=, train_data=,
logger=)`` works too (``update`` is then ``epoch % update_freq == 0 and batch_idx == 0``).
Only this compatibility layer accepts these extra arguments; ``samlab.optim.SSAMF`` refreshes
through ``refresh_masks(model, loss_fn, batches)``.

.. note::
   Differences from the seed (bugs there, the correct thing here): the Fisher is computed in
   eval mode without touching BatchNorm running statistics (the seed updates them once per
   sample) and without the training loader's workers; an N:M mask of a convolution groups
   along ``in * kh * kw`` of each filter as documented (the seed's reshape scrambles it); the
   state_dict holds the base optimizer's momentum and the masks. SSAM-D's "gradient" score is
   the mean gradient over ``num_samples`` training samples at the current weights (the seed
   uses the current batch's gradient), so SSAM-D needs ``model`` and ``train_data`` at a
   refresh with that strategy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from samlab.compat.instance import adopt_instance, check_instance, same_params
from samlab.optim import SSAMD as SamlabSSAMD
from samlab.optim import SSAMF as SamlabSSAMF

__all__ = ["SSAMD", "SSAMF"]

#: the seed's pattern names -> samlab's
PATTERNS = {"unstructured": "unstructured", "structured": "tensor", "nm": "nm"}
SEED_EPS = 1e-7  # the seed's normaliser eps
FISHER_BATCH = 32


def due(update: bool, update_freq: int, epoch: Any, batch_idx: Any) -> bool:
    """``update``, or the NeurIPS repository's rule from ``epoch`` and ``batch_idx``."""
    if update:
        return True
    return (
        epoch is not None and batch_idx is not None and epoch % update_freq == 0 and not batch_idx
    )


def batches_of(train_data: Any, generator: torch.Generator) -> Any:
    """Shuffled batches of ``train_data`` (a Dataset of ``(input, label)``), or None."""
    if train_data is None:
        return None
    shuffle = torch.Generator().manual_seed(int(torch.randint(2**31, (), generator=generator)))
    return torch.utils.data.DataLoader(
        train_data, batch_size=FISHER_BATCH, shuffle=True, generator=shuffle
    )


def log(logger: Any, message: str) -> None:
    if logger is not None:
        logger.log(message)


class SSAMF(SamlabSSAMF):
    """``SSAMF(params, base_optimizer, rho, sparsity, num_samples, update_freq,
    pattern="unstructured", n=2, m=4)`` with a built ``base_optimizer``. Masks start at zero
    (no perturbation before the first refresh), as the seed's."""

    def __init__(
        self,
        params,
        base_optimizer,
        rho,
        sparsity,
        num_samples,
        update_freq,
        pattern="unstructured",
        n=2,
        m=4,
    ):
        check_instance("SSAMF", base_optimizer)
        same_params("SSAMF", params, base_optimizer)
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {tuple(PATTERNS)}, got {pattern!r}")
        super().__init__(
            base_optimizer.param_groups,
            type(base_optimizer),
            rho=rho,
            sparsity=sparsity,
            pattern=PATTERNS[pattern],
            scope="global" if pattern == "unstructured" else "tensor",
            n=n,
            m=m,
            num_samples=int(num_samples),
            update_freq=int(update_freq),
            perturb_eps=SEED_EPS,
        )
        adopt_instance(self, base_optimizer)
        zeros = [torch.zeros_like(p, dtype=torch.bool) for p in self.all_params()]
        self.install_masks(zeros, {"initial": "zeros, as the seed"})

    def step(self, closure=None, model=None, train_data=None, logger=None, update=False,
             epoch=None, batch_idx=None, **kwargs):  # fmt: skip
        """The seed's step; returns the clean loss when the closure computed it."""
        loss = super().step(closure)
        if due(update, self.update_freq, epoch, batch_idx):
            if model is None or train_data is None:
                raise ValueError("SSAMF.step(update=True) needs model= and train_data=")
            log(logger, "Update Mask!")
            self.refresh_masks(model, F.cross_entropy, batches_of(train_data, self.generator))
            log(logger, f"Mask Lived Weight: {self.mask_info():.4f}")
        return loss

    def mask_info(self) -> float:
        """The fraction of entries perturbed."""
        return self.mask_density


class SSAMD(SamlabSSAMD):
    """``SSAMD(params, base_optimizer, rho, sparsity, drop_rate, drop_strategy,
    growth_strategy, update_freq, T_start=0, T_end=None)`` with a built ``base_optimizer``;
    the mask starts random with the given sparsity, as the seed's."""

    def __init__(
        self,
        params,
        base_optimizer,
        rho,
        sparsity,
        drop_rate,
        drop_strategy,
        growth_strategy,
        update_freq,
        T_start=0,  # noqa: N803 - the seed's names
        T_end=None,  # noqa: N803
        num_samples=128,
    ):
        check_instance("SSAMD", base_optimizer)
        same_params("SSAMD", params, base_optimizer)
        if T_start != 0:
            raise ValueError(
                f"T_start={T_start}: the drop rate decays from epoch 0 (the seed's own "
                "configuration always passes T_start=0)"
            )
        super().__init__(
            base_optimizer.param_groups,
            type(base_optimizer),
            rho=rho,
            sparsity=sparsity,
            drop_rate=drop_rate,
            drop_strategy=drop_strategy,
            growth_strategy=growth_strategy,
            update_freq=int(update_freq),
            T_end=T_end,
            scope="global",
            num_samples=int(num_samples),
            perturb_eps=SEED_EPS,
        )
        adopt_instance(self, base_optimizer)
        scores = [torch.rand(p.shape, generator=self.generator) for p in self.all_params()]
        masks = [m.to(p.device) for m, p in zip(self.pattern_masks(scores), self.all_params())]
        self.install_masks(masks, {"initial": "random, as the seed"})

    def step(self, closure=None, model=None, train_data=None, logger=None, update=False,
             epoch=None, batch_idx=None, **kwargs):  # fmt: skip
        """The seed's step; with ``update`` the mask is dropped and grown for ``epoch``."""
        loss = super().step(closure)
        if due(update, self.update_freq, epoch, batch_idx):
            if epoch is None:
                raise ValueError("SSAMD.step(update=True) needs epoch= (the drop rate decays)")
            log(logger, "Update Mask!")
            batches = batches_of(train_data, self.generator)
            self.refresh_masks(model, F.cross_entropy, batches, epoch=epoch)
            log(logger, f"Mask Lived Weight: {self.mask_info():.4f}")
        return loss

    def mask_info(self) -> float:
        """The fraction of entries perturbed."""
        return self.mask_density
