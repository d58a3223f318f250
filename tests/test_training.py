"""Training: losses fall, GAN regularisers, exact resume, data, metrics, data parallelism."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import training.common
from cli.main import main
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import CONFIGS
from models.pipeline import build_tokenizer
from models.tokenizer import VQTokenizer
from training import gan
from training.codebook import CodeRestarts
from training.common import autocast_for, resolve_precision
from training.data.synthetic import EVAL_SEED_OFFSET, SyntheticVideos
from training.datasets import iter_batches
from training.evaluate import bicubic_baseline, frechet_distance, psnr, ssim
from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer
from training.transformer_trainer import TransformerTrainConfig, train_transformer


def test_tokenizer_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    tok = VQTokenizer(CONFIGS["tiny"].tokenizer)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    video = torch.stack([SyntheticVideos(4, 8, 16)[i][0] for i in range(4)])
    losses = []
    for _ in range(30):
        out = tok(video)
        loss = torch.nn.functional.mse_loss(out.reconstruction, video) + out.losses["quantizer"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(torch.nn.functional.mse_loss(out.reconstruction, video).item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_dead_codes_move_onto_encoder_features():
    restarts = CodeRestarts(codebook_size=6, every=2, after=2, seed=0)
    codebook = torch.full((6, 3), 100.0)  # far from every feature
    features = torch.randn(2, 3, 2, 2, 2)  # [B, D, t, h, w]
    ids = torch.zeros(2, 2, 2, 2, dtype=torch.long)
    ids[0, 0, 0, 0] = 4  # codes 0 and 4 are in use
    assert restarts.step(0, codebook, ids, features) == 0  # too early
    assert restarts.step(1, codebook, ids, features) == 0  # nothing unused for 2 steps yet
    restarts.step(2, codebook, ids, features)
    assert restarts.step(3, codebook, ids, features) == 4  # codes 1, 2, 3, 5
    flat = features.movedim(1, -1).reshape(-1, 3)
    for k in (1, 2, 3, 5):  # each now sits (up to the noise) on one of the batch's features
        assert torch.cdist(codebook[k : k + 1], flat).min() < 0.05
    assert (codebook[[0, 4]] == 100).all()
    # The usage record round-trips (resume).
    again = CodeRestarts(6, 2, 2)
    again.load_state(restarts.state())
    assert again.state() == restarts.state()


def test_lecam_and_r1_on_known_inputs():
    real = torch.tensor([1.0, -1.0, 3.0])
    fake = torch.tensor([0.0, 2.0])
    # On batch means (1 and 1): relu(1 - 0.5)^2 + relu(1 - 1)^2
    assert gan.lecam_loss(real, fake, ema_real=1.0, ema_fake=0.5).item() == pytest.approx(0.25)
    x = torch.randn(2, 3, 2, 4, 4, requires_grad=True)
    logits = (3 * x).flatten(1).sum(1)  # grad = 3 everywhere: |grad|^2 = 9 * 96
    assert gan.r1_penalty(logits, x).item() == pytest.approx(9 * 96)
    assert gan.generator_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))
    ema = gan.LeCamEMA(decay=0.5)
    ema.update(torch.tensor([2.0]), torch.tensor([-2.0]))
    assert (ema.real, ema.fake) == (1.0, -1.0)


def test_synthetic_data_is_deterministic_and_held_out():
    a, b = SyntheticVideos(5), SyntheticVideos(5)
    va, la = a[3]
    vb, lb = b[3]
    assert torch.equal(va, vb) and la == lb
    assert va.shape == (3, 16, 64, 64) and 0 <= la < 10
    ev = SyntheticVideos(5, split="eval")
    assert ev.seed(0) == EVAL_SEED_OFFSET and not torch.equal(ev[3][0], va)
    # The sprites move: consecutive frames differ.
    assert (va[:, 1:] - va[:, :-1]).abs().sum() > 0
    with pytest.raises(IndexError):
        a.seed(5)


def test_batches_do_not_depend_on_workers():
    data = SyntheticVideos(20, num_frames=4, size=16)
    plan = [[3, 1], [7, 7], [19, 0]]
    alone = list(iter_batches(data, plan, workers=0))
    ahead = list(iter_batches(data, plan, workers=2))
    assert len(alone) == len(ahead) == 3
    for (va, la), (vb, lb), idx in zip(alone, ahead, plan, strict=True):
        assert va.shape == (2, 3, 4, 16, 16) and torch.equal(va, vb) and torch.equal(la, lb)
        assert torch.equal(va[0], data[idx[0]][0])


def test_metrics_on_known_inputs():
    a = torch.zeros(1, 3, 2, 16, 16)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    video = torch.rand(1, 3, 2, 16, 16)
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-5)
    assert ssim(video, torch.rand_like(video)) < 0.5


def test_bicubic_baseline_keeps_smooth_frames_loses_detail_and_works_frame_by_frame():
    flat = torch.full((2, 3, 3, 64, 64), 0.3)
    assert torch.allclose(bicubic_baseline(flat, (16, 16)), flat, atol=1e-5)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    wave = 0.5 + 0.4 * torch.sin(2 * math.pi * x / 64) * torch.cos(2 * math.pi * y / 64)
    smooth = wave.expand(1, 3, 2, 64, 64)
    noise = torch.rand(1, 3, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    assert psnr(bicubic_baseline(smooth, (16, 16)), smooth) > 35  # 4 samples a period: kept
    assert psnr(bicubic_baseline(noise, (16, 16)), noise) < 12  # pixel noise: lost
    assert psnr(bicubic_baseline(noise, (32, 32)), noise) > psnr(
        bicubic_baseline(noise, (16, 16)), noise
    )
    clip = torch.cat([smooth[:, :, :1], noise[:, :, 1:]], 2)  # [1, 3, 2, 64, 64]
    out = bicubic_baseline(clip, (16, 16))
    assert out.shape == clip.shape and out.min() >= 0 and out.max() <= 1
    for t in range(2):  # each frame on its own: time is not a spatial axis
        assert torch.allclose(
            out[:, :, t : t + 1], bicubic_baseline(clip[:, :, t : t + 1], (16, 16))
        )


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    # N(0, I) vs N(m, 4I) in 3D: |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + 3.
    a = rng.standard_normal((40000, 3))
    b = 2 * rng.standard_normal((40000, 3)) + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5 + 3, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def _records(path):
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r}


def test_tokenizer_resume_is_exact(tmp_path):
    base = dict(
        config="tiny",
        steps=4,
        batch_size=2,
        adv_start=1,
        log_every=1,
        lr=1e-3,
        warmup_steps=1,
        restart_every=1,
        restart_after=1,
    )
    train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "a"), checkpoint_every=4, **base))
    train_tokenizer(
        TokenizerTrainConfig(out=str(tmp_path / "b"), checkpoint_every=4, stop_at=2, **base)
    )
    # Same run, continued from its step-2 state to step 4, its batches made in a worker process.
    train_tokenizer(
        TokenizerTrainConfig(out=str(tmp_path / "b"), checkpoint_every=4, workers=1, **base)
    )
    a, b = _records(tmp_path / "a" / "metrics.jsonl"), _records(tmp_path / "b" / "metrics.jsonl")
    for step in (2, 3):
        for key in ("recon", "d_loss", "loss"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert load_checkpoint(tmp_path / "b").metadata["steps"] == 4


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    torch.manual_seed(0)
    save_checkpoint(path, CONFIGS["tiny"], build_tokenizer(CONFIGS["tiny"]).state_dict())
    return path


def _transformer_run(tokenizer, **settings) -> dict:
    """The settings of a short transformer run on the tiny preset."""
    return dict(config="tiny", tokenizer=str(tokenizer), log_every=1) | settings


def test_transformer_loss_falls_and_resume_is_exact(tmp_path, tiny_tokenizer):
    base = _transformer_run(
        tiny_tokenizer,
        batch_size=8,
        cache_clips=16,
        lr=3e-3,
        warmup_steps=1,
        steps=30,
        checkpoint_every=100,
    )
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "a"), **base))
    a = _records(tmp_path / "a" / "metrics.jsonl")
    first = np.mean([a[s]["loss"] for s in range(5)])
    assert np.mean([a[s]["loss"] for s in range(25, 30)]) < 0.8 * first
    # The same run, interrupted at step 12 and resumed, logs the same losses.
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "b"), stop_at=12, **base))
    assert json.loads((tmp_path / "b" / "training_state.json").read_text())["step"] == 12
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "b"), **base))
    b = _records(tmp_path / "b" / "metrics.jsonl")
    assert sorted(b) == list(range(30))  # no duplicated or missing records
    for step in (12, 20, 29):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5), step
    ck = load_checkpoint(tmp_path / "a", require_transformer=True)
    assert ck.metadata["transformer_steps"] == 30 and len(ck.config.tasks) == 10


def test_a_resume_from_a_snapshot_warms_the_rate_up_again(tmp_path, tiny_tokenizer):
    # A snapshot has no optimizer moments: the rate warms up again from the step it resumes
    # at; a resume with the moments (above) follows the schedule exactly.
    import shutil

    from training.common import lr_at, write_snapshot

    base = _transformer_run(
        tiny_tokenizer,
        batch_size=4,
        cache_clips=8,
        lr=1e-3,
        warmup_steps=4,
        steps=20,
        checkpoint_every=10,
    )
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "a"), stop_at=10, **base))
    write_snapshot(tmp_path / "a", tmp_path / "snap")
    shutil.copytree(tmp_path / "snap", tmp_path / "b")
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "b"), stop_at=16, **base))
    b = _records(tmp_path / "b" / "metrics.jsonl")
    for step in range(10, 16):
        scheduled = lr_at(step, 1e-3, 4, 20)
        assert b[step]["lr"] == pytest.approx(scheduled * min(1.0, (step - 9) / 4)), step
    assert b[13]["lr"] == pytest.approx(lr_at(13, 1e-3, 4, 20))  # warmed up: the schedule


def test_a_snapshot_exports_its_transformer_ema(tmp_path, tiny_tokenizer):
    # A snapshot without the checkpoint's transformer file exports from its training state:
    # the EMA at the state's step, which is what the run's own checkpoint holds.
    from training.common import write_snapshot

    base = _transformer_run(tiny_tokenizer, batch_size=2, cache_clips=4, steps=3)
    train_transformer(TransformerTrainConfig(out=str(tmp_path / "run"), **base))
    snap = write_snapshot(tmp_path / "run", tmp_path / "snap")
    (snap / "transformer.safetensors").unlink()
    assert main(["export", "--checkpoint", str(snap), "--out", str(tmp_path / "out")]) == 0
    exported = load_checkpoint(tmp_path / "out", require_transformer=True)
    trained = load_checkpoint(tmp_path / "run", require_transformer=True)
    assert exported.metadata["transformer_steps"] == 3
    assert exported.transformer_state.keys() == trained.transformer_state.keys()
    for k, v in trained.transformer_state.items():
        torch.testing.assert_close(exported.transformer_state[k].float(), v.half().float())
    # A tokenizer alone, with no training state either, is refused with a message.
    assert main(["export", "--checkpoint", str(tiny_tokenizer), "--out", str(tmp_path / "x")]) == 2


def test_the_transformer_caches_colour_jittered_clips_apart(tmp_path, tiny_tokenizer):
    from safetensors.torch import load_file

    base = _transformer_run(tiny_tokenizer, batch_size=2, cache_clips=8, steps=1, resume=False)
    for jitter in (0.0, 1.0):  # one output directory: two caches side by side
        train_transformer(
            TransformerTrainConfig(out=str(tmp_path / "run"), colour_jitter=jitter, **base)
        )
    caches = sorted((tmp_path / "run" / "cache").glob("tokens-*.safetensors"))
    assert len(caches) == 2
    a, b = (load_file(str(c))["tokens"] for c in caches)
    assert not torch.equal(a, b)  # the jittered clips have other tokens


# ------------------------------------------------------------------------- data parallel
def _ddp_worker(rank, world, port, out, tok):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    _register_no_dropout()
    train_transformer(
        TransformerTrainConfig(
            config="tiny-nodrop",
            tokenizer=tok,
            out=out,
            steps=2,
            batch_size=4,
            cache_clips=8,
            log_every=1,
            checkpoint_every=2,
            lr=1e-3,
            warmup_steps=1,
            device="cpu",
            # fp32: bf16 autocast (the default where the CPU has native bf16) rounds the two
            # ranks' partial gradients differently from one process's, beyond what is compared.
            precision="fp32",
        )
    )
    torch.distributed.destroy_process_group()


def _register_no_dropout():
    tiny = CONFIGS["tiny"]
    CONFIGS["tiny-nodrop"] = dataclasses.replace(
        tiny, name="tiny-nodrop", transformer=dataclasses.replace(tiny.transformer, dropout=0.0)
    )


@pytest.mark.integration
def test_two_gloo_ranks_match_one_process(tmp_path, tiny_tokenizer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp"), str(tiny_tokenizer)), nprocs=2)
    _register_no_dropout()
    try:
        cfg = TransformerTrainConfig(
            config="tiny-nodrop",
            tokenizer=str(tiny_tokenizer),
            out=str(tmp_path / "one"),
            steps=2,
            batch_size=4,
            cache_clips=8,
            log_every=1,
            checkpoint_every=2,
            lr=1e-3,
            warmup_steps=1,
            device="cpu",
            # fp32: bf16 autocast (the default where the CPU has native bf16) rounds the two
            # ranks' partial gradients differently from one process's, beyond what is compared.
            precision="fp32",
        )
        train_transformer(cfg)
    finally:
        del CONFIGS["tiny-nodrop"]
    ddp = _records(tmp_path / "ddp" / "metrics.jsonl")
    one = _records(tmp_path / "one" / "metrics.jsonl")
    for step in (0, 1):
        assert ddp[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-4)
    a = load_checkpoint(tmp_path / "ddp").transformer_state
    b = load_checkpoint(tmp_path / "one").transformer_state
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_cli_train_then_generate(tmp_path, capsys):
    tok, tr = tmp_path / "tok", tmp_path / "tr"
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                "tiny",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(tok),
                "--adv-start",
                "1",
                "--entropy-weight",
                "0.01",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "transformer",
                "--config",
                "tiny",
                "--tokenizer",
                str(tok),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--cache-clips",
                "4",
                "--tasks",
                "fp,cg",
                "--out",
                str(tr),
            ]
        )
        == 0
    )
    out = tmp_path / "cg.npz"
    assert (
        main(
            [
                "generate",
                "cg",
                "--class-id",
                "2",
                "--checkpoint",
                str(tr),
                "--steps",
                "2",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert np.load(out)["video"].shape == (8, 16, 16, 3)
    samples = tmp_path / "samples.png"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tr),
                "--num-clips",
                "2",
                "--steps",
                "2",
                "--samples",
                str(samples),
                "--json",
            ]
        )
        == 0
    )
    assert samples.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tr),
                "--num-clips",
                "2",
                "--steps",
                "2",
                "--tasks",
                "FP",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"tokenizer", "fp", "num_clips"}
    assert report["fp"]["mse"] >= 0 and report["fp"]["copy_last_frame_mse"] >= 0
    # A tokenizer checkpoint gets its reconstruction figures alone: those of the complete one.
    assert main(["eval", "--checkpoint", str(tok), "--num-clips", "2", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert set(alone) == {"tokenizer", "bicubic_4x4", "num_clips"}  # 16 x 16 frames, 4 x 4 tokens
    assert alone["tokenizer"] == pytest.approx(report["tokenizer"])
    assert main(["eval", "--checkpoint", str(tok), "--tasks", "fp"]) == 2
    assert "tokenizer only" in capsys.readouterr().err
    # A task the checkpoint was not trained for is refused before any work.
    assert main(["eval", "--checkpoint", str(tr), "--tasks", "fp,opc"]) == 2
    assert "opc" in capsys.readouterr().err
    assert (
        main(
            ["generate", "opc", "--checkpoint", str(tr), "--output", str(out), "--input", str(out)]
        )
        == 2
    )  # this checkpoint was trained for fp and cg only
    assert (
        main(
            [
                "train",
                "transformer",
                "--config",
                "tiny",
                "--tokenizer",
                str(tok),
                "--tasks",
                "zz",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("native", [False, True])
def test_precision_setting(monkeypatch, native):
    monkeypatch.setattr(training.common, "cpu_has_native_bf16", lambda: native)
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    cpu = torch.device("cpu")
    auto = torch.bfloat16 if native else torch.float32  # "auto": bf16 only where it is native
    with autocast_for(cpu, "auto"):
        assert (a @ b).dtype == auto
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with autocast_for(cpu, "bf16"):  # asked for: honoured, with a warning where emulated
            assert (a @ b).dtype == torch.bfloat16
    assert [w.category for w in caught] == ([] if native else [RuntimeWarning])
    with autocast_for(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast_for(cpu, "fp8")


def test_decoder_only_training_keeps_tokens_and_export_takes_the_new_decoder(tmp_path, capsys):
    tok, tr, ft, out = (tmp_path / n for n in ("tok", "tr", "ft", "out"))
    common = ["--config", "tiny", "--batch-size", "2"]
    assert main(["train", "tokenizer", *common, "--steps", "2", "--out", str(tok)]) == 0
    assert (
        main(
            [
                "train",
                "transformer",
                *common,
                "--tokenizer",
                str(tok),
                "--steps",
                "1",
                "--cache-clips",
                "2",
                "--tasks",
                "fp",
                "--out",
                str(tr),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "tokenizer",
                *common,
                "--steps",
                "3",
                "--lr",
                "1e-2",
                "--warmup-steps",
                "0",
                "--init",
                str(tok),
                "--decoder-only",
                "--out",
                str(ft),
            ]
        )
        == 0
    )
    before, after = load_checkpoint(tok).tokenizer_state, load_checkpoint(ft).tokenizer_state
    for name in before:  # the encoder and the codebook bit for bit, the decoder trained
        assert torch.equal(before[name], after[name]) != name.startswith("decoder."), name

    assert (
        main(
            ["export", "--checkpoint", str(tr), "--tokenizer", str(ft), "--fp16", "--out", str(out)]
        )
        == 0
    )
    served = load_checkpoint(out, require_transformer=True)
    assert served.metadata["decoder"]["decoder_only"] is True
    assert served.metadata["transformer_steps"] == 1
    for name, tensor in after.items():
        assert torch.equal(served.tokenizer_state[name], tensor.half()), name
    for name, tensor in load_checkpoint(tr).transformer_state.items():
        assert torch.equal(served.transformer_state[name], tensor.half()), name

    # A tokenizer that encodes differently is refused, by name; so is a missing --init.
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "tokenizer",
                *common,
                "--steps",
                "1",
                "--decoder-only",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--decoder-only needs --init" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tr), "--tokenizer", str(tr), "--out", str(tr)]) == 2
    assert "another directory" in capsys.readouterr().err
    bigger = tmp_path / "bigger"
    save_checkpoint(bigger, CONFIGS["default"], build_tokenizer(CONFIGS["default"]).state_dict())
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tr),
                "--tokenizer",
                str(bigger),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "another configuration" in capsys.readouterr().err
    other = tmp_path / "other"
    assert (
        main(["train", "tokenizer", *common, "--steps", "1", "--seed", "5", "--out", str(other)])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tr),
                "--tokenizer",
                str(other),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "encodes differently" in err and "differs" in err


def test_the_discriminator_runs_in_fp32_on_a_cpu_under_bf16_autocast(tmp_path, monkeypatch):
    """oneDNN's bf16 weight gradients of the discriminator's small convolutions came back NaN at
    random on a CPU with AVX-512 BF16: on a CPU the discriminator is kept out of autocast, in
    the generator's adversarial loss and in its own step, while the tokenizer stays in bf16."""
    seen: list[tuple[bool, torch.dtype]] = []
    forward = gan.Discriminator.forward

    def recording(self, video):
        seen.append((torch.is_autocast_enabled("cpu"), video.dtype))
        return forward(self, video)

    monkeypatch.setattr(gan.Discriminator, "forward", recording)
    cfg = TokenizerTrainConfig(
        config="tiny",
        steps=2,
        batch_size=2,
        adv_start=0,
        r1_every=1,
        log_every=1,
        precision="bf16",
        device="cpu",
        out=str(tmp_path / "tok"),
    )
    train_tokenizer(cfg)
    # Per step: the generator's loss on the fake clip, then real and fake in the D step.
    assert len(seen) == 6 and seen == [(False, torch.float32)] * 6, seen


def test_trainers_take_the_precision_setting_and_check_it_first(tmp_path, capsys):
    tok = tmp_path / "tok"
    # bf16 autocast through the whole tokenizer step, the GAN and R1 included.
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                "tiny",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--adv-start",
                "0",
                "--r1-every",
                "1",
                "--log-every",
                "1",
                "--precision",
                "bf16",
                "--out",
                str(tok),
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (tok / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2 and all(math.isfinite(r[k]) for r in steps for k in ("loss", "d_loss"))
    assert records[0]["config"]["precision"] == "bf16"
    for kind, extra in (("tokenizer", []), ("transformer", ["--tokenizer", str(tok)])):
        capsys.readouterr()
        assert (
            main(
                [
                    "train",
                    kind,
                    "--config",
                    "tiny",
                    "--precision",
                    "fp8",
                    *extra,
                    "--out",
                    str(tmp_path / kind),
                ]
            )
            == 2
        )
        assert "precision must be" in capsys.readouterr().err
        assert not (tmp_path / kind / "cache").exists()  # refused before any work


def test_init_is_checked(tmp_path, capsys):
    tok = tmp_path / "tok"
    save_checkpoint(tok, CONFIGS["tiny"], build_tokenizer(CONFIGS["tiny"]).state_dict())
    for args, message in (
        (["--config", "default", "--init", str(tok)], "is not the one of preset"),
        (["--config", "tiny", "--init", str(tok), "--init-2d", str(tok)], "exclude each other"),
    ):
        capsys.readouterr()
        assert (
            main(["train", "tokenizer", *args, "--steps", "1", "--out", str(tmp_path / "x")]) == 2
        )
        assert message in capsys.readouterr().err


def test_transformer_attention_dropout_is_a_training_setting(tmp_path, tiny_tokenizer):
    """`--attention-dropout 0` trains without dropout on the attention probabilities (the
    model's hidden dropout stays) and the checkpoint says so; the model config is unchanged."""
    from models.checkpoint import load_checkpoint

    out = train_transformer(
        TransformerTrainConfig(
            config="tiny",
            tokenizer=str(tiny_tokenizer),
            batch_size=2,
            cache_clips=4,
            steps=1,
            attention_dropout=0.0,
            out=str(tmp_path / "m"),
        )
    )
    ckpt = load_checkpoint(out)
    assert ckpt.metadata["attention_dropout"] == 0.0
    assert ckpt.config.transformer == CONFIGS["tiny"].transformer
