"""`MagvitPipeline.compile`: the transformer under torch.compile gives the eager model's tokens
(up to the rounding of a different kernel order), for every batch size, without recompiling
for each one."""

from __future__ import annotations

import torch

from models.options import DecodeOptions
from models.pipeline import MagvitPipeline


def test_compiled_transformer_matches_eager():
    eager = MagvitPipeline.random_init("tiny", seed=0, dtype=torch.float32)
    compiled = MagvitPipeline.random_init("tiny", seed=0, dtype=torch.float32).compile()
    cfg = eager.config
    length = cfg.sequence_length
    with torch.inference_mode():
        for batch in (1, 3, 5):  # batch 1 and one dynamic graph for the others
            ids = torch.randint(0, cfg.tokenizer.codebook_size, (batch, length))
            segments = torch.zeros_like(ids)
            want = eager.transformer(ids, segments)
            got = compiled.transformer(ids, segments)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        options = DecodeOptions(steps=3)
        a = eager.generate("cg", None, [1, 2], [7, 8], options)
        b = compiled.generate("cg", None, [1, 2], [7, 8], options)
    assert torch.allclose(a, b, atol=1e-3)


def test_a_compiled_engine_warms_up_both_graphs(monkeypatch):
    from service.engine import Engine

    engine = Engine(MagvitPipeline.random_init("tiny", seed=0))
    sizes: list[int] = []
    real = engine.run
    monkeypatch.setattr(engine, "run", lambda requests, *a, **k: sizes.append(len(requests)))
    engine.warmup()
    assert sizes == [1]
    engine.compiled = True
    sizes.clear()
    engine.warmup()
    assert sizes == [1, 2]  # batch 1, then the dynamic graph every other batch size uses
    monkeypatch.setattr(engine, "run", real)
