"""Calibration data comes from the Session's own dataflow (warpres.calibration.data)."""

from __future__ import annotations

import numpy as np

from warpres.calibration.data import collect_stage_inputs
from warpres.edits import EditRequest
from warpres.runtime.session import Session
from warpres.stages import stages_for


def test_every_stage_is_fed_the_original_and_the_edited_branch(exports):
    exported = exports("warpres")
    session = Session(exported.folder.path, "onnxruntime", max_batch=4)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(5)]
    edit_sets = [(EditRequest("smile", 1.5),), (EditRequest("smile", -1.5),)]
    seen = []
    feeds = collect_stage_inputs(session, images, edit_sets, batch_size=3, progress=seen.append)

    assert seen == [3, 2]
    assert set(feeds) == {stage.name for stage in stages_for("warpres")}
    assert feeds["encoder"]["image"].shape[0] == 5  # per image: once
    assert feeds["synthesis_tail"]["wplus"].shape[0] == 5 * len(edit_sets)  # per image and edit
    # the head runs on the inverted W+ and on both edits of it; the tail renders the edited W+
    heads, tails = feeds["synthesis_head"]["wplus"], feeds["synthesis_tail"]["wplus"]
    originals = feeds["residual_encoder"]["feat"].shape[0]
    assert originals == 5 and len(heads) == 5 + 5 * len(edit_sets)
    inverted = heads[:3]  # the first batch's inversion comes first
    for edits in edit_sets:
        for row in exported.directions.apply(inverted, edits):
            assert np.abs(heads - row).max(axis=(1, 2)).min() < 1e-5
            assert np.abs(tails - row).max(axis=(1, 2)).min() < 1e-5
    # and the session is left as it was: its edits match a session that never recorded
    fresh = Session(exported.folder.path, "onnxruntime", max_batch=4)
    np.testing.assert_array_equal(session.edit(session.invert(images[:2]), edit_sets[0]),
                                  fresh.edit(fresh.invert(images[:2]), edit_sets[0]))
