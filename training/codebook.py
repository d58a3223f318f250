"""Keeping the whole codebook in use while the tokenizer trains.

A code that the encoder has not picked for `after` steps is dead: it gets no gradient and only
wastes a token id. Every `every` steps the dead codes are moved onto encoder features drawn from
the current batch (with a little noise), so that they compete again. This changes training only;
the model and its checkpoints are the same.

Under data parallelism the usage is summed over ranks and rank 0's draw is broadcast, so every
rank holds the same codebook. Everything drawn is a function of (seed, step): resume is exact.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class CodeRestarts:
    def __init__(self, codebook_size: int, every: int, after: int, seed: int = 0) -> None:
        self.every, self.after, self.seed = every, after, seed
        self.last_used = torch.zeros(codebook_size, dtype=torch.long)  # step of the last use

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def state(self) -> list[int]:
        return self.last_used.tolist()

    def load_state(self, last_used: list[int]) -> None:
        self.last_used = torch.tensor(last_used, dtype=torch.long)

    @torch.no_grad()
    def step(
        self, step: int, codebook: torch.Tensor, ids: torch.Tensor, features: torch.Tensor
    ) -> int:
        """Record the ids [B, *grid] used at `step`; at a restart step move the dead codes of
        `codebook` [K, D] onto `features` [B, D, *grid]. Returns how many codes moved."""
        if not self.enabled:
            return 0
        used = torch.bincount(ids.flatten(), minlength=len(self.last_used)).gt(0)
        if dist.is_initialized():
            used = used.to(codebook.device, torch.long)
            dist.all_reduce(used)
            used = used.gt(0)
        self.last_used[used.cpu()] = step
        if (step + 1) % self.every or step + 1 < self.after:
            return 0
        dead = (step - self.last_used).ge(self.after).nonzero().flatten()
        if len(dead):
            flat = features.detach().float().movedim(1, -1).reshape(-1, features.shape[1])
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            pick = torch.randint(0, flat.shape[0], (len(dead),), generator=g)
            noise = torch.randn(len(dead), flat.shape[1], generator=g) * 1e-3
            new = flat.cpu()[pick] + noise * flat.std().cpu()
            codebook[dead.to(codebook.device)] = new.to(codebook.device, codebook.dtype)
            if dist.is_initialized():
                dist.broadcast(codebook, 0)
            self.last_used[dead] = step  # a fresh code gets `after` steps to be picked
        return len(dead)
