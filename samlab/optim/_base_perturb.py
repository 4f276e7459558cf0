"""The perturbation of :class:`~samlab.optim.SAMBase`: ``w`` to ``w + e`` and back.

``_ascend`` perturbs every group along its directions (the gradients, or what a method uses in
their place) with the global norm ``n`` of the directions over all groups (``||T d||`` on ASAM's
adaptive groups, ``T = |w| + eta``): ``e = rho_group / (n + eps) * d``, times ``T^2`` on
adaptive groups. The loop and foreach paths back ``w`` up and restore it by copy
(:func:`kernels.perturb_`, :func:`kernels.copy_`); the compiled path does the whole ascent in
one compiled call (:func:`kernels.compiled.ascent_into`) that writes ``w + e`` into spare
buffers (views of one contiguous buffer, kept across steps) whose storages are swapped with
``p.data``, so restoring ``w`` is a swap back. :class:`_Perturbation` holds these methods of
:class:`~samlab.optim.SAMBase`, with ``||e||`` for the step statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

import kernels
from kernels import compiled as _compiled


class _Perturbation:
    """The perturbation of :class:`~samlab.optim.SAMBase` (a base class of it): the global norm,
    ``w + e`` by copy (loop, foreach) or by swapping storages (compiled), the restore, the
    backups and spare buffers, and ``||e||``."""

    # ----------------------------------------------------------------- perturbation
    def _backups_for(self, params: list[Tensor]) -> list[Tensor]:
        out = []
        for p in params:
            buf = self._backups.get(id(p))
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
                buf = torch.empty_like(p, memory_format=torch.preserve_format)
                self._backups[id(p)] = buf
            out.append(buf)
        return out

    def _global_norm(self, grouped, directions=None) -> Tensor:
        """``||g||`` over all groups, with ASAM's ``T = |w| + eta`` on adaptive groups."""
        parts = []
        for i, (group, params, grads) in enumerate(grouped):
            if not params:
                continue
            vectors = grads if directions is None else directions[i]
            adaptive = group.get("adaptive", False)
            if self._impl_for(params[0].device) == "compiled":
                try:
                    if adaptive:
                        flat = [t for pair in zip(params, vectors) for t in pair]
                        sq = _compiled.compiled("norm_sq_into")(flat, group.get("eta", 0.0))
                    else:
                        sq = _compiled.compiled("norm_sq_into")(list(vectors), None)
                    parts.append(sq.sqrt())
                    continue
                except Exception as err:  # no compiler, inductor failure
                    self._compile_failed(err)
            parts.append(
                kernels.global_norm(
                    vectors,
                    params=params if adaptive else None,
                    eta=group.get("eta", 0.0),
                    impl=self._impl_for(params[0].device),
                )
            )
        if not parts:
            return torch.zeros((), device=self._first_device())
        if len(parts) == 1:
            return parts[0]
        return torch.linalg.vector_norm(torch.stack([x.to(parts[0].device) for x in parts]))

    def _ascend(self, grouped, directions, rho_of) -> Tensor:
        """Perturb every group along ``directions`` (a list per group) with the global norm of
        ``directions`` (ASAM's ``||T d||`` on adaptive groups); returns that norm.

        The compiled path does it in one graph (:func:`kernels.compiled.ascent_into`); the
        others compute :meth:`_global_norm` and then :meth:`_perturb`.
        """
        norm = self._ascend_compiled(grouped, directions, rho_of)
        if norm is None:
            norm = self._global_norm(grouped, directions)
            self._perturb(grouped, directions, norm, rho_of)
        return norm

    def _ascend_compiled(self, grouped, directions, rho_of) -> Tensor | None:
        """The compiled ascent over all groups in one call: the norm, then ``w + e`` written
        into spare buffers whose storages are swapped with ``p.data`` (restoring is a swap
        back). None where it does not apply (other impl, mixed devices or dtypes, failure)."""
        segments = [(g, ps, ds) for (g, ps, _), ds in zip(grouped, directions) if ps]
        if not segments:
            return None
        params = [p for _, ps, _ in segments for p in ps]
        dirs = [d for _, _, ds in segments for d in ds]
        layout = self._uniform(params, dirs)
        if layout is None:
            return None
        device, dtype = layout
        spec = tuple(
            (len(ps), float(g["perturb_eps"]), float(g["eta"]) if g.get("adaptive") else None)
            for g, ps, _ in segments
        )
        rhos = [torch.tensor(float(rho_of(g)), dtype=dtype, device=device) for g, _, _ in segments]
        spare = self._flat_spare(params, device, dtype)
        try:
            norm = _compiled.compiled("ascent_into")(spare, params, dirs, rhos, spec)
        except Exception as err:  # no compiler, inductor failure, recompile limit
            self._compile_failed(err)
            return None
        self._swap_in(params, spare)
        self._perturbed = True
        self.current_pass = "perturbed"
        if self.track_stats:
            self.last_step["perturbation_norm"] = self._perturbation_norm(
                grouped, directions, norm, rho_of
            )
        return norm

    def _flat_spare(
        self, params: list[Tensor], device: torch.device, dtype: torch.dtype
    ) -> list[Tensor]:
        """Spare buffers for the compiled ascent: views shaped like ``params`` into one
        contiguous buffer (each view 64-byte aligned), kept across steps. Writing ``w + e`` as
        one stream measured about 7% faster than into separate allocations (ViT, CPU).
        Non-contiguous parameters (channels_last) get ``empty_like`` buffers instead."""
        cached = self._spare
        if (
            cached is not None
            and cached[0] == tuple(map(id, params))
            and all(v.shape == p.shape for v, p in zip(cached[1], params))
            and cached[1][0].dtype == dtype
            and cached[1][0].device == device
        ):
            return cached[1]
        if not all(p.is_contiguous() for p in params):  # e.g. channels_last: keep the format
            return self._backups_for(params)
        align = max(1, 64 // torch.empty((), dtype=dtype).element_size())
        sizes = [-(-p.numel() // align) * align for p in params]
        flat = torch.empty(sum(sizes), dtype=dtype, device=device)
        views, offset = [], 0
        for p, size in zip(params, sizes):
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += size
        self._spare = (tuple(map(id, params)), views)
        return views

    def _swap_in(self, params: list[Tensor], spare: list[Tensor]) -> None:
        """``p.data <- spare`` (holding ``w + e``); the original storage becomes the backup."""
        for p, buf in zip(params, spare):
            original = p.data
            p.data = buf
            self._swapped.append((p, original))

    def _perturb(self, grouped, directions, norm: Tensor, rho_of) -> None:
        """Back up ``w`` and perturb every group along ``directions`` (a list per group):
        ``e = rho_group / (norm + eps) * direction`` (times ``T^2`` for ASAM)."""
        for (group, params, _), dirs in zip(grouped, directions):
            if not params:
                continue
            rho = rho_of(group)
            scale = rho / (norm + group["perturb_eps"])
            if self._impl_for(params[0].device) == "compiled" and self._perturb_swap(
                group, params, dirs, scale
            ):
                continue
            self._copied.append(params)
            kernels.perturb_(
                params,
                dirs,
                self._backups_for(params),
                scale,
                adaptive=group.get("adaptive", False),
                eta=group.get("eta", 0.0),
                impl=self._impl_for(params[0].device),
            )
        self._perturbed = True
        self.current_pass = "perturbed"
        if self.track_stats:
            self.last_step["perturbation_norm"] = self._perturbation_norm(
                grouped, directions, norm, rho_of
            )

    def _perturb_swap(self, group, params, dirs, scale) -> bool:
        """Compiled path: write ``w + e`` into spare buffers and swap storages with ``p.data``
        (restoring is then a swap back, no copy); the original storage is untouched."""
        spare = self._backups_for(params)
        eta = group.get("eta", 0.0) if group.get("adaptive", False) else None
        try:
            _compiled.compiled("perturb_into")(spare, params, list(dirs), scale, eta)
        except Exception as err:
            self._compile_failed(err)
            return False
        self._swap_in(params, spare)
        return True

    def _restore(self) -> None:
        if not self._perturbed:
            return
        for p, original in self._swapped:  # the spare (w + e) stays for the next step
            p.data = original
        self._swapped = []
        for params in self._copied:
            kernels.copy_(
                params,
                [self._backups[id(p)] for p in params],
                impl=self._impl_for(params[0].device),
            )
        self._copied = []
        self._perturbed = False

    def _perturbation_norm(self, grouped, directions, norm: Tensor, rho_of) -> Tensor:
        """||e|| over all groups (exact for per-group rho and ASAM); computed from the
        backed-up weights, so call it right after perturbing."""
        squares = []
        # w of each perturbed parameter: its swapped-out storage, else its backup copy
        before = {id(p): original for p, original in self._swapped}
        for (group, params, _), grads in zip(grouped, directions):
            if not params:
                continue
            scale = rho_of(group) / (norm + group["perturb_eps"])
            if group.get("adaptive", False):
                t = [
                    (before.get(id(p), self._backups.get(id(p))).abs() + group["eta"]) ** 2 * g
                    for p, g in zip(params, grads)
                ]
            else:
                t = grads
            squares.append((scale * kernels.global_norm(t)) ** 2)
        if not squares:
            return torch.zeros(())
        return torch.stack([s.to(squares[0].device) for s in squares]).sum().sqrt()
