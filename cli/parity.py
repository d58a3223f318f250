"""`magvit parity --reference FILE.npz --json`: compare this project's modules with the official
implementation's outputs stored in a reference file (see ../shared/reference/README.md).

For every output key (not under `params/`, not an input, not `meta_json`) it reports the maximum
absolute difference, or for ids and boolean masks the fraction of entries that agree.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cli.main import CliError

INPUT_KEYS = ("input_video", "input_ids", "segment_ids")


def add_parser(sub) -> None:
    p = sub.add_parser("parity", help="compare outputs with the official implementation's")
    p.add_argument("--reference", type=Path, required=True, help="reference .npz")
    p.add_argument("--save", type=Path, help="write this project's outputs to this .npz")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def _tokenizer_outputs(ref: dict, prefix: str, config: dict) -> dict:
    import torch

    from models.official import load_official, tokenizer_config
    from models.tokenizer import VQTokenizer

    model = VQTokenizer(tokenizer_config(config)).eval()
    params = {k[len(prefix) + 8 :]: v for k, v in ref.items() if k.startswith(f"{prefix}/params/")}
    load_official(model, params)
    video = torch.from_numpy(ref[f"{prefix}/input_video"]).permute(0, 4, 1, 2, 3)  # NTHWC->NCTHW
    with torch.no_grad():
        features = model.encode_features(video.float())
        ids = model.quantizer.nearest(features)
        quantized = model.quantizer.lookup(ids)
        decoded = model.decode_features(quantized)
        from_ids = model.decode(ids)

    def last(x):  # channels-first -> channels-last, as stored
        return x.movedim(1, -1).numpy()

    return {
        f"{prefix}/encoder_features": last(features),
        f"{prefix}/token_ids": ids.numpy(),
        f"{prefix}/quantized": last(quantized),
        f"{prefix}/decoded": last(decoded),
        f"{prefix}/decoded_from_ids": last(from_ids),
    }


def _transformer_outputs(ref: dict, prefix: str, config: dict) -> dict:
    import torch

    from models.official import load_official, transformer_config
    from models.transformer import BidirectionalTransformer

    cfg, sizes = transformer_config(config)
    model = BidirectionalTransformer(cfg, **sizes).eval()
    params = {k[len(prefix) + 8 :]: v for k, v in ref.items() if k.startswith(f"{prefix}/params/")}
    load_official(model, params)
    ids = torch.from_numpy(ref[f"{prefix}/input_ids"]).long()
    segments = torch.from_numpy(ref[f"{prefix}/segment_ids"]).long()
    with torch.no_grad():
        return {f"{prefix}/logits": model(ids, segments).numpy()}


def _task_outputs(ref: dict, prefix: str, config: dict) -> dict:
    import torch

    from models.tasks import get_task

    video = torch.from_numpy(ref[f"{prefix}/input_video"]).permute(0, 4, 1, 2, 3)
    _, _, t, h, w = video.shape
    lt, lh, lw = config["latent_shape"]
    out = {}
    names = {k.split("/")[1] for k in ref if k.startswith(f"{prefix}/") and k.count("/") == 2}
    for name in sorted(names):
        code, _, frames = name.partition("_")
        task = get_task(code)
        cond_frames = int(frames) if frames else 1
        cond_latent = -(-cond_frames // (t // lt))
        want_pixel = ref[f"{prefix}/{name}/video_mask"]
        want_latent = ref[f"{prefix}/{name}/latent_mask"]
        pixel = task.pixel_mask(t, h, w, cond_frames).numpy()[None, ..., None]
        latent = task.token_mask(lt, lh, lw, cond_latent).numpy()[None]
        cond = task.condition_video(video.float(), cond_frames).movedim(1, -1).numpy()
        # Stored masks broadcast over the dimensions they do not vary in; compare in that shape.
        out[f"{prefix}/{name}/video"] = cond
        out[f"{prefix}/{name}/video_mask"] = _squeeze_like(pixel, want_pixel.shape)
        out[f"{prefix}/{name}/latent_mask"] = _squeeze_like(latent, want_latent.shape)
    return out


def _squeeze_like(mask, shape):
    import numpy as np

    full = np.broadcast_to(mask, np.broadcast_shapes(mask.shape, shape))
    index = tuple(slice(0, 1) if s == 1 else slice(None) for s in shape)
    reduced = full[index]
    # A dimension kept at size 1 must really be constant, or the comparison would hide it.
    if not (np.broadcast_to(reduced, full.shape) == full).all():
        return full
    return reduced


def _schedule_outputs(ref: dict) -> dict:
    import numpy as np

    from models.schedule import MaskSchedule

    out = {}
    for key in ref:
        m = re.fullmatch(r"schedule/cosine_(\d+)", key)
        if m:
            out[key] = np.array(MaskSchedule().decoding_ratios(int(m.group(1))))
    return out


def compare(ref: dict, ours: dict) -> dict[str, dict]:
    import numpy as np

    report = {}
    for key, want in ref.items():
        if key == "meta_json" or "/params/" in key or key.rsplit("/", 1)[-1] in INPUT_KEYS:
            continue
        if key not in ours:
            report[key] = {"error": "not computed"}
            continue
        got = ours[key]
        if tuple(np.shape(got)) != tuple(np.shape(want)):
            report[key] = {"error": f"shape {np.shape(got)} != {np.shape(want)}"}
        elif want.dtype == bool or np.issubdtype(want.dtype, np.integer):
            report[key] = {"agree": float((np.asarray(got) == want).mean())}
        else:
            diff = np.abs(np.asarray(got, np.float64) - want.astype(np.float64))
            report[key] = {"max_abs_diff": float(diff.max()) if diff.size else 0.0}
    return report


def compute(ref: dict) -> dict:
    meta = json.loads(str(ref["meta_json"]))
    ours: dict = {}
    for prefix, section in meta.items():
        if not isinstance(section, dict):
            continue
        config = section.get("config", {})
        if "architecture" in config:
            ours.update(_tokenizer_outputs(ref, prefix, config))
        elif "vocab_size" in config:
            ours.update(_transformer_outputs(ref, prefix, config))
        elif "latent_shape" in section:
            ours.update(_task_outputs(ref, prefix, section))
    ours.update(_schedule_outputs(ref))
    return ours


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from models.official import TreeMismatch

    if not args.reference.is_file():
        raise CliError(f"reference not found: {args.reference}")
    try:
        with np.load(args.reference, allow_pickle=False) as data:
            ref = {k: data[k] for k in data.files}
        ours = compute(ref)
    except (TreeMismatch, ValueError, KeyError, OSError) as err:
        raise CliError(f"cannot use {args.reference}: {err}") from None
    report = compare(ref, ours)
    if args.save:
        np.savez(args.save, **ours)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:45s} {value}")
    return 0
