"""A random Gaussian ``n x p`` matrix that is never stored whole: :class:`RandomSubspace`.

Keskar et al.'s sharpness in a random subspace perturbs ``w + A y`` with ``A`` an ``n x p``
matrix of i.i.d. standard normal entries. For a network of ``n`` = 10^7 parameters and
``p = 100`` that matrix has 10^9 entries, so :class:`RandomSubspace` generates ``A`` in blocks
of rows, block ``b`` from its own generator seeded with a hash of ``(seed, b)``: the same
``seed``, block size and device type give the same ``A`` on every call, and ``A y``,
``A^T v`` and ``A^T A`` are accumulated block by block. Blocks are kept in memory only when
all of ``A`` fits in ``cache_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["BLOCK_ENTRIES", "CACHE_BYTES", "RandomSubspace"]

#: entries of ``A`` generated at once (rows per block: ``BLOCK_ENTRIES // p``)
BLOCK_ENTRIES = 1 << 22
#: ``A`` is kept in memory when it takes at most this many bytes
CACHE_BYTES = 64 << 20

#: the 64-bit golden ratio, spreading the seeds of the blocks
SEED_MIX = 0x9E3779B97F4A7C15


class RandomSubspace:
    """The ``size x dim`` matrix ``A`` with i.i.d. ``N(0, 1)`` entries, as a linear map.

    Args:
        size: ``n``, the number of rows (parameter entries).
        dim: ``p``, the number of columns (subspace dimension).
        seed: the seed; block ``b`` is drawn with ``torch.randn`` from a generator on
            ``device`` seeded with ``(seed * 0x9E3779B97F4A7C15 + b) mod 2^63``. CPU and CUDA
            generators differ, so ``A`` depends on the device type too.
        dtype, device: of ``A`` and of the vectors it maps.
        block_rows: rows per block (None: ``max(1, BLOCK_ENTRIES // dim)``).
        cache_bytes: keep the blocks after their first use when ``A`` takes at most this.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        block_rows: int | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got {size} and {dim}")
        self.size, self.dim, self.seed = int(size), int(dim), int(seed)
        self.dtype, self.device = dtype, torch.device(device)
        self.block_rows = max(1, BLOCK_ENTRIES // self.dim) if block_rows is None else block_rows
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        fits = self.size * self.dim * itemsize <= cache_bytes
        self.cache: dict[int, Tensor] | None = {} if fits else None
        self.generated_blocks = 0  # blocks drawn so far (repeats included when not cached)

    @property
    def blocks(self) -> int:
        """The number of row blocks."""
        return -(-self.size // self.block_rows)

    def block(self, index: int) -> Tensor:
        """Rows ``[index * block_rows, min((index + 1) * block_rows, size))`` of ``A``."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        start = index * self.block_rows
        rows = min(self.block_rows, self.size - start)
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * SEED_MIX + index) % (1 << 63))
        block = torch.randn(
            rows, self.dim, generator=generator, dtype=self.dtype, device=self.device
        )
        self.generated_blocks += 1
        if self.cache is not None:
            self.cache[index] = block
        return block

    def row_blocks(self) -> Iterator[tuple[slice, Tensor]]:
        """``(rows, block)`` pairs covering ``A`` from the top."""
        for index in range(self.blocks):
            start = index * self.block_rows
            block = self.block(index)
            yield slice(start, start + len(block)), block

    def forward(self, y: Tensor) -> Tensor:
        """``A y`` (length ``size``) of a vector ``y`` of length ``dim``."""
        y = y.to(self.dtype)
        return torch.cat([block @ y for _, block in self.row_blocks()])

    def adjoint(self, v: Tensor) -> Tensor:
        """``A^T v`` (length ``dim``) of a vector ``v`` of length ``size``."""
        v = v.to(self.dtype)
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for rows, block in self.row_blocks():
            out += block.T @ v[rows]
        return out

    def pseudo_inverse_apply(self, v: Tensor) -> Tensor:
        """``A^+ v = (A^T A)^{-1} A^T v`` (``A`` has full column rank with probability 1 when
        ``size >= dim``), with ``A^T A`` and ``A^T v`` accumulated in float64; in ``dtype``."""
        if self.size < self.dim:
            raise ValueError(
                f"the subspace dimension {self.dim} exceeds the {self.size} parameters; "
                "pass a smaller subspace_dim"
            )
        gram = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
        projected = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        v = v.to(torch.float64)
        for rows, block in self.row_blocks():
            block = block.to(torch.float64)
            gram += block.T @ block
            projected += block.T @ v[rows]
        return torch.linalg.solve(gram, projected).to(self.dtype)

    def dense(self) -> Tensor:
        """All of ``A`` as one ``(size, dim)`` tensor: for small ``size`` (tests) only."""
        return torch.cat([block for _, block in self.row_blocks()])
