"""The COMMIT decoding loop, on a stand-in transformer so the loop is tested on its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import Vocabulary
from models.decoding import DecodeOptions, decode, guided_logits, unconditional_input
from models.kernels.sampling import sampling_filter, sampling_step
from models.schedule import MaskSchedule

VOCAB = Vocabulary(codebook_size=16, num_classes=3, num_tasks=10)
N = 24


class TableTransformer(nn.Module):
    """Logits that depend on every input id and segment (a bag of embeddings plus position),
    so a wrong input changes the output."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.tok = nn.Parameter(torch.randn(VOCAB.size, VOCAB.size, generator=g))
        self.pos = nn.Parameter(torch.randn(N + 2, VOCAB.size, generator=g))
        self.seg = nn.Parameter(torch.randn(2, VOCAB.size, generator=g))
        self.calls: list[torch.Tensor] = []

    def forward(self, ids, segments=None, key_padding_mask=None):
        self.calls.append(ids.clone())
        ctx = self.tok[ids].mean(1, keepdim=True)
        return 3 * (self.tok[ids] + self.pos[None] + ctx + self.seg[segments])


def _run(seeds, cond_mask=None, progress=None, options=DecodeOptions(), classes=None):
    b = len(seeds)
    cond_tokens = torch.arange(N).remainder(16).expand(b, N).clone()
    if cond_mask is None:
        cond_mask = torch.zeros(b, N, dtype=torch.bool)
        cond_mask[:, :6] = True
    model = TableTransformer()
    out = decode(
        model, VOCAB, 0, classes or [None] * b, cond_tokens, cond_mask, seeds, options, progress
    )
    return out, model


def test_schedule_of_masked_counts_and_decided_positions_kept():
    infos = []
    out, model = _run([0, 1], progress=infos.append)
    ratios = MaskSchedule().decoding_ratios(12)
    assert len(infos) == 12 and len(model.calls) == 12
    prev_tokens, prev_undecided = None, torch.ones(2, N, dtype=torch.bool)
    for s, info in enumerate(infos):
        want = 0 if s == 11 else max(1, min(int(ratios[s] * N), int(prev_undecided[0].sum()) - 1))
        assert info.undecided.sum(1).tolist() == [want, want]
        # A decided token never changes or returns to the mask.
        decided = ~prev_undecided
        if prev_tokens is not None:
            assert torch.equal(info.tokens[decided], prev_tokens[decided])
        assert not (info.undecided & decided).any()
        # Undecided positions are refilled: condition tokens in the region, [MASK] elsewhere.
        und = info.undecided
        assert (info.tokens[:, 6:][und[:, 6:]] == VOCAB.mask_id).all()
        assert torch.equal(info.tokens[:, :6][und[:, :6]], torch.arange(6).expand(2, 6)[und[:, :6]])
        prev_tokens, prev_undecided = info.tokens, info.undecided
    assert torch.equal(out, infos[-1].tokens)
    assert (out < VOCAB.codebook_size).all()


def test_first_step_input_is_the_multivariate_mask_with_segments():
    _, model = _run([0])
    first = model.calls[0][0]
    assert first[0] == VOCAB.task_token(0) and first[1] == VOCAB.class_token(None)
    assert torch.equal(first[2:8], torch.arange(6))
    assert (first[8:] == VOCAB.mask_id).all()


def test_same_seed_same_tokens_other_seed_other_tokens():
    a, _ = _run([5])
    b, _ = _run([5])
    c, _ = _run([6])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_batch_mates_do_not_change_a_sample():
    alone, _ = _run([7])
    together, _ = _run([3, 7, 9])
    assert torch.equal(alone[0], together[1])


def test_guidance_is_the_official_operator_in_one_batched_pass():
    _, plain = _run([0], classes=[1])
    _, guided = _run([0], classes=[1], options=DecodeOptions(guidance_scale=2.0))
    # One forward pass a step, over [conditional; unconditional].
    assert len(plain.calls) == 12 and len(guided.calls) == 12
    first = guided.calls[0]
    assert first.shape[0] == 2 and torch.equal(first[0], plain.calls[0][0])
    # c + s (c - u) on the logits of each branch run alone.
    model = TableTransformer()
    ids = plain.calls[0]
    segs = torch.zeros_like(ids)
    segs[:, 2:8] = 1
    c = model(ids, segs)[:, 2:, :16]
    ids_u, segs_u = unconditional_input(VOCAB, ids, segs)
    u = model(ids_u, segs_u)[:, 2:, :16]
    got = guided_logits(model, VOCAB, ids, segs, 2.0)
    assert torch.allclose(got, c + 2.0 * (c - u), atol=1e-5)
    assert len(model.calls) == 3  # two reference calls, one for the guided logits


def test_unconditional_branch_is_built_as_the_official_code():
    # [task 0][class 1][6 condition tokens (segment 1), 2 decided tokens, 2 masks]
    ids = torch.tensor(
        [
            [
                VOCAB.task_token(0),
                VOCAB.class_token(1),
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                VOCAB.mask_id,
                VOCAB.mask_id,
            ]
        ]
    )
    segs = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]])
    ids_u, segs_u = unconditional_input(VOCAB, ids, segs)
    mask, uncond = VOCAB.mask_id, VOCAB.class_token(None)
    want = [VOCAB.task_token(0), uncond, *[mask] * 6, 9, 10, mask, mask]
    assert ids_u.tolist() == [want]
    assert torch.equal(segs_u, segs)  # the conditional pass's segment ids
    # A model with a full-generation task puts its token in the task slot.
    ids_cg, _ = unconditional_input(VOCAB, ids, segs, unconditional_task=8)
    assert ids_cg[0, 0] == VOCAB.task_token(8) and torch.equal(ids_cg[0, 1:], ids_u[0, 1:])
    assert ids[0, 1] == VOCAB.class_token(1)  # the conditional input is left alone


def test_top_k_one_without_choice_noise_is_greedy():
    # top-1 sampling and no choice noise leave nothing to chance: the seed no longer matters.
    greedy = DecodeOptions(top_k=1, choice_temperature=0.0)
    a, _ = _run([0], options=greedy)
    b, _ = _run([1], options=greedy)
    assert torch.equal(a, b)
    c, _ = _run([0], options=DecodeOptions(choice_temperature=0.0))
    d, _ = _run([1], options=DecodeOptions(choice_temperature=0.0))
    assert not torch.equal(c, d)


def test_options_validate():
    with pytest.raises(ValueError):
        DecodeOptions(steps=0)
    with pytest.raises(ValueError):
        DecodeOptions(top_k=0)


def test_schedule_option_sets_the_masked_counts():
    infos = []
    _run([0], progress=infos.append, options=DecodeOptions(steps=4, schedule="exp"))
    # exp with N = 24: floor(24 * (1 - 24^-(1 - s/4))) after steps 1..3, then 0.
    want = [int(24 * (1 - 24 ** -(1 - s / 4))) for s in (1, 2, 3)] + [0]
    assert [int(i.undecided.sum()) for i in infos] == want
    cosine = []
    _run([0], progress=cosine.append, options=DecodeOptions(steps=4))
    assert [int(i.undecided.sum()) for i in cosine] != want


def test_bair_preset_and_unknown_names():
    bair = DecodeOptions.preset("bair-fp")
    assert (bair.schedule, bair.choice_temperature) == ("exp", 400.0)
    assert DecodeOptions.preset("bair-fp", steps=3).steps == 3
    with pytest.raises(ValueError):
        DecodeOptions.preset("nope")
    with pytest.raises(ValueError):
        DecodeOptions(schedule="nope")


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert sampling_filter(logits, 1.0, None, 0.5).tolist() == [[True, False, False, False]]
    assert sampling_filter(logits, 1.0, None, 0.8).tolist() == [[True, True, False, False]]
    assert sampling_filter(logits, 1.0, None, 0.81).tolist() == [[True, True, True, False]]
    assert sampling_filter(logits, 1.0, None, 1.0) is None
    # top-k and top-p together: the intersection.
    assert sampling_filter(logits, 1.0, 1, 0.9).tolist() == [[True, False, False, False]]


def test_top_k_and_top_p_do_not_renormalise_the_confidence():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 16, generator=g)
    tokens = torch.zeros(50, dtype=torch.long)
    known = torch.zeros(50, dtype=torch.bool)
    for allowed in (sampling_filter(logits, 1.0, 3, None), sampling_filter(logits, 1.0, None, 0.5)):
        ids, log_prob, _ = sampling_step(
            logits, tokens, known, 1.0, 0.0, generator=g, allowed=allowed
        )
        assert allowed.gather(1, ids[:, None]).all()  # only allowed tokens are drawn
        full = torch.log_softmax(logits, -1).gather(1, ids[:, None]).squeeze(1)
        assert torch.allclose(log_prob, full)  # under the full distribution


def test_decoding_passes_full_logits_with_top_k(monkeypatch):
    import models.decoding as decoding

    seen = []
    real = decoding.categorical_sampling_step  # the CPU's sampler

    def spy(logits, *args):
        seen.append((logits, args[-1]))
        return real(logits, *args)

    monkeypatch.setattr(decoding, "categorical_sampling_step", spy)
    _run([0], options=DecodeOptions(top_k=2, top_p=0.9))
    logits, allowed = seen[0]
    assert torch.isfinite(logits).all()  # not filtered: the confidence sees every token
    assert (allowed.sum(1) <= 2).all() and (allowed.sum(1) >= 1).all()
