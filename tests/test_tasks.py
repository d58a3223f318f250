"""The ten tasks: masks against hand-computed geometry and the official definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.tasks import TASK_CODES, TASKS, get_task

REF_TASKS = {
    "fp_1": ("fp", 1),
    "fp_5": ("fp", 5),
    "fi": ("fi", 1),
    "opc": ("opc", 1),
    "opv": ("opv", 1),
    "oph": ("oph", 1),
    "opd": ("opd", 1),
    "ipc": ("ipc", 1),
    "ipd": ("ipd", 1),
}


def test_ten_tasks_in_fixed_order():
    assert TASK_CODES == ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp")
    assert [TASKS[c].index for c in TASK_CODES] == list(range(10))
    assert {c for c in TASK_CODES if TASKS[c].needs_class} == {"cg", "cfp"}
    assert {c for c in TASK_CODES if not TASKS[c].needs_video} == {"cg"}
    with pytest.raises(KeyError, match="unknown task"):
        get_task("xx")


def test_box_and_band_geometry_by_hand():
    opc = get_task("opc").pixel_mask(2, 8, 8, 1)
    assert opc[0, 2:6, 2:6].all() and opc.sum() == 2 * 16
    opv = get_task("opv").pixel_mask(1, 8, 12, 1)
    assert opv[0, :, 3:9].all() and opv.sum() == 8 * 6
    oph = get_task("oph").pixel_mask(1, 12, 8, 1)
    assert oph[0, 3:9, :].all() and oph.sum() == 6 * 8
    ipc = get_task("ipc").pixel_mask(1, 8, 8, 1)
    assert not ipc[0, 2:6, 2:6].any() and ipc.sum() == 64 - 16
    assert get_task("cg").pixel_mask(4, 8, 8, 1).sum() == 0


def test_dynamic_band_sweeps_left_to_right():
    m = get_task("opd").pixel_mask(5, 4, 8, 1)  # band width 4, left edge 0 -> 4 over 5 frames
    lefts = [int(torch.nonzero(m[i, 0]).min()) for i in range(5)]
    assert lefts == [0, 1, 2, 3, 4]
    assert (m.sum((1, 2)) == 4 * 4).all()
    hole = ~get_task("ipd").pixel_mask(5, 4, 8, 1)
    assert (hole[:, 1:3] == m[:, 1:3]).all() and not hole[:, 0].any() and not hole[:, 3].any()


def test_frame_tasks_by_hand():
    fp = get_task("fp").pixel_mask(16, 4, 4, 5)
    assert fp[:5].all() and not fp[5:].any()
    assert get_task("fp").token_mask(4, 2, 2, 2)[:2].all()
    fi = get_task("fi").pixel_mask(16, 4, 4, 5)  # always one frame at each end
    assert fi[0].all() and fi[-1].all() and not fi[1:-1].any()
    assert get_task("fp").num_input_frames(16, 5) == 5
    assert get_task("cfp").num_input_frames(16, 5) == 5
    assert get_task("fi").num_input_frames(16, 5) == 16
    assert get_task("cg").num_input_frames(16, 5) == 0


@pytest.mark.parametrize("key", sorted(REF_TASKS))
def test_masks_and_condition_videos_match_official(reference, key):
    code, cond_frames = REF_TASKS[key]
    task = get_task(code)
    video = torch.from_numpy(reference["tasks/input_video"]).permute(0, 4, 1, 2, 3)  # NTHWC->NCTHW
    _, _, t, h, w = video.shape
    lt, lh, lw = json.loads(str(reference["meta_json"]))["tasks"]["latent_shape"]
    cond_latent = -(-cond_frames // (t // lt))
    want_pixel = np.broadcast_to(reference[f"tasks/{key}/video_mask"][0, ..., 0], (t, h, w))
    want_token = np.broadcast_to(reference[f"tasks/{key}/latent_mask"][0], (lt, lh, lw))
    np.testing.assert_array_equal(task.pixel_mask(t, h, w, cond_frames).numpy(), want_pixel)
    np.testing.assert_array_equal(task.token_mask(lt, lh, lw, cond_latent).numpy(), want_token)
    got = task.condition_video(video, cond_frames).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_allclose(got, reference[f"tasks/{key}/video"], atol=1e-6)


def test_condition_keeps_known_pixels_for_every_task():
    video = torch.rand(2, 3, 8, 16, 16)
    for task in TASKS.values():
        cond = task.condition_video(video, 2)
        mask = task.pixel_mask(8, 16, 16, 2)
        if task.needs_video:
            assert torch.equal(cond[..., mask], video[..., mask]), task.code
        else:
            assert not cond.any()
