"""RAFT flow teacher: torchvision state-dict layout, strict loading, teacher convention, odd sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from warpres.errors import CheckpointError
from warpres.training.raft import RAFT, RaftFlowTeacher, _lookup, _upsample_convex, load_raft

# Facts from torchvision's models/optical_flow/raft.py: the `num_params` metadata of the published
# weights, and the state-dict size of raft_small() / raft_large() (parameters, plus for large the
# 15 BatchNorm2d layers of the context encoder with 3 buffers each).
EXPECTED = {
    "small": {"num_params": 990_162, "num_keys": 106, "num_buffers": 0},
    "large": {"num_params": 5_257_536, "num_keys": 169, "num_buffers": 45},
}
EXPECTED_SHAPES = {
    "small": {
        "feature_encoder.convnormrelu.0.weight": (32, 3, 7, 7),
        "feature_encoder.layer2.0.convnormrelu2.0.weight": (16, 16, 3, 3),
        "feature_encoder.layer2.0.downsample.0.weight": (64, 32, 1, 1),
        "feature_encoder.conv.weight": (128, 96, 1, 1),
        "context_encoder.conv.weight": (160, 96, 1, 1),
        "update_block.motion_encoder.convcorr1.0.weight": (96, 196, 1, 1),  # 4 levels x 7^2
        "update_block.motion_encoder.conv.0.weight": (80, 128, 3, 3),
        "update_block.recurrent_block.convgru1.convz.weight": (96, 242, 3, 3),
        "update_block.flow_head.conv1.weight": (128, 96, 3, 3),
        "update_block.flow_head.conv2.bias": (2,),
    },
    "large": {
        "feature_encoder.convnormrelu.0.weight": (64, 3, 7, 7),
        "feature_encoder.layer3.0.downsample.0.weight": (128, 96, 1, 1),
        "context_encoder.convnormrelu.1.running_var": (64,),
        "context_encoder.layer2.0.downsample.1.num_batches_tracked": (),
        "context_encoder.conv.weight": (256, 128, 1, 1),
        "update_block.motion_encoder.convcorr1.0.weight": (256, 324, 1, 1),  # 4 levels x 9^2
        "update_block.motion_encoder.convcorr2.0.weight": (192, 256, 3, 3),
        "update_block.motion_encoder.convflow1.0.weight": (128, 2, 7, 7),
        "update_block.motion_encoder.conv.0.weight": (126, 256, 3, 3),
        "update_block.recurrent_block.convgru1.convq.weight": (128, 384, 1, 5),
        "update_block.recurrent_block.convgru2.convr.weight": (128, 384, 5, 1),
        "update_block.flow_head.conv1.weight": (256, 128, 3, 3),
        "mask_predictor.convrelu.0.weight": (256, 128, 3, 3),
        "mask_predictor.conv.weight": (576, 256, 1, 1),
    },
}
ABSENT = {  # keys of the other variant (or of parameter-free layers) that must not exist
    "small": ["mask_predictor.conv.weight", "update_block.recurrent_block.convgru2.convz.weight",
              "update_block.motion_encoder.convcorr2.0.weight", "feature_encoder.convnormrelu.1.weight",
              "context_encoder.convnormrelu.1.weight", "feature_encoder.layer1.0.downsample.0.weight"],
    "large": ["feature_encoder.convnormrelu.1.weight", "feature_encoder.layer1.0.convnormrelu3.0.weight",
              "feature_encoder.layer1.0.downsample.0.weight"],
}
BUILDERS = {"small": RAFT.small, "large": RAFT.large}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's convolutions on one thread: at these tiny sizes a second thread gains little,
    and when another process shares the two cores, spinning OpenMP workers make runs 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_state(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict with random weights (and non-trivial BatchNorm statistics).

    Convolution weights keep PyTorch's default (fan-in scaled) initialisation, so activations stay
    in a normal float range through the encoders: tiny weights make denormals, which are slow on CPU.
    """
    torch.manual_seed(seed)
    state = BUILDERS[variant]().state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif key.endswith("running_mean") or key.endswith(".1.bias") or key.endswith(".1.weight"):
                value.normal_(0, 0.1).add_(1.0 if key.endswith("weight") else 0.0)
            elif key.endswith("num_batches_tracked"):
                value.fill_(7)
    return state


@pytest.fixture(scope="module", params=["small", "large"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("raft") / f"raft_{request.param}.pth"
    state = _random_state(request.param)
    torch.save(state, path)
    return request.param, path, state


def _images(height: int, width: int, batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    target = torch.roll(source, shifts=(2, -3), dims=(2, 3)) * 0.9
    return source, target


@pytest.mark.parametrize("variant", ["small", "large"])
def test_layout_matches_torchvision(variant):
    model = BUILDERS[variant]()
    state = model.state_dict()
    expected = EXPECTED[variant]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]
    assert len(state) == expected["num_keys"]
    assert len(list(model.buffers())) == expected["num_buffers"]
    for key, shape in EXPECTED_SHAPES[variant].items():
        assert tuple(state[key].shape) == shape, key
    for key in ABSENT[variant]:
        assert key not in state


def test_round_trip_loads_strictly(checkpoint):
    variant, path, state = checkpoint
    model = load_raft(path)
    assert model.config.name == variant
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_training_checkpoint_and_missing_num_batches_tracked_load(tmp_path):
    state = _random_state("large")
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": trimmed, "epoch": 3}, path)
    model = load_raft(path)
    assert model.config.name == "large"
    assert torch.equal(model.state_dict()["mask_predictor.conv.weight"], state["mask_predictor.conv.weight"])


@pytest.mark.parametrize("variant", ["small", "large"])
def test_renamed_key_is_named(variant, tmp_path):
    state = _random_state(variant)
    state["update_block.flow_head.conv_two.weight"] = state.pop("update_block.flow_head.conv2.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as excinfo:
        load_raft(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "update_block.flow_head.conv2.weight" in message
    assert "update_block.flow_head.conv_two.weight" in message


@pytest.mark.parametrize("variant", ["small", "large"])
def test_wrong_shape_is_named(variant, tmp_path):
    state = _random_state(variant)
    key = "update_block.motion_encoder.convcorr1.0.weight"
    state[key] = state[key][:, :-1]
    path = tmp_path / "misshaped.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"convcorr1\.0\.weight") as excinfo:
        load_raft(path)
    assert str(path) in str(excinfo.value)


def test_unknown_stem_width_and_non_state_dict_are_refused(tmp_path):
    state = _random_state("small")
    state["feature_encoder.convnormrelu.0.weight"] = torch.zeros(48, 3, 7, 7)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"feature_encoder\.convnormrelu\.0\.weight"):
        load_raft(path)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_raft(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="no such"):
        load_raft(tmp_path / "absent.pth")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"feature_encoder.convnormrelu.0.weight": torch.zeros(32, 3, 7, 7), "hook": print}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_raft(path)


def test_teacher_identical_frames_shape_dtype_device(checkpoint):
    _, path, _ = checkpoint
    teacher = RaftFlowTeacher(path, iterations=3)
    source, _ = _images(64, 64, batch=2)
    flow = teacher(source, source.clone())
    assert flow.shape == (2, 2, 64, 64)
    assert flow.dtype == torch.float32
    assert flow.device == source.device
    assert torch.isfinite(flow).all()
    assert not flow.requires_grad


def test_teacher_calls_network_with_target_then_source(checkpoint, monkeypatch):
    _, path, _ = checkpoint
    teacher = RaftFlowTeacher(path, iterations=2)
    source, target = _images(64, 96)
    with torch.no_grad():
        direct = teacher.network(target, source, num_flow_updates=2)
    assert torch.allclose(teacher(source, target), direct)

    calls = []
    original = teacher.network.forward

    def recording_forward(image1, image2, num_flow_updates=12):
        calls.append((image1.clone(), image2.clone(), num_flow_updates))
        return original(image1, image2, num_flow_updates=num_flow_updates)

    monkeypatch.setattr(teacher.network, "forward", recording_forward)
    teacher(source, target)
    (image1, image2, updates), = calls
    assert torch.equal(image1, target) and torch.equal(image2, source)
    assert updates == 2


def test_teacher_pads_odd_sizes_and_crops_back(checkpoint, monkeypatch):
    _, path, _ = checkpoint
    teacher = RaftFlowTeacher(path, iterations=2)
    source, target = _images(61, 75, seed=2)
    seen = []
    original = teacher.network.forward

    def recording_forward(image1, image2, num_flow_updates=12):
        seen.append(tuple(image1.shape))
        return original(image1, image2, num_flow_updates=num_flow_updates)

    monkeypatch.setattr(teacher.network, "forward", recording_forward)
    flow = teacher(source, target)
    assert seen == [(1, 3, 64, 80)]
    assert flow.shape == (1, 2, 61, 75) and flow.dtype == torch.float32
    # 3 rows of padding split 1 / 2, 5 columns split 2 / 3, replicate mode
    padding = (2, 3, 1, 2)
    with torch.no_grad():
        padded = original(F.pad(target, padding, mode="replicate"), F.pad(source, padding, mode="replicate"),
                          num_flow_updates=2)
    assert torch.allclose(flow, padded[..., 1:62, 2:77])


def test_lookup_channel_order_is_dx_major_and_exact_on_one_pixel_levels():
    height, width, radius = 4, 5, 1
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xs, ys = xs.float(), ys.float()
    corr_map = xs + 100 * ys  # value of frame-2 pixel (x, y), the same for every frame-1 pixel
    fine = corr_map.expand(height * width, 1, height, width).contiguous()
    coarse = torch.full((height * width, 1, 1, 1), 7.0)  # a 1x1 level, as 64 px inputs give
    coords = torch.zeros(1, 2, height, width)
    coords[0, 0], coords[0, 1] = 2.0, 1.0  # every pixel looks up around x = 2, y = 1
    coords[0, :, 0, 0] = torch.tensor([0.5, 0.0])  # pixel (0, 0): x = 0.5 at level 0, 0.25 at level 1
    out = _lookup([fine, coarse], coords, radius)
    assert out.shape == (1, 2 * 9, height, width)
    for ix, dx in enumerate((-1, 0, 1)):
        for iy, dy in enumerate((-1, 0, 1)):
            channel = ix * 3 + iy  # (dx + r) * (2r + 1) + (dy + r)
            assert out[0, channel, 2, 3].item() == pytest.approx((2 + dx) + 100 * (1 + dy))
    # level 1 = the 1x1 map, centre x = 1, y = 0.5: bilinear weights with zeros outside the map
    assert out[0, 9 + 4, 2, 3].item() == 0.0  # (1, 0.5) is a full pixel right of the only centre
    assert out[0, 9 + 0, 2, 3].item() == pytest.approx(7.0 * 0.5)  # (0, -0.5)
    assert out[0, 9 + 4, 0, 0].item() == pytest.approx(7.0 * 0.75)  # (0.25, 0)
    assert torch.isfinite(out).all()


def test_convex_upsampling_with_centre_weights_is_nearest_times_8():
    flow = torch.randn(2, 2, 3, 4)
    mask = torch.full((2, 9, 8, 8, 3, 4), -30.0)
    mask[:, 4] = 30.0  # neighbour 4 of the row-major 3x3 window is the cell itself
    up = _upsample_convex(flow, mask.reshape(2, 9 * 64, 3, 4))
    expected = 8 * flow.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    assert torch.allclose(up, expected, atol=1e-4)


def test_network_rejects_sizes_not_multiple_of_8():
    model = RAFT.small().eval()
    image = torch.zeros(1, 3, 60, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(image, image)


def test_teacher_rejects_bad_inputs(checkpoint):
    _, path, _ = checkpoint
    teacher = RaftFlowTeacher(path, iterations=1)
    source, target = _images(64, 64)
    with pytest.raises(ValueError):
        teacher(source, target[..., :32])
    with pytest.raises(ValueError):
        teacher(source[:, :1], target[:, :1])
    with pytest.raises(ValueError):
        RaftFlowTeacher(path, iterations=0)


def test_safetensors_weights_load_strictly_and_an_unreadable_file_is_named(tmp_path):
    from safetensors.torch import save_file

    state = _random_state("small")
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_raft(path).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors: not a readable safetensors file"):
        load_raft(broken)


def test_predictions_are_every_update_and_end_with_the_forward_flow():
    torch.manual_seed(0)
    model = RAFT.small().eval()
    source, target = _images(64, 72)  # the 4-level correlation pyramid needs 8 cells per side
    with torch.no_grad():
        flows = model.predictions(target, source, num_flow_updates=3)
        final = model(target, source, num_flow_updates=3)
    assert len(flows) == 3 and all(flow.shape == (1, 2, 64, 72) for flow in flows)
    assert torch.equal(flows[-1], final)
    assert not torch.equal(flows[0], flows[1])  # each update moves the estimate
