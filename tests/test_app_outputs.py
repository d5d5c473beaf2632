"""Output planning of an edit run: sweep expansion, file names and the collision check (warpres.app.outputs)."""

from pathlib import Path

import numpy as np
import pytest

from warpres.app.outputs import OutputCollisionError, plan_outputs, refuse_colliding_outputs
from warpres.edits import EditRequest


def test_no_edit_plans_the_reconstruction():
    assert [(o.suffix, o.edit_sets) for o in plan_outputs((), None)] == [("reconstruction", (None,))]


def test_each_edit_spec_is_parsed_once_into_its_own_output():
    outputs = plan_outputs(("smile=2", "age=3,pose=-1"), None)
    assert [o.suffix for o in outputs] == ["smile=2", "age=3_pose=-1"]
    assert outputs[1].edit_sets == ((EditRequest("age", 3.0), EditRequest("pose", -1.0)),)


def test_sweep_expands_every_name_of_a_spec_to_each_strength():
    (output,) = plan_outputs(("smile=9,age",), np.linspace(-1, 1, 3))
    assert output.suffix == "smile+age_sweep"
    assert output.edit_sets == tuple((EditRequest("smile", s), EditRequest("age", s)) for s in (-1.0, 0.0, 1.0))
    assert output.labels == ("-1", "+0", "+1")


def test_two_inputs_with_one_stem_are_refused():
    outputs = plan_outputs((), None)
    with pytest.raises(OutputCollisionError, match="a.png and b/a.jpg would write the same output files"):
        refuse_colliding_outputs([Path("a.png"), Path("b/a.jpg")], outputs)


def test_two_edits_with_one_file_name_are_refused():
    with pytest.raises(OutputCollisionError, match=r"same file name \(smile_sweep\)"):
        refuse_colliding_outputs([Path("a.png")], plan_outputs(("smile=1", "smile=2"), np.array([0.0, 1.0])))


def test_distinct_inputs_and_edits_pass():
    refuse_colliding_outputs([Path("a.png"), Path("b.png")], plan_outputs(("smile=1", "age=1"), None))
