"""The dataflow of warpres.stages: where each stage input comes from, and the walk over it."""

from __future__ import annotations

import pytest

from warpres.errors import WarpresError
from warpres.stages import (
    FAMILY_STAGES,
    OUTPUT,
    SYNTHESIS_HEAD,
    SYNTHESIS_TAIL,
    cached_tensors,
    dataflow,
    run_steps,
    stage_feeds,
    walk,
)


def _names(steps) -> list[str]:
    return [step.stage.name for step in steps]


@pytest.mark.parametrize("family", sorted(FAMILY_STAGES))
def test_every_input_is_produced_before_it_is_read(family):
    held = {"image", "wplus_edit"}
    for step in dataflow(family):
        assert {source for _, source in step.feeds} <= held, step
        held |= {target for _, target in step.produces}
    assert OUTPUT in held


@pytest.mark.parametrize("family", sorted(FAMILY_STAGES))
def test_the_dataflow_calls_exactly_the_family_stages(family):
    assert set(_names(dataflow(family))) == {stage.name for stage in FAMILY_STAGES[family]}


def test_tail_reads_the_edited_branch():
    tail = dataflow("warpres")[-1]
    assert tail.stage == SYNTHESIS_TAIL
    assert dict(tail.feeds) == {"feat_fused": "feat_fused", "rgb": "rgb_edit", "wplus": "wplus_edit"}


def test_plain_inversion_renders_the_edited_head_features():
    assert dict(dataflow("inversion")[-1].feeds)["feat_fused"] == "feat_edit"


def test_the_head_runs_on_both_branches_and_only_the_original_is_per_image():
    heads = [step for step in dataflow("styleres") if step.stage == SYNTHESIS_HEAD]
    assert [(dict(step.feeds)["wplus"], step.per_image) for step in heads] == [("wplus", True), ("wplus_edit", False)]


@pytest.mark.parametrize(("family", "cached"), [
    ("inversion", ()),
    ("styleres", ("residual",)),
    ("warpres", ("tap_quarter", "tap_half", "feat", "residual")),
])
def test_the_cache_holds_what_edits_read(family, cached):
    assert cached_tensors(family) == cached


@pytest.mark.parametrize(("family", "inversion", "edit"), [
    ("inversion", ["encoder"], ["synthesis_head", "synthesis_tail"]),
    ("styleres", ["encoder", "synthesis_head", "residual_encoder"], ["synthesis_head", "fuse", "synthesis_tail"]),
    ("warpres", ["encoder", "synthesis_head", "residual_encoder"],
     ["synthesis_head", "flow", "fuse", "synthesis_tail"]),
])
def test_an_edit_from_the_cache_reruns_only_the_edited_branch(family, inversion, edit):
    cache = cached_tensors(family)
    assert _names(walk(family, {"image"}, {"wplus", *cache})) == inversion
    assert _names(walk(family, {*cache, "wplus_edit"}, {OUTPUT})) == edit
    assert all(not step.per_image for step in walk(family, {*cache, "wplus_edit"}, {OUTPUT}))


def test_a_flow_given_from_outside_skips_the_flow_head():
    steps = walk("warpres", {*cached_tensors("warpres"), "wplus_edit", "flow"}, {OUTPUT})
    assert _names(steps) == ["synthesis_head", "fuse", "synthesis_tail"]


def test_walk_names_what_cannot_be_computed():
    with pytest.raises(WarpresError, match="wplus_edit"):
        walk("warpres", {"image"}, {OUTPUT})


def test_unknown_family_is_refused():
    with pytest.raises(WarpresError, match="no deployable stages"):
        dataflow("generator")


def test_run_steps_renames_into_the_dataflow_and_keeps_held_tensors():
    calls = []

    def run(step, inputs):
        calls.append((step.stage.name, dict(inputs)))
        return {name: f"{step.stage.name}.{name}({','.join(inputs.values())})" for name in step.stage.outputs}

    family = "styleres"
    tensors = run_steps(walk(family, {"image", "wplus"}, {"residual"}), {"image": "x", "wplus": "filtered"}, run)
    assert tensors["wplus"] == "filtered"  # the encoder's own wplus does not replace it
    assert calls[1] == ("synthesis_head", {"wplus": "filtered"})
    assert tensors["residual"] == "residual_encoder.residual(encoder.enc_feat(x),synthesis_head.feat(filtered))"


def test_stage_feeds_take_the_edited_call_of_the_head():
    tensors = {"wplus": "original", "wplus_edit": "edited"}
    assert stage_feeds("warpres", SYNTHESIS_HEAD, tensors) == {"wplus": "edited"}
