"""`magvit generate` decoding flags: schedule and named presets."""

from __future__ import annotations

import argparse

import pytest

from cli import generate
from cli.main import main


def _options(*flags: str):
    parser = argparse.ArgumentParser()
    generate.add_parser(parser.add_subparsers())
    return generate.decode_options(
        parser.parse_args(["generate", "fp", "--output", "o.mp4", *flags])
    )


def test_schedule_and_preset_flags():
    assert _options().schedule == "cosine" and _options().choice_temperature == 4.5
    assert _options("--schedule", "log").schedule == "log"
    bair = _options("--preset", "bair-fp")
    assert (bair.schedule, bair.choice_temperature) == ("exp", 400.0)
    # An explicit flag overrides the preset.
    assert _options("--preset", "bair-fp", "--choice-temperature", "2").choice_temperature == 2


@pytest.mark.parametrize("flags", [["--schedule", "square"], ["--preset", "nope"]])
def test_bad_schedule_or_preset_is_a_clear_error(tmp_path, capsys, flags):
    args = [
        "generate",
        "cg",
        "--class-id",
        "0",
        "--output",
        str(tmp_path / "o.mp4"),
        "--config",
        "tiny",
        "--random-init",
        *flags,
    ]
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
