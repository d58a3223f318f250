"""An autoregressive baseline of the same size, for the decoding-speed benchmark only.

A causal transformer with the width, depth, heads and MLP of a `TransformerConfig`, generating
video tokens one at a time with a KV cache: N forward passes of one token each, against
MAGVIT's 12 passes over all N tokens (the paper reports ~60x in MAGVIT's favour).

Shapes: B batch, L sequence, D hidden width, H heads, Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TransformerConfig


class _CausalBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.ln1 = nn.LayerNorm(cfg.hidden_dim)
        self.qkv = nn.Linear(cfg.hidden_dim, 3 * cfg.hidden_dim)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.ln2 = nn.LayerNorm(cfg.hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden_dim, cfg.mlp_dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_dim, cfg.hidden_dim),
        )

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None) -> torch.Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, l, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # q, k, v: [B, H, L, Dh]; the cache holds keys and values of all earlier positions.
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # With a cache, the new queries are the last positions and see every cached key.
        causal = l > 1 and (cache is None or k.shape[2] == l)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.proj(y.transpose(1, 2).reshape(b, l, d))
        return x + self.mlp(self.ln2(x))


class AutoregressiveTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_positions: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, cfg.hidden_dim)
        self.pos = nn.Embedding(max_positions, cfg.hidden_dim)
        self.blocks = nn.ModuleList(_CausalBlock(cfg) for _ in range(cfg.num_layers))
        self.ln = nn.LayerNorm(cfg.hidden_dim)
        self.head = nn.Linear(cfg.hidden_dim, vocab_size, bias=False)

    def forward(
        self, ids: torch.Tensor, start: int = 0, caches: list[dict] | None = None
    ) -> torch.Tensor:
        """ids [B, L] at positions start..start+L-1 -> logits [B, L, V]."""
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)[None]
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(
        self, prefix: torch.Tensor, num_tokens: int, codebook_size: int, generator=None
    ) -> torch.Tensor:
        """Sample `num_tokens` codebook tokens after `prefix` [B, P], one at a time."""
        caches: list[dict] = [{} for _ in self.blocks]
        logits = self(prefix, 0, caches)[:, -1, :codebook_size]
        out = []
        for i in range(num_tokens):
            probs = torch.softmax(logits.float(), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
            out.append(nxt)
            if i + 1 < num_tokens:
                logits = self(nxt, prefix.shape[1] + i, caches)[:, -1, :codebook_size]
        return torch.cat(out, dim=1)
