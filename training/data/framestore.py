"""A video decoded once into a compact frame store: uint8 frames at training resolution in one
memory-mapped `.npy` file, and its shot boundaries, so a training step never waits on decoding.

Shapes: N frames, H x W pixels (resized to cover the model's frame, the aspect ratio kept).
A store is two files side by side: `<name>.npy` (uint8 [N, H, W, 3], read with
`np.load(mmap_mode="r")`, never pickled) and `<name>.json` (`StoreInfo`). Both are written to
temporary names and renamed, so an interrupted build leaves no half store behind.

Training footage is trusted local files (uploads go through `media/`, which limits and sniffs
them); decoding streams frame by frame so a 10-minute film never sits decoded in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

STORE_VERSION = 1
# A cut: the frame-to-frame change of a coarse thumbnail well above the change around it.
CUT_MIN_CHANGE = 24.0  # mean absolute difference (0-255) of 8x8-pooled frames
CUT_CONTRAST = 3.0  # times the median change of the neighbouring frames
CUT_NEIGHBOURS = 12


@dataclass(frozen=True)
class StoreInfo:
    source: str  # file name of the video it was made from
    source_bytes: int
    source_mtime_ns: int
    fps: float
    num_frames: int
    height: int
    width: int
    cuts: tuple[int, ...]  # frame indices that start a new shot (0 not included)
    version: int = STORE_VERSION

    def shot_ids(self) -> np.ndarray:
        """[N] the shot each frame belongs to (0 for the first shot)."""
        ids = np.zeros(self.num_frames, dtype=np.int32)
        for cut in self.cuts:
            ids[cut:] += 1
        return ids


def resized_size(height: int, width: int, frame_size: tuple[int, int]) -> tuple[int, int]:
    """The smallest size of the same aspect that covers `frame_size` (H, W), as
    `models.pipeline.fit_clip` resizes before its centre crop."""
    scale = max(frame_size[0] / height, frame_size[1] / width)
    return max(frame_size[0], round(height * scale)), max(frame_size[1], round(width * scale))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [n, H, W, 3] -> uint8 [n, *size, 3], bilinear with antialiasing like `fit_clip`."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def detect_cuts(frames: np.ndarray) -> tuple[int, ...]:
    """Shot boundaries of uint8 frames [N, H, W, 3]: frame i starts a shot when its change from
    frame i-1 is large in absolute terms and against the changes of its neighbours (a pan or
    fast motion changes every frame; a cut changes one)."""
    if len(frames) < 2:
        return ()
    change = np.zeros(len(frames), dtype=np.float32)
    prev = None
    for start in range(0, len(frames), 512):  # pooled in chunks: the store may be memory-mapped
        x = torch.from_numpy(np.array(frames[start : start + 512])).float()
        thumbs = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 8)  # [n, 3, 8, 8]
        if prev is not None:
            thumbs = torch.cat([prev, thumbs])
        diffs = (thumbs[1:] - thumbs[:-1]).abs().mean((1, 2, 3)).numpy()
        offset = start if prev is not None else start + 1
        change[offset : offset + len(diffs)] = diffs
        prev = thumbs[-1:]
    cuts = []
    for i in range(1, len(frames)):
        lo, hi = max(1, i - CUT_NEIGHBOURS), min(len(frames), i + CUT_NEIGHBOURS + 1)
        around = np.concatenate([change[lo:i], change[i + 1 : hi]])
        base = float(np.median(around)) if len(around) else 0.0
        is_cut = change[i] >= CUT_MIN_CHANGE and change[i] >= CUT_CONTRAST * base
        if is_cut and (not cuts or i - cuts[-1] > 1):  # one cut for a single changed frame
            cuts.append(i)
    return tuple(cuts)


def _decoded_frames(path: Path):
    """(fps, number of frames the header declares, iterator of uint8 [H, W, 3] frames)."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 24)

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return fps, stream.frames or 0, frames()


def build_store(
    video: Path, out: Path, frame_size: tuple[int, int], show_progress: bool = True
) -> StoreInfo:
    """Decode `video` once into `out`.npy / `out`.json, resized to cover `frame_size`."""
    fps, declared, frames = _decoded_frames(video)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npy")
    chunks: list[np.ndarray] = []
    written, size = 0, None
    bar = tqdm(
        total=declared or None,
        desc=f"decoding {video.name}",
        unit="frame",
        disable=not show_progress,
    )
    # Frames go to a raw file chunk by chunk, then become an .npy header + data in one rename.
    raw = out.with_name(f".{out.name}.{os.getpid()}.raw")
    with raw.open("wb") as sink:
        for frame in frames:
            if size is None:
                size = resized_size(frame.shape[0], frame.shape[1], frame_size)
            chunks.append(frame)
            if len(chunks) == 64:
                sink.write(resize_frames(np.stack(chunks), size).tobytes())
                written += len(chunks)
                bar.update(len(chunks))
                chunks = []
        if chunks:
            sink.write(resize_frames(np.stack(chunks), size).tobytes())
            written += len(chunks)
            bar.update(len(chunks))
    bar.close()
    if size is None:
        raw.unlink()
        raise ValueError(f"{video} has no video frames")
    data = np.memmap(raw, dtype=np.uint8, mode="r", shape=(written, *size, 3))
    store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=data.shape)
    store[:] = data
    store.flush()
    del store, data
    raw.unlink()
    stat = video.stat()
    info = StoreInfo(
        source=video.name,
        source_bytes=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns,
        fps=fps,
        num_frames=written,
        height=size[0],
        width=size[1],
        cuts=detect_cuts(np.load(tmp, mmap_mode="r")),
    )
    tmp.replace(out.with_suffix(".npy"))
    meta_tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.json")
    meta_tmp.write_text(json.dumps(asdict(info)))
    meta_tmp.replace(out.with_suffix(".json"))
    return info


def read_info(out: Path) -> StoreInfo | None:
    path = out.with_suffix(".json")
    if not path.is_file() or not out.with_suffix(".npy").is_file():
        return None
    data = json.loads(path.read_text())
    data["cuts"] = tuple(data["cuts"])
    info = StoreInfo(**data)
    return info if info.version == STORE_VERSION else None


def open_store(
    video: Path, out: Path, frame_size: tuple[int, int], show_progress: bool = True
) -> tuple[StoreInfo, np.ndarray]:
    """The store of `video` at `out` (built first if missing or stale) and its frames,
    memory-mapped read-only."""
    info = read_info(out)
    stat = video.stat()
    if info is None or (info.source_bytes, info.source_mtime_ns) != (
        stat.st_size,
        stat.st_mtime_ns,
    ):
        info = build_store(video, out, frame_size, show_progress)
    frames = np.load(out.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
    if frames.shape != (info.num_frames, info.height, info.width, 3):
        raise ValueError(f"the frame store {out} does not match its description; delete it")
    return info, frames
