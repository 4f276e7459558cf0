""":class:`HessianOperator`: the Hessian of a model's mean loss as a linear operator.

For a model ``f(x; theta)``, a loss ``l`` and fixed batches ``(x_b, y_b)`` of ``n_b`` samples,
the operator is the Hessian ``H = d^2 L / d theta^2`` of the sample-weighted mean loss

    L(theta) = sum_b (n_b / N) l(f(x_b; theta), y_b),    N = sum_b n_b,

over the selected parameters ``theta``, flattened in model order into one vector of length
``size``; with ``ggn=True`` it is the generalized Gauss-Newton matrix ``sum_b (n_b / N) J_b^T
H_b J_b`` (``J_b`` the Jacobian of the outputs, ``H_b`` the loss's Hessian in the outputs)
instead. It never forms the matrix: :meth:`HessianOperator.matvec` is one Hessian-vector
product, by double backward (``mode="reverse"``; on one batch the first-order graph is kept, so
a product costs one backward pass and no forward) or forward-over-reverse (``"forward"``), see
:mod:`landscape.curvature.products`. ``"auto"`` times both and takes the faster, see
:mod:`landscape.curvature.probe`: on one batch by answering the operator's first products in
each mode in turn (no product is made for the probe alone), on several by timing them on the
first batch; the choice is remembered per device, torch version, thread count, model class,
parameter shapes, input shape, dtype, loss, GGN flag and whether graphs are kept, in the
process and in a cache file (``LANDSCAPE_PROBE_CACHE=off`` turns the file off).

Products run with the model in eval mode: dropout is off and BatchNorm normalises with its
running statistics, a fixed function of the weights, so ``H`` is the symmetric Hessian of a
deterministic loss; every module's training flag is restored afterwards. The operator is of
the weights at construction: change them and build a new one (kept graphs hold the old ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.curvature.batches import OperatorBatches, Reducer
from landscape.curvature.probe import (
    ModeChoice,
    ProbingProducts,
    cached_choice,
    choose_mode,
    clear_mode_cache,
    probe_key,
)
from landscape.curvature.products import (
    PRODUCT_MODES,
    ForwardProducts,
    ProductSetting,
    ReverseProducts,
    check_loss,
    make_products,
    select_parameters,
)
from landscape.evaluate.provenance import hash_tensors, jsonable, package_version
from landscape.evaluate.weights import Prepared

__all__ = ["MODES", "HessianOperator", "clear_mode_cache"]

MODES = ("auto", *PRODUCT_MODES)
BLOCKS = ("module", "parameter")


class HessianOperator:
    """``H v`` of a model's mean loss over fixed data (see the module docstring).

    Args:
        model: any ``nn.Module`` taking the inputs and returning the loss's outputs.
        data: one ``(inputs, targets)`` batch, a sequence or ``DataLoader`` of such batches, or
            the :attr:`data` of another operator (shared as is).
        loss: ``"crossentropy"``, ``"mse"`` (torch's mean reductions) or a callable
            ``(outputs, targets) -> scalar`` mean loss.
        params: ``None`` (all parameters requiring grad), parameter names, or a predicate
            ``(name, parameter) -> bool`` over the parameters requiring grad.
        mode: ``"reverse"``, ``"forward"`` or ``"auto"`` (timed, see the module docstring;
            ``"reverse"`` without timing when a ``reducer`` is given).
        ggn: generalized Gauss-Newton products instead (``"crossentropy"``/``"mse"`` only).
        subset, subset_seed, batch_size: gather the samples, take a subset (an int ``k``: a
            seeded random one; or indices) and cut it into batches of ``batch_size`` (None: one
            batch); see :meth:`OperatorBatches.load`.
        reducer: ``reducer(flat) -> flat`` summing a tensor over processes (e.g. an MPI
            all-reduce): each process then handles its own batches and every product, loss and
            gradient is reduced once; ``N`` is the global sample count. Every process must
            make the same calls.
        shard: ``(rank, world)``: this process takes batches ``rank, rank + world, ...``
            (needs ``reducer``).
        keep_graph_batches: mode ``"reverse"`` keeps the first-order graphs when there are at
            most this many batches here (memory: about one forward's activations per batch),
            otherwise it redoes the forward per batch and product.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss: str | Callable[[Tensor, Tensor], Tensor] = "crossentropy",
        *,
        params: Sequence[str] | Callable[[str, Tensor], bool] | None = None,
        mode: str = "auto",
        ggn: bool = False,
        subset: int | Sequence[int] | np.ndarray | None = None,
        subset_seed: int = 0,
        batch_size: int | None = None,
        reducer: Reducer | None = None,
        shard: tuple[int, int] | None = None,
        keep_graph_batches: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_loss(loss, ggn)
        if isinstance(keep_graph_batches, bool) or not isinstance(keep_graph_batches, int):
            raise ValueError(f"keep_graph_batches must be an int >= 0, got {keep_graph_batches!r}")
        if keep_graph_batches < 0:
            raise ValueError(f"keep_graph_batches must be an int >= 0, got {keep_graph_batches}")
        self.model = model
        self.names = select_parameters(model, params)
        every = dict(model.named_parameters())
        tensors = [every[name] for name in self.names]
        self.dtype: torch.dtype = tensors[0].dtype
        self.device: torch.device = tensors[0].device
        self.shapes = [t.shape for t in tensors]
        self.numels = [t.numel() for t in tensors]
        self.size = sum(self.numels)
        if isinstance(data, OperatorBatches):
            if subset is not None or batch_size is not None or reducer or shard:
                raise ValueError(
                    "data are prepared batches: pass no subset, batch_size, reducer or shard"
                )
            self.data = data
        else:
            self.data = OperatorBatches.load(
                data,
                loss=loss,
                device=self.device,
                dtype=self.dtype,
                subset=subset,
                subset_seed=subset_seed,
                batch_size=batch_size,
                reducer=reducer,
                shard=shard,
            )
        self.loss_spec = loss
        self.ggn = bool(ggn)
        self.keep_graph_batches = keep_graph_batches
        self.graph_kept = len(self.data.batches) <= keep_graph_batches
        self.hvp_count = 0
        self.mode_requested = mode
        self.model_sha256 = hash_tensors(list(model.state_dict().items()))
        self._setting = self._make_setting(self.data.batches, self.data.weights())
        self._engine: ReverseProducts | ForwardProducts | ProbingProducts | None = None
        self._first_order: tuple[float, Tensor] | None = None
        self._choice = self._choose_mode(mode)

    @property
    def choice(self) -> ModeChoice:
        """The product mode and why (mode ``"auto"`` while the first products are timed)."""
        if isinstance(self._engine, ProbingProducts):
            if self._engine.choice is None:
                return self._engine.pending()
            self._choice, self._engine = self._engine.choice, self._engine.chosen
        return self._choice

    @property
    def mode(self) -> str:
        """``"reverse"`` or ``"forward"``; ``"auto"`` while the probe times the first
        products (see :mod:`landscape.curvature.probe`)."""
        return self.choice.mode

    def resolve_mode(self) -> str:
        """The product mode, choosing it now if the probe is still timing the first products:
        by products on a seeded random vector, made for the probe alone (not counted in
        :attr:`hvp_count`; ``probe_extra_products`` in the provenance). For callers that
        pass the mode on, e.g. to one operator per point of a map."""
        if isinstance(self._engine, ProbingProducts) and self._engine.choice is None:
            with self._running():
                self._engine.finish(self._probe_vector())
        return self.mode

    def _probe_vector(self) -> list[Tensor]:
        generator = torch.Generator().manual_seed(0)
        vector = torch.randn(self.size, generator=generator, dtype=torch.float64)
        return self._views(vector.to(device=self.device, dtype=self.dtype))

    # --- mode --------------------------------------------------------------------------------

    def _make_setting(self, batches, weights) -> ProductSetting:
        model, names, loss = self.model, self.names, self.loss_spec
        return ProductSetting(model, names, batches, weights, loss, self.ggn)

    def _choose_mode(self, requested: str) -> ModeChoice:
        if requested != "auto":
            return ModeChoice(requested, "requested")
        if self.data.reducer is not None or not self.data.batches:
            return ModeChoice("reverse", "one of several processes (a reducer): no probe")
        batches = self.data.batches
        key = probe_key(self._setting, self.graph_kept)
        cached = cached_choice(key)
        if cached is not None:
            return cached
        if len(batches) == 1:  # the first products are the probe
            self._engine = ProbingProducts(key, self._setting, self.graph_kept, self.device)
            return self._engine.pending()
        setting = self._make_setting(batches[:1], self.data.weights()[:1])
        with self._running():
            return choose_mode(key, setting, self.graph_kept, self._probe_vector(), self.device)

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        # Fused attention kernels have no double backward; the math kernel has.
        with Prepared(self.model), sdpa_kernel(SDPBackend.MATH):
            yield

    def _products(self) -> ReverseProducts | ForwardProducts | ProbingProducts:
        if self._engine is None:
            self._engine = make_products(self.mode, self._setting, self.graph_kept)
        return self._engine

    # --- the protocol ------------------------------------------------------------------------

    def _check(self, vector: Any, ndim: int) -> None:
        name, shape = ("v", f"({self.size},)") if ndim == 1 else ("V", f"({self.size}, k)")
        if not isinstance(vector, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(vector)}")
        if vector.ndim != ndim or vector.shape[0] != self.size:
            raise ValueError(
                f"{name} must have shape {shape}, got {tuple(vector.shape)}: flatten "
                "per-parameter tensors with operator.flatten(...)"
            )
        if vector.dtype != self.dtype or vector.device != self.device:
            raise ValueError(
                f"{name} is {vector.dtype} on {vector.device}, the operator works in "
                f"{self.dtype} on {self.device}: convert with .to(operator.device, operator.dtype)"
            )

    def _apply(self, columns: Sequence[Tensor]) -> Tensor:
        """``H`` times each column, reduced over processes, as an ``(n, k)`` tensor."""
        with self._running():
            products = self._products().apply([self._views(c) for c in columns])
        out = torch.zeros(self.size, 0, dtype=self.dtype, device=self.device)
        if products:
            out = torch.stack([self.flatten(p) for p in products], dim=1)
        return self.data.reduce(out.reshape(-1)).reshape(out.shape)

    def matvec(self, v: Tensor) -> Tensor:
        """``H @ v`` for a 1-D ``v`` of length :attr:`size` (not modified)."""
        self._check(v, 1)
        result = self._apply([v])[:, 0]
        self.hvp_count += 1
        return result

    def matmat(self, V: Tensor) -> Tensor:  # noqa: N803 - the protocol's name
        """``H @ V`` for an ``(n, k)`` ``V``; counts ``k`` products."""
        self._check(V, 2)
        result = self._apply(list(V.unbind(1)))
        self.hvp_count += V.shape[1]
        return result

    def provenance(self) -> dict[str, Any]:
        """JSON-able facts: mode and probe, matrix, loss, parameters, data and model digests."""
        facts = {
            "operator": "HessianOperator",
            "matrix": "ggn" if self.ggn else "hessian",
            "mode": self.mode,
            "mode_requested": self.mode_requested,
            **self.choice.describe(),
            "graph_kept": self.graph_kept and self.mode == "reverse",
            "keep_graph_batches": self.keep_graph_batches,
            "ggn": self.ggn,
            "loss_name": self.loss_spec
            if isinstance(self.loss_spec, str)
            else getattr(self.loss_spec, "__qualname__", repr(self.loss_spec)),
            "bn_mode": "eval",
            "size": self.size,
            "param_count": len(self.names),
            "param_names": list(self.names),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "hvp_count": self.hvp_count,
            "model_class": type(self.model).__qualname__,
            "model_sha256": self.model_sha256,
            **self.data.describe(),
            "torch_version": str(torch.__version__),
            "landscape_version": package_version(),
        }
        return jsonable(facts)

    # --- vectors, loss, gradient -------------------------------------------------------------

    def _views(self, flat: Tensor) -> list[Tensor]:
        parts = flat.split(self.numels)
        return [part.reshape(shape) for part, shape in zip(parts, self.shapes, strict=True)]

    def flatten(self, tensors: Sequence[Tensor] | Mapping[str, Tensor]) -> Tensor:
        """Per-parameter tensors (in :attr:`names` order, or a dict by name) as one flat vector
        in the operator's dtype and device."""
        if isinstance(tensors, Mapping):
            missing = [name for name in self.names if name not in tensors]
            if missing:
                raise ValueError(f"flatten: the dict lacks the parameters {missing}")
            tensors = [tensors[name] for name in self.names]
        tensors = list(tensors)
        if len(tensors) != len(self.names):
            raise ValueError(f"flatten takes {len(self.names)} tensors, got {len(tensors)}")
        for name, tensor, shape in zip(self.names, tensors, self.shapes):
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"flatten: {name} has shape {tuple(shape)}, got {tuple(tensor.shape)}"
                )
        return torch.cat([t.reshape(-1) for t in tensors]).to(device=self.device, dtype=self.dtype)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat vector as per-parameter views, by name."""
        self._check(flat, 1)
        return dict(zip(self.names, self._views(flat), strict=True))

    def _loss_and_gradient(self) -> tuple[float, Tensor]:
        if self._first_order is None:
            with self._running():
                loss, gradient = self._products().loss_and_gradient()
            both = torch.cat([loss.reshape(1).to(self.dtype), self.flatten(gradient)])
            both = self.data.reduce(both)
            self._first_order = (float(both[0]), both[1:].clone())
        return self._first_order

    def loss(self) -> float:
        """The mean loss ``L`` over all samples."""
        return self._loss_and_gradient()[0]

    def gradient(self) -> Tensor:
        """The gradient of ``L`` (flat, length :attr:`size`)."""
        return self._loss_and_gradient()[1].clone()

    # --- structure ---------------------------------------------------------------------------

    def blocks(self, by: str = "module") -> list[tuple[str, slice]]:
        """``(name, slice)`` of each parameter (``by="parameter"``) or each module's own
        parameters (``"module"``; ``""`` for the model's own) in the flat vector."""
        if by not in BLOCKS:
            raise ValueError(f"by must be one of {BLOCKS}, got {by!r}")
        found: list[tuple[str, slice]] = []
        start = 0
        for name, numel in zip(self.names, self.numels):
            key = name if by == "parameter" else name.rpartition(".")[0]
            if by == "module" and found and found[-1][0] == key:
                found[-1] = (key, slice(found[-1][1].start, start + numel))
            else:
                found.append((key, slice(start, start + numel)))
            start += numel
        return found

    def restricted(self, names: str | Sequence[str]) -> HessianOperator:
        """The operator over some of this one's parameters (names, or module names of
        :meth:`blocks`), on the same batches, loss and mode: the principal block of ``H``."""
        names = [names] if isinstance(names, str) else list(names)
        modules = {key for key, _ in self.blocks("module")}
        chosen = set()
        for name in names:
            if name in self.names:
                chosen.add(name)
            elif name in modules:
                chosen.update(n for n in self.names if n.rpartition(".")[0] == name)
            else:
                raise ValueError(
                    f"restricted: {name!r} is neither a parameter nor a module of this "
                    f"operator; its parameters are {self.names[:8]}"
                )
        return HessianOperator(
            self.model,
            self.data,
            self.loss_spec,
            params=[n for n in self.names if n in chosen],
            mode=self.mode,
            ggn=self.ggn,
            keep_graph_batches=self.keep_graph_batches,
        )

    def as_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` on float64 numpy vectors (symmetric)."""
        from landscape.optional import import_optional

        linalg = import_optional("scipy.sparse.linalg", "as_scipy() needs scipy: pip install scipy")

        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            out = self.matvec(v.to(device=self.device, dtype=self.dtype))
            return out.to(device="cpu", dtype=torch.float64).numpy()

        def matmat(x: np.ndarray) -> np.ndarray:
            v = torch.as_tensor(np.asarray(x, dtype=np.float64))
            out = self.matmat(v.to(device=self.device, dtype=self.dtype))
            return out.to(device="cpu", dtype=torch.float64).numpy()

        return linalg.LinearOperator(
            (self.size, self.size), matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=np.float64
        )
