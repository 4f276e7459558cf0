"""SSAM-F: sparse SAM with masks from the diagonal Fisher (Mi et al., NeurIPS 2022).

At each refresh the score of every parameter entry is the empirical Fisher
``F = sum_i (grad l(x_i, y_i))^2`` over the first ``num_samples`` samples of the given batches
(or the true Fisher, labels sampled from the model, with ``true_fisher=True``), computed by
:func:`samlab.optim.fisher.fisher_diagonal` (the fastest exact per-sample method, chosen by
measurement on the first refresh and kept); the mask is the pattern's selection of the largest
scores (:class:`~samlab.optim.ssam.SparseSAM`). Under torch.distributed rank 0 computes the
Fisher once and broadcasts the masks (the seed all-reduced every per-sample gradient).
"""

from __future__ import annotations

from typing import Any

import torch

from samlab.optim.fisher import FISHER_METHODS, fisher_diagonal
from samlab.optim.sam import sam_keywords
from samlab.optim.ssam import SparseSAM, is_rank_zero

__all__ = ["SSAMF"]


class SSAMF(SparseSAM):
    """SSAM-F over any ``torch.optim`` optimizer.

    Args beyond :class:`~samlab.optim.ssam.SparseSAM`'s:
        true_fisher: sample the labels from the model's softmax (the true Fisher) instead of
            the data's labels (the empirical Fisher, the seed's).
        fisher_method: "auto" (the loop on CPU, where it measured fastest; "measure"
            elsewhere), "measure" (time the per-sample loop and ``torch.func.vmap`` on the
            first two chunks, keep the faster), "loop" or "vmap".

    Example::

        opt = create_optimizer("ssamf", model.parameters(), lr=0.05, momentum=0.9, rho=0.1,
                               sparsity=0.5, pattern="nm", n=2, m=4, num_samples=16)
        for epoch in range(epochs):
            if opt.masks_due(epoch):
                opt.refresh_masks(model, loss_fn, train_loader)
            ...  # opt.step(closure) as for SAM
    """

    method = "SSAMF"

    @sam_keywords(parent=SparseSAM.__init__)
    def __init__(
        self,
        params,
        base_optimizer=torch.optim.SGD,
        *,
        true_fisher: bool = False,
        fisher_method: str = "auto",
        **options: Any,
    ) -> None:
        if fisher_method not in FISHER_METHODS:
            raise ValueError(
                f"fisher_method must be one of {FISHER_METHODS}, got {fisher_method!r}"
            )
        super().__init__(params, base_optimizer, **options)
        self.true_fisher = bool(true_fisher)
        self.fisher_method = fisher_method
        #: the method chosen at the first refresh (then kept)
        self.fisher_choice: str | None = None

    def refresh_masks(self, model, loss_fn, batches, *, epoch=None, epochs=None) -> None:
        """Masks from the Fisher of ``model`` under ``loss_fn(outputs, targets)`` over the
        first ``num_samples`` samples of ``batches`` (an iterable of ``(inputs, targets)``).

        Raises:
            ValueError: ``batches`` holds no sample; a tensor the pattern cannot take with
                ``strict=True``.
        """
        params = self.all_params()
        info: dict[str, Any] = {"epoch": epoch}
        if is_rank_zero():
            method = self.fisher_choice or self.fisher_method
            result = fisher_diagonal(
                model,
                loss_fn,
                batches,
                params,
                num_samples=self.num_samples,
                true_fisher=self.true_fisher,
                generator=self.generator,
                method=method,
            )
            if result.method != "measure":  # decided: kept for later refreshes
                self.fisher_choice = result.method
            masks = self.pattern_masks(result.fisher)
            info.update(
                samples=result.samples, fisher_method=result.method, fisher_seconds=result.seconds
            )
            if result.per_sample:  # "measure" ran: what the choice compared
                info["fisher_seconds_per_sample"] = result.per_sample
        else:  # rank 0's masks arrive by broadcast
            masks = [torch.zeros_like(p, dtype=torch.bool) for p in params]
        self.install_masks(masks, info)

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "fisher_choice": self.fisher_choice}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self.fisher_choice = state.get("fisher_choice")
