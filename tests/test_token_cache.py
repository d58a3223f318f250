"""The token cache: every clip carries the condition tokens of every task of its subset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import CONFIGS, ModelConfig
from models.tasks import TASK_CODES, get_task
from training.data.synthetic import SyntheticVideos
from training.token_cache import ABSENT, TokenCache, build_token_cache, load_or_build

CONFIG = CONFIGS["tiny"]


class PoolTokenizer(nn.Module):
    """A stand-in tokenizer whose ids depend on each clip alone (block means of the pixels,
    quantized), so that a batched pass gives exactly the ids of a pass on one video."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.grid = config.token_shape
        self.levels = config.tokenizer.codebook_size

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] -> ids [B, t, h, w]."""
        means = F.adaptive_avg_pool3d(video.mean(1, keepdim=True), self.grid)[:, 0]
        return (means.clamp(0, 1) * (self.levels - 1)).round().long()


def _dataset(n: int = 5) -> SyntheticVideos:
    t, h, _ = CONFIG.video_shape
    return SyntheticVideos(n, num_frames=t, size=h)


def test_a_clip_has_the_condition_tokens_of_all_ten_tasks():
    tokenizer, data = PoolTokenizer(CONFIG), _dataset()
    # Three videos per pass: real and condition videos of different clips share passes.
    cache = build_token_cache(
        tokenizer, CONFIG, data, TASK_CODES, 5, batch_size=3, show_progress=False
    )
    assert cache.tasks == TASK_CODES and len(cache) == 5
    # FP and CFP share their condition video, CG's is the blank one: 8 grids per clip.
    assert cache.conditions.shape == (5, 8, *CONFIG.token_shape)
    assert cache.conditions.dtype == torch.int16 and cache.tokens.dtype == torch.int16
    for i in range(5):
        video = data[i][0][None]
        assert torch.equal(cache.tokens[i].long(), tokenizer.encode(video)[0])
        for code in TASK_CODES:
            task = get_task(code)
            got = cache.condition_tokens(torch.tensor([i]), torch.tensor([task.index]))
            want = tokenizer.encode(task.condition_video(video, CONFIG.cond_frames))
            assert torch.equal(got, want), (i, code)
    # The tasks' conditions are not all alike (the comparison above can tell them apart).
    everything = torch.tensor(range(len(TASK_CODES)))
    grids = cache.condition_tokens(torch.zeros(10, dtype=torch.long), everything)
    assert len({tuple(g.flatten().tolist()) for g in grids}) == 9  # FP and CFP alike


def test_a_batch_mixes_clips_and_tasks():
    cache = build_token_cache(
        PoolTokenizer(CONFIG), CONFIG, _dataset(4), TASK_CODES, 4, show_progress=False
    )
    clips, tasks = torch.tensor([3, 0, 3, 1]), torch.tensor([0, 8, 2, 9])
    rows = cache.condition_tokens(clips, tasks)
    for row, clip, task in zip(rows, clips, tasks, strict=True):
        one = cache.condition_tokens(clip.view(1), task.view(1))[0]
        assert torch.equal(row, one)


def test_a_subset_caches_only_its_tasks():
    cache = build_token_cache(
        PoolTokenizer(CONFIG), CONFIG, _dataset(3), ("cg", "cfp"), 3, show_progress=False
    )
    assert cache.tasks == ("cg", "cfp") and cache.conditions.shape[1] == 1
    assert cache.slots[TASK_CODES.index("fp")] == ABSENT
    try:
        cache.condition_tokens(torch.tensor([0]), torch.tensor([TASK_CODES.index("fp")]))
    except KeyError as err:
        assert "fp" in str(err)
    else:
        raise AssertionError("a task outside the cache was answered")
    only_cg = build_token_cache(
        PoolTokenizer(CONFIG), CONFIG, _dataset(3), ("cg",), 3, show_progress=False
    )
    assert only_cg.conditions.shape[1] == 0
    cg = torch.full((3,), TASK_CODES.index("cg"))
    blank = PoolTokenizer(CONFIG).encode(torch.zeros(1, 3, *CONFIG.video_shape))
    assert torch.equal(only_cg.condition_tokens(torch.arange(3), cg), blank.expand(3, -1, -1, -1))


def test_load_or_build_writes_once_and_reads_back(tmp_path):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.safetensors").write_bytes(b"weights")  # only its stat is keyed
    calls: list[int] = []

    def build() -> TokenCache:
        calls.append(1)
        return build_token_cache(
            PoolTokenizer(CONFIG), CONFIG, _dataset(3), ("fp", "opc"), 3, show_progress=False
        )

    first = load_or_build(tmp_path / "cache", tok_dir, "synthetic", build, 3, ("fp", "opc"))
    # The same set of tasks in another order is the same cache.
    again = load_or_build(tmp_path / "cache", tok_dir, "synthetic", build, 3, ("opc", "fp"))
    assert len(calls) == 1
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".safetensors"]  # no tmp left
    for name in ("tokens", "conditions", "blank", "slots", "labels"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert again.tasks == ("fp", "opc")
    load_or_build(tmp_path / "cache", tok_dir, "synthetic", build, 3, ("fp",))
    assert len(calls) == 2  # another subset is another cache


def test_a_bf16_cache_is_another_cache_and_agrees_with_fp32(tmp_path):
    """bf16 autocast changes a few ids, so it is keyed apart; the code search stays fp32, so
    nearly all ids agree with an fp32 encode of the same clips (a real tokenizer, random
    weights)."""
    from models.pipeline import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(CONFIG)
    data = _dataset(4)
    caches = {
        p: build_token_cache(tokenizer, CONFIG, data, ("fp",), 4, show_progress=False, precision=p)
        for p in ("fp32", "bf16")
    }
    agree = (caches["fp32"].tokens == caches["bf16"].tokens).float().mean().item()
    assert agree >= 0.9, agree
    # bf16 encodes in channels-last-3d on the CPU and hands the tokenizer back as it came.
    assert all(p.is_contiguous() for p in tokenizer.parameters())
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.safetensors").write_bytes(b"weights")
    built: list[str] = []
    for p in ("fp32", "bf16", "fp32"):
        load_or_build(
            tmp_path / "cache",
            tok_dir,
            "synthetic",
            lambda p=p: built.append(p) or caches[p],
            4,
            ("fp",),
            p,
        )
    assert built == ["fp32", "bf16"]


def test_code_search_ignores_autocast():
    from models.pipeline import build_tokenizer

    torch.manual_seed(0)
    quantizer = build_tokenizer(CONFIG).quantizer
    z = torch.randn(2, CONFIG.tokenizer.embedding_dim, 2, 3, 3)
    with torch.autocast("cpu", torch.bfloat16):
        inside = quantizer.nearest(z)
    assert torch.equal(inside, quantizer.nearest(z))
