"""The transformer trainer's recipe: a task per example per step, kernel-only weight decay,
class-token dropout."""

from __future__ import annotations

import torch

from models.config import CONFIGS
from models.pipeline import build_transformer
from models.tasks import TASK_CODES, get_task
from training.token_cache import build_token_cache
from training.transformer_trainer import commit_batch, param_groups, step_tasks

from .test_token_cache import PoolTokenizer, _dataset

CONFIG = CONFIGS["tiny"]


def _cache(n: int = 6):
    return build_token_cache(
        PoolTokenizer(CONFIG), CONFIG, _dataset(n), TASK_CODES, n, show_progress=False
    )


def test_tasks_vary_per_example_and_follow_seed_and_step():
    a = step_tasks(0, 7, 64, TASK_CODES)
    assert a.shape == (64,) and len(set(a.tolist())) == 10  # all ten within one batch
    assert torch.equal(a, step_tasks(0, 7, 64, TASK_CODES))  # a resumed run draws the same
    assert not torch.equal(a, step_tasks(0, 8, 64, TASK_CODES))
    assert not torch.equal(a, step_tasks(1, 7, 64, TASK_CODES))
    subset = step_tasks(0, 7, 64, ("fi", "cg"))
    assert set(subset.tolist()) == {TASK_CODES.index("fi"), TASK_CODES.index("cg")}


def test_a_training_batch_uses_each_examples_task():
    cache, vocab = _cache(), CONFIG.vocab
    indices = [2, 2, 2, 2, 2, 2, 2, 2]  # one clip, seen under several tasks in one step
    tasks = step_tasks(3, 11, len(indices), TASK_CODES)
    assert len(set(tasks.tolist())) > 1
    g = torch.Generator().manual_seed(0)
    ids, segments, targets = commit_batch(cache, indices, tasks, CONFIG, g, 0.0, "cpu")
    assert torch.equal(ids[:, 0] - vocab.task_token(0), tasks)
    lt, lh, lw = CONFIG.token_shape
    for row, task in enumerate(tasks.tolist()):
        t = get_task(TASK_CODES[task])
        region = t.token_mask(lt, lh, lw, CONFIG.cond_latent_frames).flatten()
        cond = cache.condition_tokens(torch.tensor([2]), torch.tensor([task]))[0].flatten()
        seg = segments[row, 2:].bool()
        assert not (seg & ~region).any()  # condition tokens only inside the task's region
        assert torch.equal(ids[row, 2:][seg], cond[seg])
        assert torch.equal(targets[row], cache.tokens[2].flatten().long())
    again = commit_batch(
        cache, indices, tasks, CONFIG, torch.Generator().manual_seed(0), 0.0, "cpu"
    )
    assert torch.equal(again[0], ids)


def test_class_dropout_setting():
    cache, vocab = _cache(), CONFIG.vocab
    cfp, cg, fp = (TASK_CODES.index(c) for c in ("cfp", "cg", "fp"))
    tasks = torch.tensor([cfp, cg, fp, cfp, cg, fp])
    indices = list(range(6))

    def class_tokens(p: float) -> list[int]:
        g = torch.Generator().manual_seed(0)
        return commit_batch(cache, indices, tasks, CONFIG, g, p, "cpu")[0][:, 1].tolist()

    uncond = vocab.class_token(None)
    labels = cache.labels.tolist()
    kept = [
        vocab.class_token(labels[i]) if t in (cfp, cg) else uncond
        for i, t in enumerate(tasks.tolist())
    ]
    assert class_tokens(0.0) == kept  # the official recipe: no dropout
    assert class_tokens(1.0) == [uncond] * 6


def test_weight_decay_only_on_kernels():
    model = build_transformer(CONFIG)
    groups = param_groups(model, 0.045)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert all(g["weight_decay"] in (0.0, 0.045) for g in groups)
    assert {
        "layers.0.attention.query.weight",
        "layers.1.output.weight",
        "layers.0.intermediate.weight",
        "mlm_dense.weight",
    } <= decayed
    # Embeddings (the word embedding is also the tied output matrix), norms, biases: no decay.
    for name in (
        "word_embeddings.weight",
        "position_embeddings.weight",
        "segment_embeddings.weight",
        "embeddings_ln.weight",
        "embeddings_ln.bias",
        "mlm_ln.weight",
        "mlm_bias",
        "layers.0.attention_ln.weight",
        "layers.0.attention.query.bias",
        "layers.1.output.bias",
    ):
        assert name in plain, name
    assert all(
        name.endswith(".weight") and "_ln" not in name and "embeddings" not in name
        for name in decayed
    )
