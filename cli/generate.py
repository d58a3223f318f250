"""`magvit generate TASK --input VIDEO --output OUT`: run one task on one video. Frame prediction
continues the input (from its last frames, or --start), for --frames frames. The input is read at
about the model's frame rate (one frame in --frame-step), and the result written at the rate
read."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.main import CliError
from models.tasks import TASK_CODES


def add_parser(sub) -> None:
    from models.config import CONFIGS

    p = sub.add_parser("generate", help="run a task on a video and write the result")
    p.add_argument("task", choices=TASK_CODES, help="task code")
    p.add_argument("--input", type=Path, help="input video (mp4, webm, gif, avi, mov, mkv)")
    p.add_argument("--output", type=Path, required=True, help="output: .mp4, .webm, .gif or .npz")
    p.add_argument("--class-id", type=int, default=None, help="class for cg and cfp")
    p.add_argument("--steps", type=int, default=12, help="decoding steps (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--choice-temperature",
        type=float,
        default=None,
        help="re-masking noise (default 4.5, or the preset's)",
    )
    p.add_argument(
        "--schedule",
        default=None,
        help="mask schedule: cosine (default), exp, uniform, linear, log or powP",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="official decoding settings by name, e.g. bair-fp (exp schedule, choice "
        "temperature 400); explicit options override it",
    )
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=0.0,
        help="classifier-free guidance s in c + s(c - u), as the official code; 0 (default) is off",
    )
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="fp, cfp: frames to make, the condition's included, by sliding the "
        "model's window (default: one window)",
    )
    p.add_argument(
        "--start",
        type=int,
        default=None,
        help="fp, cfp: the first condition frame of the input (default: its last "
        "frames, so that the prediction continues the clip)",
    )
    p.add_argument(
        "--frame-step",
        type=int,
        default=None,
        help="read one frame of the input in this many (default: the step that brings its frame "
        "rate nearest the model's; 1 when the model's is unknown)",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate of the output (default: the rate the input was read at, its own over "
        "the step; without an input the model's, or 8)",
    )
    p.add_argument("--no-paste", action="store_true", help="do not paste condition pixels back")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: shipped)")
    src.add_argument("--config", choices=sorted(CONFIGS), help="preset, with --random-init")
    p.add_argument("--random-init", action="store_true", help="random weights (for testing)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="default auto: fp16 on CUDA, bf16 on a CPU that has it, else fp32",
    )
    p.set_defaults(run=run)


def _load_pipeline(args: argparse.Namespace):
    from models.checkpoint import CheckpointError
    from models.pipeline import MagvitPipeline, precision_dtype, resolve_device

    dtype = precision_dtype(args.precision, resolve_device(args.device))
    if args.config or args.random_init:
        if not (args.config and args.random_init):
            raise CliError("--config and --random-init go together")
        return MagvitPipeline.random_init(args.config, args.device, args.seed, dtype)
    try:
        return MagvitPipeline.from_checkpoint(args.checkpoint, args.device, dtype)
    except CheckpointError as err:
        raise CliError(str(err)) from None


def decode_options(args: argparse.Namespace):
    """DecodeOptions from the flags: the preset's settings (if any), then the explicit ones."""
    from models.options import DecodeOptions

    fields = {
        "steps": args.steps,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "guidance_scale": args.guidance_scale,
    }
    for name in ("choice_temperature", "schedule"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.preset is not None:
        return DecodeOptions.preset(args.preset, **fields)
    return DecodeOptions(**fields)


def _input_frames(args: argparse.Namespace, pipe, task):
    """The input's frames the task reads (a DecodedVideo): frame prediction (fp, cfp) its
    condition, from --start or the clip's last frames; other tasks its first frames. One
    frame in --frame-step, by default the step of the model's frame rate."""
    from media import read_video

    rate = pipe.config.frame_rate
    if not task.conditions_on_frames:
        return read_video(
            args.input, max_frames=pipe.config.num_frames, step=args.frame_step, rate=rate
        )
    count = pipe.config.cond_frames
    decoded = read_video(
        args.input, max_frames=count, start=args.start, step=args.frame_step, rate=rate
    )
    if decoded.frames.shape[0] < count and args.start is not None:
        last = (decoded.length or 0) - (count - 1) * decoded.step - 1
        at = f" at a frame step of {decoded.step}" if decoded.step > 1 else ""
        raise CliError(
            f"--start must be in [0, {last}]: the input has {decoded.length} frames and the "
            f"condition takes {count}{at}"
        )
    return decoded


def _check_rates(args: argparse.Namespace, task) -> None:
    from media import MAX_FPS, MAX_STEP, MIN_FPS

    if args.frame_step is not None and not (task.needs_video and 1 <= args.frame_step <= MAX_STEP):
        raise CliError(f"--frame-step is a step in [1, {MAX_STEP}] for tasks on a video")
    if args.fps is not None and not MIN_FPS <= args.fps <= MAX_FPS:
        raise CliError(f"--fps must be in [{MIN_FPS:g}, {MAX_FPS:g}]")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from media import FORMATS, MediaError, playable_fps, write_video
    from models.pipeline import InvalidInput, window_count

    fmt = args.output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CliError(f"unsupported output format {args.output.suffix!r}; use {sorted(FORMATS)}")
    try:
        options = decode_options(args)
    except ValueError as err:
        raise CliError(str(err)) from None
    pipe = _load_pipeline(args)
    try:
        task = pipe.task(args.task)
        if args.start is not None and (args.start < 0 or not task.conditions_on_frames):
            raise CliError("--start is a frame index (at least 0) for fp and cfp")
        _check_rates(args, task)
        video, step, fps = None, None, playable_fps(pipe.config.playback_rate)
        if task.needs_video:
            if args.input is None:
                raise CliError(f"task {args.task!r} needs --input")
            if not args.input.is_file():
                raise CliError(f"input not found: {args.input}")
            decoded = _input_frames(args, pipe, task)
            step, fps = decoded.step, playable_fps(decoded.sampled_fps)
            video = pipe.prepare_video(decoded.frames, args.task)[None]
        total = options.steps * (window_count(pipe.config, args.frames) if args.frames else 1)
        with tqdm(total=total, desc=f"{args.task} decoding", unit="step") as bar:
            out = pipe.generate_frames(
                args.task,
                video,
                [args.class_id],
                [args.seed],
                options,
                args.frames,
                progress=lambda info: bar.update(1),
                paste_condition=not args.no_paste,
            )
    except (InvalidInput, MediaError) as err:
        raise CliError(str(err)) from None
    except torch.cuda.OutOfMemoryError:
        raise CliError("out of GPU memory") from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fps = args.fps if args.fps is not None else fps
    write_video(args.output, pipe.video_to_uint8(out)[0], fps=fps)
    read = f", the input read one frame in {step}" if step is not None else ""
    print(f"wrote {args.output} ({fps:g} fps{read})")
    return 0
