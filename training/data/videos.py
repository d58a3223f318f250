"""A folder of videos as model-sized windows: any number of long or short videos, with or
without class sub-folders, and an optional manifest that names time ranges and classes.

    root/<video file>                      one class, named after the folder
    root/<class name>/<video file>         classes are the sorted sub-folder names
    root/magvit-data.json                  optional `Manifest` (splits by time, classes)

A window is `num_frames` frames `frame_stride` apart inside one shot (windows that would cross a
scene cut are left out and counted). Each video is decoded once into a frame store
(`framestore.py`) under `root/.magvit-cache/frames-<H>x<W>/`.

Splits: with a manifest, each video's `train` and `eval` time ranges (a video with no `train`
range is for evaluation only: the camera footage of `fetch.py`). Without one, every tenth
file is held out, or, with fewer than ten files, the last tenth of each video (after a gap of
one window), so no training window ever overlaps an evaluation window.
- train: item k is a random window, crop and horizontal flip drawn from a generator seeded by k,
  so a batch is a function of its indices alone (and so of (seed, step)).
- eval: non-overlapping windows spread evenly over the ranges, centre crop, no flip.
- all: as eval, over whole videos (a folder of a user's clips).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.config import ModelConfig
from training.data.framestore import open_store

VIDEO_SUFFIXES = {".mp4", ".webm", ".gif", ".avi", ".mov", ".mkv"}
MANIFEST = "magvit-data.json"
HOLDOUT_EVERY = 10
TRAIN_ITEMS = 1_000_000  # indices a training step draws from; each is a random window
SPLITS = ("train", "eval", "all")

Ranges = tuple[tuple[float, float], ...]


class NoWindows(ValueError):
    """A split has no window at all (e.g. `train` of a folder whose manifest is evaluation
    only); `stats` counts what was found."""

    def __init__(self, message: str, stats: WindowStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass(frozen=True)
class VideoSpec:
    """What the manifest says of one video: seconds for the ranges, (start seconds, class) for
    the class of every part of it."""

    train: Ranges = ()
    eval: Ranges = ()
    classes: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class Manifest:
    class_names: tuple[str, ...] = ()
    frame_stride: int = 1
    videos: dict[str, VideoSpec] = field(default_factory=dict)
    about: str = ""  # where the footage comes from and its licence

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        videos = {
            name: VideoSpec(
                train=tuple(tuple(r) for r in spec.get("train", ())),
                eval=tuple(tuple(r) for r in spec.get("eval", ())),
                classes=tuple((float(t), int(c)) for t, c in spec.get("classes", ())),
            )
            for name, spec in data.get("videos", {}).items()
        }
        return cls(
            tuple(data.get("class_names", ())),
            int(data.get("frame_stride", 1)),
            videos,
            data.get("about", ""),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "about": self.about,
                "class_names": list(self.class_names),
                "frame_stride": self.frame_stride,
                "videos": {
                    name: {"train": spec.train, "eval": spec.eval, "classes": spec.classes}
                    for name, spec in self.videos.items()
                },
            },
            indent=1,
        )


@dataclass(frozen=True)
class Window:
    video: int  # index into the dataset's videos
    start: int  # first frame
    label: int


@dataclass(frozen=True)
class WindowStats:
    windows: int  # valid window starts
    crossing_cuts: int  # starts left out because the window would span a scene cut


class VideoWindows(torch.utils.data.Dataset):
    def __init__(
        self,
        root: Path,
        config: ModelConfig,
        split: str = "train",
        limit: int | None = None,
        frame_stride: int | None = None,
        show_progress: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        self.root, self.split = root, split
        self.num_frames, self.frame_size = config.num_frames, config.frame_size
        manifest_path = root / MANIFEST
        self.manifest = Manifest.read(manifest_path) if manifest_path.is_file() else None
        files, labels, self.class_names = self._scan()
        if len(self.class_names) > config.num_classes:
            raise ValueError(
                f"{len(self.class_names)} classes in {root}, the model has {config.num_classes}"
            )
        stride = frame_stride or (self.manifest.frame_stride if self.manifest else 1)
        self.frame_stride = stride
        self.span = (self.num_frames - 1) * stride + 1
        held_out = self.manifest is None and len(files) >= HOLDOUT_EVERY
        cache = root / ".magvit-cache" / f"frames-{self.frame_size[0]}x{self.frame_size[1]}"
        self.videos: list[np.ndarray] = []
        self.fps: list[float] = []
        starts: list[np.ndarray] = []
        crossing = 0
        for i, (path, label) in enumerate(zip(files, labels, strict=True)):
            if held_out and (split == "train") == (i % HOLDOUT_EVERY == 0):
                continue
            rel = path.relative_to(root)
            info, frames = open_store(path, cache / rel, self.frame_size, show_progress)
            ranges = self._ranges(rel.as_posix(), info.num_frames, info.fps, held_out)
            shot = info.shot_ids()
            valid, cut = [], 0
            for a, b in ranges:
                s = np.arange(a, max(a, b - self.span + 1))
                same = shot[s] == shot[s + self.span - 1] if len(s) else s.astype(bool)
                valid.append(s[same])
                cut += int((~same).sum())
            v = len(self.videos)
            self.videos.append(frames)
            self.fps.append(info.fps)
            s = np.concatenate(valid) if valid else np.zeros(0, dtype=np.int64)
            labs = self._labels(rel.as_posix(), s, info.fps, label)
            starts.append(np.stack([np.full_like(s, v), s, labs], 1))
            crossing += cut
        table = np.concatenate(starts) if starts else np.zeros((0, 3), dtype=np.int64)
        self.stats = WindowStats(len(table), crossing)
        if split != "train":
            table = self._spread(table, limit)
        if not len(table):
            raise NoWindows(f"no {split} windows of {self.span} frames under {root}", self.stats)
        self.table = table  # [n, 3]: video, start frame, label

    @property
    def frame_rate(self) -> float | None:
        """Frames per second of a window (the median source rate / the stride): the rate at
        which a model trained on these windows learns motion."""
        if not self.fps:
            return None
        return round(float(np.median(self.fps)) / self.frame_stride, 3)

    # ----------------------------------------------------------------------------- layout
    def _scan(self) -> tuple[list[Path], list[int], tuple[str, ...]]:
        root = self.root
        if self.manifest is not None and self.manifest.videos:
            files = [root / name for name in self.manifest.videos]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"the manifest names missing videos: {missing}")
            names = self.manifest.class_names or (root.name,)
            return files, [0] * len(files), names
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes = [d for d in subdirs if any(_videos(d))]
        if classes:
            pairs = [(f, label) for label, d in enumerate(classes) for f in _videos(d)]
            names = tuple(d.name for d in classes)
        else:
            pairs = [(f, 0) for f in _videos(root)]
            names = (root.name,)
        if not pairs:
            raise ValueError(f"no videos under {root}")
        return [f for f, _ in pairs], [label for _, label in pairs], names

    def _ranges(self, name: str, n: int, fps: float, held_out: bool) -> list[tuple[int, int]]:
        """Frame ranges [a, b) of this split in one video."""
        spec = self.manifest.videos.get(name) if self.manifest else None
        if self.split == "all" or held_out:
            return [(0, n)]
        if spec is not None:
            ranges = spec.train if self.split == "train" else spec.eval
            return [(max(0, round(a * fps)), min(n, round(b * fps))) for a, b in ranges]
        cut = int(n * (1 - 1 / HOLDOUT_EVERY))  # the last tenth, after a gap of one window
        return [(0, max(0, cut - self.span))] if self.split == "train" else [(cut, n)]

    def _labels(self, name: str, starts: np.ndarray, fps: float, default: int) -> np.ndarray:
        spec = self.manifest.videos.get(name) if self.manifest else None
        if spec is None or not spec.classes:
            return np.full_like(starts, default)
        times = np.array([t for t, _ in spec.classes]) * fps
        labels = np.array([c for _, c in spec.classes])
        return labels[np.clip(np.searchsorted(times, starts, side="right") - 1, 0, None)]

    def _spread(self, table: np.ndarray, limit: int | None) -> np.ndarray:
        """Non-overlapping windows, then `limit` of them spread evenly."""
        kept, last = [], {}
        for row in table:
            v, s = int(row[0]), int(row[1])
            if s >= last.get(v, -self.span):
                kept.append(row)
                last[v] = s + self.span
        out = np.stack(kept) if kept else table[:0]
        if limit is not None and limit < len(out):
            out = out[np.linspace(0, len(out) - 1, limit).round().astype(int)]
        return out

    # ---------------------------------------------------------------------------- items
    def __len__(self) -> int:
        return TRAIN_ITEMS if self.split == "train" else len(self.table)

    def window(self, index: int) -> tuple[Window, int, int, bool]:
        """The window of item `index` and its crop (top, left) and flip."""
        if self.split == "train":
            rng = np.random.default_rng([0x5EED, index])
            row = self.table[rng.integers(len(self.table))]
        else:
            rng, row = None, self.table[index]
        frames = self.videos[int(row[0])]
        h, w = frames.shape[1:3]
        fh, fw = self.frame_size
        if rng is None:
            top, left, flip = (h - fh) // 2, (w - fw) // 2, False
        else:
            top, left = int(rng.integers(h - fh + 1)), int(rng.integers(w - fw + 1))
            flip = bool(rng.integers(2))
        return Window(int(row[0]), int(row[1]), int(row[2])), top, left, flip

    def frames(self, index: int) -> np.ndarray:
        """uint8 [T, H, W, 3] of item `index`."""
        win, top, left, flip = self.window(index)
        fh, fw = self.frame_size
        idx = slice(win.start, win.start + self.span, self.frame_stride)
        clip = np.asarray(self.videos[win.video][idx, top : top + fh, left : left + fw])
        return np.ascontiguousarray(clip[:, :, ::-1] if flip else clip)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = torch.from_numpy(self.frames(index)).permute(3, 0, 1, 2).float() / 255.0
        return clip, self.window(index)[0].label  # [3, T, H, W]


def _videos(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.suffix.lower() in VIDEO_SUFFIXES and ".magvit-cache" not in f.parts
    )
