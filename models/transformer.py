"""The bidirectional transformer: a post-LN BERT (spec section 4).

Shapes: B batch, L sequence, D hidden width, H heads, Dh = D / H head dim, V vocabulary.

embeddings (token + position + segment) -> LayerNorm -> dropout
-> layers of [self-attention -> add & LN -> MLP (GELU) -> add & LN]
(dropout 0.1 on the hidden states and, in training, on the attention probabilities)
-> MLM head (dense, GELU, LN) -> logits = x @ token_embedding^T + bias (the head is tied).
LayerNorm eps 1e-12 and GELU in its tanh approximation, as in the official code.
A single-task model of the official code has no task token: with `TransformerConfig.task_token`
False the sequence's task slot is dropped before the embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import TransformerConfig
from models.kernels import masked_attention


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh form (the official Flax default). In bf16 on the CPU the exact (erf) form is
    used instead: PyTorch's bf16 tanh form runs 5x slower there, and the two differ by at most
    5e-4, less than bf16 rounds an activation of order one (4e-3)."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return F.gelu(x)
    return F.gelu(x, approximate="tanh")


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        if cfg.hidden_dim % cfg.num_heads:
            raise ValueError("hidden_dim must be a multiple of num_heads")
        self.num_heads = cfg.num_heads
        # BERT's attention_probs_dropout_prob: the official config uses the same 0.1 as the
        # hidden dropout, so one `dropout` setting serves both.
        self.attention_dropout = cfg.dropout
        self.query = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.key = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.value = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.out = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        b, l, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, l, self.num_heads, d // self.num_heads).transpose(1, 2)  # [B,H,L,Dh]

        p = self.attention_dropout if self.training else 0.0
        y = masked_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), key_padding_mask, p
        )
        return self.out(y.transpose(1, 2).reshape(b, l, d))


class Layer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_ln = nn.LayerNorm(cfg.hidden_dim, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(cfg.hidden_dim, cfg.mlp_dim)
        self.output = nn.Linear(cfg.mlp_dim, cfg.hidden_dim)
        self.output_ln = nn.LayerNorm(cfg.hidden_dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_ln(x + self.dropout(self.attention(x, key_padding_mask)))
        h = self.output(_gelu(self.intermediate(x)))
        return self.output_ln(x + self.dropout(h))


class BidirectionalTransformer(nn.Module):
    def __init__(
        self, cfg: TransformerConfig, vocab_size: int, max_positions: int, num_segments: int = 2
    ) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.word_embeddings = nn.Embedding(vocab_size, d)
        self.position_embeddings = nn.Embedding(max_positions, d)
        self.segment_embeddings = nn.Embedding(num_segments, d)
        self.embeddings_ln = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.mlm_dense = nn.Linear(d, d)
        self.mlm_ln = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(self._init)

    def set_attention_dropout(self, p: float) -> None:
        """Dropout on the attention probabilities in training (by default the hidden `dropout`);
        0 keeps training on the fused attention kernels."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), not {p}")
        for layer in self.layers:
            layer.attention.attention_dropout = p

    @staticmethod
    def _init(module: nn.Module) -> None:
        # BERT's truncated-normal(0.02) initialisation.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        ids: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        first: int = 0,
        vocab: int | None = None,
    ) -> torch.Tensor:
        """ids [B, L] -> logits [B, L - first, vocab]; key_padding_mask [B, L] bool, True =
        attend. `first` and `vocab` (default: all of V) limit the logits to positions
        `first`... and the first `vocab` entries: training wants those of the video tokens over
        the codebook only, and the head then computes no others (slicing them out of a full
        [B, L, V] tensor costs more than the head: two fp32 copies and two zero-filled
        gradients of it a step).

        A model without a task token (`cfg.task_token` False) reads ids[:, 1:] only: the task
        slot is neither embedded nor attended to, and its logits are zeros."""
        if not self.cfg.task_token:
            body = self._forward(
                ids[:, 1:],
                None if segment_ids is None else segment_ids[:, 1:],
                None if key_padding_mask is None else key_padding_mask[:, 1:],
                max(first - 1, 0),
                vocab,
            )
            if first >= 1:
                return body
            return torch.cat([body.new_zeros(body.shape[0], 1, body.shape[2]), body], dim=1)
        return self._forward(ids, segment_ids, key_padding_mask, first, vocab)

    def _forward(
        self,
        ids: torch.Tensor,
        segment_ids: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        first: int = 0,
        vocab: int | None = None,
    ) -> torch.Tensor:
        b, l = ids.shape
        pos = torch.arange(l, device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None]
        if segment_ids is None:
            segment_ids = torch.zeros_like(ids)
        x = x + self.segment_embeddings(segment_ids)
        x = self.dropout(self.embeddings_ln(x))
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        x = self.mlm_ln(_gelu(self.mlm_dense(x[:, first:])))
        weight, bias = self.word_embeddings.weight, self.mlm_bias
        if vocab is not None:
            weight, bias = weight[:vocab], bias[:vocab]
        return x @ weight.t() + bias  # tied output head
