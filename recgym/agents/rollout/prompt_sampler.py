"""Which training samples a step rolls out: a shuffled pass over the split, epoch after epoch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PromptSampler:
    """Yields sample indices from a fresh permutation per epoch; ``position`` is all its state.

    Every process of a data-parallel run holds the same sampler and takes the same global draw;
    :meth:`take_shard` hands each rank its own disjoint share of it.
    """

    num_samples: int
    seed: int
    position: int = 0
    _epoch: int = field(default=-1, init=False, repr=False, compare=False)
    _order: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), init=False, repr=False,
                               compare=False)

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.position, self.num_samples)
            if epoch != self._epoch:
                self._order, self._epoch = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples), epoch
            out.append(int(self._order[offset]))
            self.position += 1
        return out

    def take_shard(self, per_rank: int, rank: int, world_size: int) -> list[int]:
        """Draw ``per_rank * world_size`` indices (the global batch) and return rank ``rank``'s slice."""
        drawn = self.take(per_rank * world_size)
        return drawn[rank * per_rank : (rank + 1) * per_rank]
