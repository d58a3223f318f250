"""The engine: the only part of the service that touches the model (and the GPU).

It runs one batch at a time, in a worker thread, so the event loop stays free. A batch is a list
of requests that share task, decoding options and video length; each keeps its own seed and
class.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.decoding import StepInfo
from models.options import DecodeOptions
from models.pipeline import InvalidInput, MagvitPipeline, precision_dtype, resolve_device
from models.tasks import TASKS, Task

__all__ = ["Cancelled", "Engine", "EngineRequest", "InvalidInput"]


class Cancelled(Exception):
    """Every request of a running batch was cancelled."""


@dataclass
class EngineRequest:
    task: Task  # resolved once, from the job record
    frames: np.ndarray | None  # uint8 [T, H, W, 3]: the upload's frames the task reads
    class_id: int | None
    seed: int


# (step, num_steps, preview PNG bytes per request or None) -> False to stop the batch
StepCallback = Callable[[int, int, list[bytes] | None], bool]


class Engine:
    def __init__(self, pipeline: MagvitPipeline, compiled: bool = False) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self._lock = threading.Lock()  # one batch at a time per device
        self.compiled = compiled  # the transformer is under torch.compile (warm-up: both graphs)

    @classmethod
    def load(
        cls, checkpoint: Path | None, device: str, precision: str = "auto", compile: bool = False
    ) -> Engine:
        dtype = precision_dtype(precision, resolve_device(device))
        pipeline = MagvitPipeline.from_checkpoint(checkpoint, device, dtype)
        return cls(pipeline.compile() if compile else pipeline, compiled=compile)

    def warmup(self) -> None:
        """One short generation, so the first request does not pay for lazy initialisation; a
        compiled engine also runs a batch of two, so that both of its graphs (batch 1, any
        other batch) are compiled before the first request."""
        code = "cg" if "cg" in self.config.tasks else self.config.tasks[0]
        frames = None
        if code != "cg":
            frames = np.zeros((self.config.num_frames, *self.config.frame_size, 3), np.uint8)
        for batch in (1, 2) if self.compiled else (1,):
            request = EngineRequest(TASKS[code], frames, 0, 0)
            self.run([request] * batch, DecodeOptions(steps=1))

    def run(
        self,
        requests: list[EngineRequest],
        options: DecodeOptions,
        on_step: StepCallback | None = None,
        preview: bool = False,
        frames: int | None = None,
    ) -> list[np.ndarray]:
        """Generate; returns uint8 videos [T, H, W, 3], one per request: `frames` frames (fp,
        cfp; the model's window slid along), by default one window. `on_step` sees the steps
        of every window."""
        task = requests[0].task
        pipe = self.pipeline
        with self._lock, torch.inference_mode():
            videos = None
            if pipe.task(task).needs_video:
                if any(r.frames is None for r in requests):
                    raise InvalidInput(f"task {task.code!r} needs a video")
                videos = torch.stack(
                    [pipe.prepare_video(r.frames, task) for r in requests if r.frames is not None]
                )

            def progress(info: StepInfo) -> None:
                previews = None
                if preview:
                    tokens = info.tokens.view(len(requests), *self.config.token_shape)
                    previews = [_png(v) for v in pipe.video_to_uint8(pipe.decode_tokens(tokens))]
                if on_step is not None and on_step(info.step, info.num_steps, previews) is False:
                    raise Cancelled

            out = pipe.generate_frames(
                task,
                videos,
                [r.class_id for r in requests],
                [r.seed for r in requests],
                options,
                frames,
                progress,
            )
        return list(pipe.video_to_uint8(out))


def _png(video: np.ndarray) -> bytes:
    """The middle frame of a uint8 video [T, H, W, 3] as PNG."""
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, video[video.shape[0] // 2], extension=".png")
    return buf.getvalue()
