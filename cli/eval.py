"""`magvit eval`: metrics of a checkpoint on held-out clips (default: the shipped checkpoint on
held-out synthetic clips). A tokenizer checkpoint (no transformer) gets its reconstruction
metrics alone, next to bicubic upsampling from its token grid's size (`bicubic_HxW`) for scale.

magvit eval --checkpoint DIR --data data/camera --split eval --json   real camera footage
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out clips")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a folder of videos")
    p.add_argument(
        "--split",
        default="eval",
        choices=("eval", "all"),
        help="a folder's held-out windows, or windows of all its videos (a folder of "
        "clips the model never saw)",
    )
    p.add_argument(
        "--frame-stride",
        type=int,
        default=None,
        help="frames between a clip's frames (default: the folder's manifest, else 1)",
    )
    p.add_argument("--num-clips", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", help="comma-separated task codes (default: all of the checkpoint's)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="default auto: fp16 on CUDA, bf16 on a CPU that has it, else fp32",
    )
    p.add_argument("--fvd-real", type=Path, help="I3D features of real clips (npz 'features')")
    p.add_argument("--fvd-fake", type=Path, help="I3D features of generated clips")
    p.add_argument("--samples", type=Path, help="write a PNG: one sample for each task")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError, default_checkpoint_dir, load_checkpoint
    from models.options import DecodeOptions
    from models.pipeline import (
        MagvitPipeline,
        load_tokenizer,
        precision_dtype,
        resolve_device,
        tokenizer_memory_format,
    )
    from training.datasets import make_dataset
    from training.evaluate import evaluate, evaluate_tokenizer, fvd_from_files, task_samples
    from training.logs import save_grid
    from training.transformer_trainer import parse_tasks

    if args.num_clips < 1:
        raise CliError("--num-clips must be at least 1")
    if bool(args.fvd_real) != bool(args.fvd_fake):
        raise CliError("--fvd-real and --fvd-fake go together")
    path = args.checkpoint or default_checkpoint_dir()
    try:
        ckpt = load_checkpoint(path)
        split = "eval" if args.data == "synthetic" else args.split
        dataset = make_dataset(
            args.data, ckpt.config, split, num_clips=args.num_clips, frame_stride=args.frame_stride
        )
        if ckpt.transformer_state is None:  # a tokenizer checkpoint: its reconstructions alone
            if args.tasks or args.samples:
                raise CliError(
                    f"{path} holds a tokenizer only: --tasks and --samples need a transformer"
                )
            pipe = None
        else:
            dtype = precision_dtype(args.precision, resolve_device(args.device))
            pipe = MagvitPipeline.from_loaded(ckpt, args.device, dtype)
            tasks = (
                ckpt.config.tasks
                if args.tasks is None
                else parse_tasks(args.tasks, ckpt.config.tasks)
            )
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    except KeyError as err:
        raise CliError(err.args[0]) from None
    n = min(args.num_clips, len(dataset))
    if pipe is None:
        # In the precision the pipeline would run in, so both reports give the same figures.
        device = resolve_device(args.device)
        dtype = precision_dtype(args.precision, device)
        layout = tokenizer_memory_format(ckpt.config, device, dtype)
        tokenizer = load_tokenizer(ckpt).to(device, dtype).to(memory_format=layout).eval()
        report = evaluate_tokenizer(tokenizer, dataset, n, dtype=dtype)
    else:
        report = evaluate(pipe, dataset, n, args.seed, DecodeOptions(steps=args.steps), tasks=tasks)
    if args.fvd_real:
        report["fvd"] = fvd_from_files(args.fvd_real, args.fvd_fake)
    if args.samples and pipe is not None:
        video, label = dataset[0]
        rows = task_samples(
            pipe,
            video.to(pipe.device, pipe.dtype),
            label,
            args.seed,
            DecodeOptions(steps=args.steps),
        )
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        save_grid(rows, args.samples)
    print(json.dumps(report, indent=2) if args.json else report)
    return 0
