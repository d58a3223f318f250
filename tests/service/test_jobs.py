"""The job record: a JSON round-trip that carries every DecodeOptions field, and batch keys."""

from __future__ import annotations

import dataclasses
import json

from models.options import DecodeOptions
from service.jobs import JobSpec, key_id


def test_round_trip_carries_every_option():
    options = DecodeOptions(steps=3, temperature=0.5, choice_temperature=2.0, top_k=7)
    spec = JobSpec("fp", 5, None, "webm", options, preview=True, owner="o", fingerprint="f")
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    stored = json.loads(spec.to_json())["options"]
    assert set(stored) == {f.name for f in dataclasses.fields(DecodeOptions)}


def test_records_stored_before_the_job_record_still_read():
    legacy = {
        "seed": 1,
        "steps": 2,
        "temperature": 1.0,
        "choice_temperature": 4.5,
        "guidance_scale": 0.0,
        "class_id": 3,
        "format": "mp4",
        "preview": False,
    }
    spec = JobSpec.from_json(json.dumps(legacy), task="cg")
    assert spec.task == "cg" and spec.options.steps == 2 and spec.class_id == 3
    assert spec.owner == ""


def test_batch_keys_follow_task_and_options_only():
    a = JobSpec("cg", 1, 3, "mp4", DecodeOptions(steps=2), owner="x")
    b = JobSpec("cg", 9, 5, "npz", DecodeOptions(steps=2), owner="y")
    assert a.batch_key == b.batch_key
    assert a.batch_key != JobSpec("cg", 1, 3, "mp4", DecodeOptions(steps=3)).batch_key
    assert a.batch_key != JobSpec("cg", 1, 3, "mp4", DecodeOptions(steps=2, top_k=4)).batch_key
    assert a.batch_key != JobSpec("fp", 1, None, "mp4", DecodeOptions(steps=2)).batch_key


def test_key_ids_hide_the_key():
    assert key_id("secret") == key_id("secret") != key_id("other")
    assert "secret" not in key_id("secret")


def test_lengths_join_the_record_and_the_batch_key():
    one = JobSpec("fp", 1, None, "mp4", DecodeOptions(steps=2))
    long = dataclasses.replace(one, frames=48)
    assert JobSpec.from_json(long.to_json()) == long
    assert long.batch_key != one.batch_key != dataclasses.replace(one, frames=20).batch_key
    # One-window jobs keep the keys of records stored before lengths existed.
    assert one.batch_key == json.dumps(["fp", dataclasses.asdict(one.options)], sort_keys=True)


def test_frame_steps_join_the_record_but_not_the_batch_key():
    plain = JobSpec("opc", 1, None, "mp4", DecodeOptions(steps=2))
    stepped = dataclasses.replace(plain, frame_step=2, frame_rate=14.985)
    assert JobSpec.from_json(stepped.to_json()) == stepped
    assert stepped.batch_key == plain.batch_key  # the step changes the input, not the model run
    old = json.loads(plain.to_json())
    del old["frame_step"], old["frame_rate"]
    legacy = JobSpec.from_json(json.dumps(old))
    assert legacy.frame_step is None and legacy.frame_rate == 8.0  # as results were written
