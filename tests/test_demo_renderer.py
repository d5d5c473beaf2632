"""The procedural face domain: deterministic, attributes isolated where their masks say, details move with the head."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.demo.prior import sample_params
from warpres.demo.renderer import (
    MASK_NAMES,
    SEMANTIC_ATTRIBUTES,
    EarringStyle,
    FaceParams,
    HairStyle,
    render,
    render_with_masks,
    with_attribute,
    without_details,
)

REPO = Path(__file__).resolve().parents[1]


def detailed_identity(**overrides) -> FaceParams:
    """A frontal identity carrying every detail: freckles, moles, earrings, patterned clothes, textured background."""
    base = dict(freckle_density=0.8, freckle_seed=11, mole_count=2, mole_seed=5, earring_style=EarringStyle.HOOP,
                clothing_pattern=3, clothing_seed=7, background_style=1, background_seed=3, age=0.6)
    return FaceParams(**{**base, **overrides})


def identities() -> list[FaceParams]:
    """Random identities, posed frontally so every ear and earring is fully opaque."""
    rng = np.random.default_rng(2024)
    return [with_attribute(sample_params(rng), yaw=0.0, pitch=0.0) for _ in range(6)] + [
        detailed_identity(hair_style=style) for style in HairStyle]


def changed(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.any(first != second, axis=-1)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def centroid_x(mask: np.ndarray) -> float:
    assert mask.any()
    return float(np.nonzero(mask)[1].mean())


def test_the_same_params_give_identical_bytes_in_this_process_and_in_another():
    params = detailed_identity(yaw=0.37, smile=0.6, glasses=0.8)
    image = render(params)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    assert np.array_equal(image, render(params))
    assert np.array_equal(image, render_with_masks(params)[0])
    vector = ",".join(repr(float(x)) for x in params.to_vector())
    script = ("import hashlib, numpy as np\n"
              "from warpres.demo.renderer import FaceParams, render\n"
              f"params = FaceParams.from_vector(np.array([{vector}]))\n"
              "print(hashlib.sha256(render(params).tobytes()).hexdigest())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(image.tobytes()).hexdigest()


def test_the_vector_round_trip_is_exact_and_follows_the_field_order():
    rng = np.random.default_rng(0)
    for params in [sample_params(rng) for _ in range(20)] + [FaceParams()]:
        vector = params.to_vector()
        assert vector.shape == (28,) and vector.dtype == np.float64
        assert FaceParams.from_vector(vector) == params
        assert FaceParams.from_vector(vector.astype(np.float32)).to_vector().astype(np.float32).tobytes() == \
            vector.astype(np.float32).tobytes()
    assert FaceParams.field_names()[:6] == SEMANTIC_ATTRIBUTES


def test_invalid_params_are_rejected_and_hues_wrap():
    with pytest.raises(ValueError, match="smile"):
        FaceParams(smile=1.5)
    with pytest.raises(ValueError, match="hair_style"):
        FaceParams(hair_style=len(HairStyle))
    with pytest.raises(TypeError, match="freckle_seed"):
        FaceParams(freckle_seed=1.5)
    with pytest.raises(ValueError, match="not semantic"):
        with_attribute(FaceParams(), skin_tone=0.2)
    assert FaceParams(hair_hue=1.25).hair_hue == 0.25
    assert with_attribute(FaceParams(), hair_hue=-0.25).hair_hue == 0.75


def test_region_masks_cover_every_pixel_and_overlap_only_along_edges():
    for params in identities():
        image, masks = render_with_masks(params)
        assert set(masks) == set(MASK_NAMES)
        assert all(mask.dtype == bool and mask.shape == image.shape[:2] for mask in masks.values())
        regions = np.stack([masks[name] for name in MASK_NAMES[:8]]).sum(axis=0)
        assert regions.min() == 1
        assert (regions > 1).mean() < 0.1
        for name in ("background", "clothing", "neck", "face", "hair", "eyes", "mouth"):
            assert masks[name].any(), name


def test_smile_changes_only_the_mouth():
    for params in identities():
        frown, frown_masks = render_with_masks(with_attribute(params, smile=-0.9))
        grin, grin_masks = render_with_masks(with_attribute(params, smile=0.9))
        difference = changed(frown, grin)
        assert difference.sum() > 20
        assert not np.any(difference & ~grow(frown_masks["mouth"] | grin_masks["mouth"], 2))


def test_hair_hue_changes_only_the_hair_and_brows():
    for identity in identities():
        params = dataclasses.replace(identity, hair_saturation=0.7, hair_value=0.6, age=0.2)  # a hue that shows
        brown, brown_masks = render_with_masks(with_attribute(params, hair_hue=0.07))
        blue, blue_masks = render_with_masks(with_attribute(params, hair_hue=0.6))
        assert np.array_equal(brown_masks["hair"], blue_masks["hair"])
        difference = changed(brown, blue)
        assert difference.sum() > 100
        assert not np.any(difference & ~grow(brown_masks["hair"], 2))


def test_glasses_change_only_the_glasses_region_and_fade_continuously():
    for params in identities():
        bare, bare_masks = render_with_masks(with_attribute(params, glasses=0.0))
        faint = render(with_attribute(params, glasses=0.3))
        worn, worn_masks = render_with_masks(with_attribute(params, glasses=1.0))
        assert not bare_masks["glasses"].any()
        difference = changed(bare, worn)
        assert difference.sum() > 50
        assert not np.any(difference & ~grow(worn_masks["glasses"], 1))
        weak = np.abs(faint.astype(int) - bare).sum()
        assert 0 < weak < np.abs(worn.astype(int) - bare).sum()


def test_age_changes_only_face_and_hair():
    for params in identities():
        young, masks = render_with_masks(with_attribute(params, age=0.0))
        old = render(with_attribute(params, age=1.0))
        difference = changed(young, old)
        assert difference.any()
        assert not np.any(difference & ~grow(masks["face"] | masks["hair"], 2))


@pytest.mark.parametrize("yaw", [-0.8, 0.8])
def test_yaw_moves_the_face_and_its_details_together_and_leaves_the_surroundings(yaw):
    params = detailed_identity(earring_style=EarringStyle.STUD, hair_style=HairStyle.SHORT)
    front, front_masks = render_with_masks(params)
    turned, turned_masks = render_with_masks(with_attribute(params, yaw=yaw))
    direction = np.sign(yaw)
    for name in ("face", "eyes", "mouth", "moles", "freckles"):
        shift = centroid_x(turned_masks[name]) - centroid_x(front_masks[name])
        assert shift * direction > 0.5, (name, shift)
    near_half = np.zeros(front.shape[:2], bool)  # the far earring turns out of sight, the near one stays
    near_half[:, : front.shape[1] // 2] = yaw > 0
    near_half[:, front.shape[1] // 2:] = yaw < 0
    shift = centroid_x(turned_masks["earrings"] & near_half) - centroid_x(front_masks["earrings"] & near_half)
    assert shift * direction > 0.5
    assert not (turned_masks["earrings"] & ~near_half).any()
    head = np.zeros(front.shape[:2], bool)
    for name in ("face", "hair", "eyes", "mouth", "earrings", "glasses"):
        head |= front_masks[name] | turned_masks[name]
    surroundings = ~grow(head, 1)
    assert surroundings.sum() > 0.4 * surroundings.size
    assert np.array_equal(front[surroundings], turned[surroundings])
    assert changed(front, turned)[~surroundings].any()


def test_an_identity_detail_changes_the_image_only_where_it_lives():
    params = detailed_identity()
    first, masks = render_with_masks(params)
    second, _ = render_with_masks(dataclasses.replace(params, freckle_seed=12))
    difference = changed(first, second)
    assert difference.any()
    assert not np.any(difference & ~grow(masks["face"], 1))
    third = render(dataclasses.replace(params, background_seed=4))
    assert not np.any(changed(first, third) & ~grow(masks["background"], 1))
    fourth = render(dataclasses.replace(params, clothing_seed=8))
    assert not np.any(changed(first, fourth) & ~grow(masks["clothing"] | masks["neck"], 1))


def test_without_details_the_face_loses_its_details_and_keeps_everything_else():
    params = detailed_identity(glasses=0.9, smile=0.8)
    detailed, masks = render_with_masks(params)
    plain, plain_masks = render_with_masks(without_details(params))
    difference = changed(detailed, plain)
    assert difference[masks["background"]].mean() > 0.3  # the texture is gone
    assert difference[masks["clothing"]].mean() > 0.1  # the pattern is gone
    assert difference[masks["earrings"]].all()
    for kept in ("eyes", "mouth", "glasses", "hair"):
        assert np.array_equal(masks[kept], plain_masks[kept]), kept
    inside = cv2.erode((masks["eyes"] | masks["mouth"]).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert inside.sum() > 20 and not difference[inside].any()
    again = without_details(params)
    assert render(without_details(again)).tobytes() == plain.tobytes()


def test_sampled_identities_are_diverse_valid_images():
    rng = np.random.default_rng(7)
    samples = [sample_params(rng) for _ in range(50)]
    images = [render(params) for params in samples]
    assert all(image.dtype == np.uint8 and image.shape == (128, 128, 3) for image in images)
    assert len({image.tobytes() for image in images}) == 50
    vectors = np.stack([params.to_vector() for params in samples])
    assert vectors[:, :6].std(axis=0).min() > 0.1
    assert len(np.unique(vectors[:, FaceParams.field_names().index("hair_style")])) == len(HairStyle)


def test_other_sizes_render_the_same_picture():
    params = detailed_identity()
    large = render(params, size=256)
    assert large.shape == (256, 256, 3)
    downsized = cv2.resize(large, (128, 128), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(downsized - render(params)).mean() < 6
