"""RAFT optical flow (Teed & Deng, 2020) as a network flow teacher, loading torchvision's weights.

The module is our own implementation; its parameter and buffer names and shapes are those of
torchvision's ``raft_small()`` / ``raft_large()`` state dicts, so the files torchvision publishes
(``raft_small_C_T_V2-01064c6d.pth``, ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``, ...) load strictly
with `load_raft`, read by ``torch.load(weights_only=True)`` (data, never code). torchvision is not
imported.

Architecture (both variants; numbers as small / large):

* feature encoder, run on both frames: 7x7 stride-2 stem, three stages of two blocks (strides
  1, 2, 2), a 1x1 projection; output 128 / 256 channels at 1/8 resolution. Blocks are bottleneck
  (small) or residual (large) blocks; instance norm without affine parameters (no state keys).
* context encoder, run on frame 1 only: the same layout with 160 / 256 output channels, no norm
  (small) or batch norm (large). Its first 96 / 128 channels, through tanh, start the GRU hidden
  state; the rest, through ReLU, is the context fed to every update.
* correlation pyramid: all-pairs dot products of the 1/8 features divided by sqrt(C), average
  pooled 3 times (4 levels); each update looks up a (2r + 1)^2 window, r = 3 / 4, around the
  current match at every level (196 / 324 channels).
* update block: motion encoder (correlation + current flow), ConvGRU (one 3x3 / a 1x5 then a
  5x1), flow head giving a flow increment at 1/8 resolution.
* upsampling to full resolution: bilinear (small) or convex combination of the 3x3 coarse
  neighbours with weights from a mask head (large, 8 * 8 * 9 channels, scaled by 0.25).

Input convention: RGB (B, 3, H, W) in [-1, 1] (what torchvision's optical-flow transforms feed
the weights), H and W multiples of 8. Output of ``RAFT(image1, image2)``: flow (B, 2, H, W) in
pixels, channel 0 = x, on image1's grid, pointing into image2: image1(p) ~= image2(p + flow(p)).
`RaftFlowTeacher` turns this into the `FlowTeacher` convention (see `warpres.training.teacher`).

Small inputs: torchvision refuses images under 128 px per side (its coarsest correlation level
would be under 2 px, where its lookup normalisation divides by zero). Here the lookup is written
to stay exact on 1-pixel levels, so any multiple of 8 works; the published weights were trained
on larger images, so flows on tiny inputs are well defined but of unknown quality.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from warpres.checkpoints.safe_load import load_state_file, load_state_strict, require_state_dict
from warpres.errors import CheckpointError
from warpres.training.teacher import check_rgb_pair

DOWNSAMPLE = 8  # both encoders reduce H and W by 8; flows are estimated on that grid
_MASK_SCALE = 0.25  # fixed factor on the upsampling-mask logits, part of the trained weights' semantics
_MASK_HIDDEN = 256


@dataclass(frozen=True)
class RaftConfig:
    """Hyper-parameters of one RAFT variant; `SMALL` and `LARGE` are torchvision's two models.

    Encoder widths are (stem, stage 1, stage 2, stage 3, output projection).
    """

    name: str
    feature_widths: tuple[int, int, int, int, int]
    context_widths: tuple[int, int, int, int, int]
    bottleneck: bool  # bottleneck blocks (small) or residual blocks (large) in both encoders
    context_norm: str  # "none" or "batch"; the feature encoder always uses parameter-free instance norm
    corr_levels: int
    corr_radius: int
    motion_corr_widths: tuple[int, ...]  # one or two convolutions on the correlation features
    motion_flow_widths: tuple[int, int]
    motion_out: int  # includes the 2 channels of the raw flow appended at the end
    hidden: int  # GRU hidden state size, taken from the start of the context encoder's output
    gru_kernels: tuple[tuple[int, int], ...]  # one ConvGRU per kernel, applied in turn
    flow_head_hidden: int
    convex_upsampling: bool


SMALL = RaftConfig(
    name="small",
    feature_widths=(32, 32, 64, 96, 128),
    context_widths=(32, 32, 64, 96, 160),
    bottleneck=True,
    context_norm="none",
    corr_levels=4,
    corr_radius=3,
    motion_corr_widths=(96,),
    motion_flow_widths=(64, 32),
    motion_out=82,
    hidden=96,
    gru_kernels=((3, 3),),
    flow_head_hidden=128,
    convex_upsampling=False,
)

LARGE = RaftConfig(
    name="large",
    feature_widths=(64, 64, 96, 128, 256),
    context_widths=(64, 64, 96, 128, 256),
    bottleneck=False,
    context_norm="batch",
    corr_levels=4,
    corr_radius=4,
    motion_corr_widths=(256, 192),
    motion_flow_widths=(128, 64),
    motion_out=128,
    hidden=128,
    gru_kernels=((1, 5), (5, 1)),
    flow_head_hidden=256,
    convex_upsampling=True,
)


class _ConvUnit(nn.Sequential):
    """Conv (index 0, with bias) [-> norm (index 1)] [-> ReLU]; 'same' padding for odd kernels.

    The index layout is what gives the checkpoint keys ``<name>.0.weight`` / ``<name>.1.running_mean``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 norm: str = "none", relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=True)
        ]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm == "instance":
            # affine=False, no running stats: no entries in the state dict, as in the published files
            layers.append(nn.InstanceNorm2d(out_channels))
        elif norm != "none":
            raise ValueError(f"norm must be 'none', 'batch' or 'instance', got {norm!r}")
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-ReLU units, a skip (projected when strided), ReLU: (B, Cin, H, W) -> (B, Cout, H/s, W/s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.convnormrelu1 = _ConvUnit(in_channels, out_channels, 3, stride=stride, norm=norm)
        self.convnormrelu2 = _ConvUnit(out_channels, out_channels, 3, norm=norm)
        self.downsample: nn.Module = (
            _ConvUnit(in_channels, out_channels, 1, stride=stride, norm=norm, relu=False)
            if stride != 1 or in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class _BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 units at width Cout / 4, skip, ReLU: (B, Cin, H, W) -> (B, Cout, H/s, W/s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        inner = out_channels // 4
        self.convnormrelu1 = _ConvUnit(in_channels, inner, 1, norm=norm)
        self.convnormrelu2 = _ConvUnit(inner, inner, 3, stride=stride, norm=norm)
        self.convnormrelu3 = _ConvUnit(inner, out_channels, 1, norm=norm)
        self.downsample: nn.Module = (
            _ConvUnit(in_channels, out_channels, 1, stride=stride, norm=norm, relu=False)
            if stride != 1 or in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return F.relu(self.downsample(x) + y)


class _Encoder(nn.Module):
    """Image (B, 3, H, W) -> features (B, widths[4], H/8, W/8): stem (stride 2) and stages of strides 1, 2, 2."""

    def __init__(self, widths: tuple[int, int, int, int, int], bottleneck: bool, norm: str) -> None:
        super().__init__()
        block = _BottleneckBlock if bottleneck else _ResidualBlock
        self.convnormrelu = _ConvUnit(3, widths[0], 7, stride=2, norm=norm)
        self.layer1 = nn.Sequential(block(widths[0], widths[1], 1, norm), block(widths[1], widths[1], 1, norm))
        self.layer2 = nn.Sequential(block(widths[1], widths[2], 2, norm), block(widths[2], widths[2], 1, norm))
        self.layer3 = nn.Sequential(block(widths[2], widths[3], 2, norm), block(widths[3], widths[3], 1, norm))
        self.conv = nn.Conv2d(widths[3], widths[4], kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(images)))))


class _MotionEncoder(nn.Module):
    """(flow (B, 2, h, w), correlation (B, Ccorr, h, w)) -> motion features (B, motion_out, h, w).

    The last two output channels are the flow itself, passed through unchanged.
    """

    def __init__(self, config: RaftConfig, corr_channels: int) -> None:
        super().__init__()
        corr_widths, flow_widths = config.motion_corr_widths, config.motion_flow_widths
        self.convcorr1 = _ConvUnit(corr_channels, corr_widths[0], 1)
        self.convcorr2: nn.Module = (
            _ConvUnit(corr_widths[0], corr_widths[1], 3) if len(corr_widths) == 2 else nn.Identity()
        )
        self.convflow1 = _ConvUnit(2, flow_widths[0], 7)
        self.convflow2 = _ConvUnit(flow_widths[0], flow_widths[1], 3)
        self.conv = _ConvUnit(corr_widths[-1] + flow_widths[1], config.motion_out - 2, 3)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        corr_features = self.convcorr2(self.convcorr1(corr))
        flow_features = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr_features, flow_features], dim=1)), flow], dim=1)


class _ConvGRU(nn.Module):
    """Convolutional GRU cell: (h (B, Ch, h, w), x (B, Cx, h, w)) -> new h (B, Ch, h, w)."""

    def __init__(self, input_size: int, hidden_size: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        channels = hidden_size + input_size
        self.convz = nn.Conv2d(channels, hidden_size, kernel, padding=padding)
        self.convr = nn.Conv2d(channels, hidden_size, kernel, padding=padding)
        self.convq = nn.Conv2d(channels, hidden_size, kernel, padding=padding)

    def forward(self, hidden: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([hidden, x], dim=1)
        update = torch.sigmoid(self.convz(hx))
        reset = torch.sigmoid(self.convr(hx))
        candidate = torch.tanh(self.convq(torch.cat([reset * hidden, x], dim=1)))
        return (1 - update) * hidden + update * candidate


class _RecurrentBlock(nn.Module):
    """One ConvGRU per kernel of the config (named convgru1, convgru2), applied in turn."""

    def __init__(self, input_size: int, hidden_size: int, kernels: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        if len(kernels) not in (1, 2):
            raise ValueError(f"expected one or two GRU kernels, got {kernels}")
        self.convgru1 = _ConvGRU(input_size, hidden_size, kernels[0])
        self.convgru2 = _ConvGRU(input_size, hidden_size, kernels[1]) if len(kernels) == 2 else None

    def forward(self, hidden: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hidden = self.convgru1(hidden, x)
        return hidden if self.convgru2 is None else self.convgru2(hidden, x)


class _FlowHead(nn.Module):
    """GRU state (B, Ch, h, w) -> flow increment (B, 2, h, w) at 1/8 resolution."""

    def __init__(self, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(hidden)))


class _UpdateBlock(nn.Module):
    """One refinement step: (hidden, context, correlation, flow) -> (new hidden, flow increment)."""

    def __init__(self, config: RaftConfig, corr_channels: int) -> None:
        super().__init__()
        self.motion_encoder = _MotionEncoder(config, corr_channels)
        context_channels = config.context_widths[4] - config.hidden
        self.recurrent_block = _RecurrentBlock(config.motion_out + context_channels, config.hidden, config.gru_kernels)
        self.flow_head = _FlowHead(config.hidden, config.flow_head_hidden)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([context, self.motion_encoder(flow, corr)], dim=1)
        hidden = self.recurrent_block(hidden, x)
        return hidden, self.flow_head(hidden)


class _MaskPredictor(nn.Module):
    """GRU state (B, Ch, h, w) -> upsampling-mask logits (B, 9 * 8 * 8, h, w)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.convrelu = _ConvUnit(in_channels, _MASK_HIDDEN, 3)
        self.conv = nn.Conv2d(_MASK_HIDDEN, 9 * DOWNSAMPLE * DOWNSAMPLE, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _MASK_SCALE * self.conv(self.convrelu(hidden))


def _coords_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(B, 2, h, w) float pixel coordinates, channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys]).unsqueeze(0).expand(batch, -1, -1, -1)


def _correlation_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """All-pairs correlation, (B, C, h, w) x 2 -> `levels` tensors (B * h * w, 1, h / 2^l, w / 2^l).

    Entry [b * h * w + i, 0] is the map of frame-2 similarities for frame-1 pixel i, scaled by
    1/sqrt(C); coarser levels average-pool that map (floor for odd sizes) over frame 2 only.
    """
    batch, channels, height, width = fmap1.shape
    corr = torch.matmul(fmap1.flatten(2).transpose(1, 2), fmap2.flatten(2)) / channels**0.5
    pyramid = [corr.reshape(batch * height * width, 1, height, width)]
    for _ in range(levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2, stride=2))
    return pyramid


def _lookup(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Correlation windows around `coords` (B, 2, h, w) -> (B, levels * (2r + 1)^2, h, w).

    Bilinear sampling, zero outside the map, at coords / 2^level + (dx, dy), |dx|, |dy| <= r.
    The channel order within a level is dx-major (index (dx + r) * (2r + 1) + (dy + r)): it is
    the order the published weights were trained with, so it must not be "fixed" to row-major.
    """
    batch, _, height, width = coords.shape
    side = 2 * radius + 1
    offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    # (side, side, 2) with [i, j] = (dx_i, dy_j): x offset along the first axis (see docstring)
    delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)
    centres = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
    features = []
    for level, corr in enumerate(pyramid):
        points = centres / 2**level + delta  # absolute pixel coordinates in this level's map
        level_h, level_w = corr.shape[-2:]
        # Normalise for align_corners=False: u = (2p + 1) / size - 1 addresses pixel centre p
        # exactly like align_corners=True with u = 2p / (size - 1) - 1, but stays finite on the
        # 1-pixel maps small inputs give at the coarsest level.
        size = torch.tensor([level_w, level_h], device=coords.device, dtype=coords.dtype)
        grid = (2 * points + 1) / size - 1
        sampled = F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        features.append(sampled.view(batch, height, width, side * side))
    return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous()


def _upsample_bilinear(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) flow at 1/8 -> (B, 2, 8h, 8w), values scaled to full-resolution pixels."""
    height, width = flow.shape[-2:]
    size = (height * DOWNSAMPLE, width * DOWNSAMPLE)
    return DOWNSAMPLE * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def _upsample_convex(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) flow and (B, 9 * 8 * 8, h, w) mask logits -> (B, 2, 8h, 8w) flow.

    Each full-resolution pixel is a softmax-weighted mean of the 3x3 coarse flows around its
    coarse cell. Mask channels are laid out (neighbour, sub-row, sub-column), neighbours in
    row-major 3x3 order (that of `F.unfold`).
    """
    batch, _, height, width = flow.shape
    factor = DOWNSAMPLE
    weights = torch.softmax(mask.view(batch, 1, 9, factor, factor, height, width), dim=2)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(batch, 2, 9, 1, 1, height, width)
    fine = (weights * neighbours).sum(dim=2)  # (B, 2, sub-row, sub-col, h, w)
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, height * factor, width * factor)


class RAFT(nn.Module):
    """RAFT with torchvision's state-dict layout; `RAFT.small()` / `RAFT.large()` build the two variants.

    ``forward`` returns the final prediction; ``predictions`` every update's, to train with.
    """

    def __init__(self, config: RaftConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_encoder = _Encoder(config.feature_widths, config.bottleneck, norm="instance")
        self.context_encoder = _Encoder(config.context_widths, config.bottleneck, norm=config.context_norm)
        if config.context_widths[4] <= config.hidden:
            raise ValueError("the context encoder must output more channels than the GRU hidden state")
        corr_channels = config.corr_levels * (2 * config.corr_radius + 1) ** 2
        self.update_block = _UpdateBlock(config, corr_channels)
        self.mask_predictor = _MaskPredictor(config.hidden) if config.convex_upsampling else None

    @classmethod
    def small(cls) -> RAFT:
        """torchvision's ``raft_small`` layout (990,162 parameters)."""
        return cls(SMALL)

    @classmethod
    def large(cls) -> RAFT:
        """torchvision's ``raft_large`` layout (5,257,536 parameters)."""
        return cls(LARGE)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 12) -> torch.Tensor:
        """image1, image2 (B, 3, H, W) in [-1, 1], H and W multiples of 8 -> flow (B, 2, H, W).

        The flow is in pixels on image1's grid and points into image2: image1(p) ~= image2(p + flow(p)).
        Memory: the correlation volume holds (H/8 * W/8)^2 floats per image (64 MiB at 512 x 512).
        """
        *_, (flow, hidden) = self._updates(image1, image2, num_flow_updates)
        return self._upsample(flow, hidden)

    def predictions(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 12) -> list[torch.Tensor]:
        """The full-resolution flow after every update, first to last (what RAFT's sequence loss
        trains on); the last is `forward`'s output."""
        return [self._upsample(flow, hidden) for flow, hidden in self._updates(image1, image2, num_flow_updates)]

    def _upsample(self, flow: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if self.mask_predictor is None:
            return _upsample_bilinear(flow)
        return _upsample_convex(flow, self.mask_predictor(hidden))

    def _updates(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int):
        """Yield (coarse flow, GRU hidden state) after each update."""
        if image1.ndim != 4 or image1.shape[1] != 3 or image1.shape != image2.shape:
            raise ValueError(f"expected two RGB batches of one shape, got {tuple(image1.shape)} and "
                             f"{tuple(image2.shape)}")
        batch, _, height, width = image1.shape
        if height % DOWNSAMPLE or width % DOWNSAMPLE:
            raise ValueError(f"H and W must be multiples of {DOWNSAMPLE}, got {height}x{width}")
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
        config = self.config
        # One encoder pass over both frames; instance norm keeps the frames independent.
        fmap1, fmap2 = self.feature_encoder(torch.cat([image1, image2], dim=0)).chunk(2, dim=0)
        pyramid = _correlation_pyramid(fmap1, fmap2, config.corr_levels)
        hidden, context = self.context_encoder(image1).split(
            [config.hidden, config.context_widths[4] - config.hidden], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)

        coords0 = _coords_grid(batch, height // DOWNSAMPLE, width // DOWNSAMPLE, image1.device)
        coords1 = coords0.clone()
        for _ in range(num_flow_updates):
            # Gradients do not run through the lookup position (as in training), only the increments.
            coords1 = coords1.detach()
            corr = _lookup(pyramid, coords1, config.corr_radius)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
            yield coords1 - coords0, hidden


_STEM_KEY = "feature_encoder.convnormrelu.0.weight"
_VARIANTS = {SMALL.feature_widths[0]: SMALL, LARGE.feature_widths[0]: LARGE}


def _variant_of(state: Mapping[str, torch.Tensor], source: str) -> RaftConfig:
    """SMALL or LARGE from the width of the feature encoder's stem (32 / 64 output channels)."""
    stem = state.get(_STEM_KEY)
    if stem is None:
        raise CheckpointError(f"{source}: not a torchvision RAFT state dict: missing key {_STEM_KEY!r}")
    if stem.ndim != 4 or tuple(stem.shape[1:]) != (3, 7, 7) or stem.shape[0] not in _VARIANTS:
        raise CheckpointError(f"{source}: {_STEM_KEY!r} has shape {tuple(stem.shape)}, expected (32, 3, 7, 7) "
                              "(raft_small) or (64, 3, 7, 7) (raft_large)")
    return _VARIANTS[stem.shape[0]]


def load_raft(path: str | Path) -> RAFT:
    """Build the RAFT variant (small or large) a torchvision-format state dict file holds and load it strictly.

    A ``.safetensors`` file (what `warpres.demo.flow_teacher` trains) is read as tensors; any other
    with ``torch.load(map_location="cpu", weights_only=True)``: a plain state dict
    (torchvision's published files) or a training checkpoint with the state dict under ``"model"``
    (torchvision's reference training script) is accepted. Missing ``num_batches_tracked`` buffers
    (files saved before PyTorch 0.4.1) are filled with 0: they have no effect in eval mode. Any other
    missing, unexpected or mis-shaped key raises `CheckpointError` naming the file and the key.
    Returns the network in eval mode with frozen parameters, on the CPU.
    """
    source = str(path)
    data = load_state_file(path)
    if "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    state = dict(require_state_dict(data, source))
    model = RAFT(_variant_of(state, source))
    for key, buffer in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(buffer)
    load_state_strict(model, state, source)
    model.requires_grad_(False)
    return model.eval()


class RaftFlowTeacher:
    """`FlowTeacher` backed by a torchvision-format RAFT checkpoint (small or large, detected).

    ``teacher(source, target)``: RGB (B, 3, H, W) in [-1, 1] -> float32 flow (B, 2, H, W) in pixels,
    channel 0 = x, on the target grid, with target(p) ~= source(p + flow(p)), on the inputs' device.
    RAFT(image1, image2) gives image1(p) ~= image2(p + f(p)), so the network is called with
    image1 = target, image2 = source and its output is already in the teacher convention.

    Sizes that are not multiples of 8 are padded (replicate, split evenly between the two sides)
    up to the next multiple and the flow is cropped back; pixel units are unchanged because the
    image is not rescaled. The network runs frozen, in eval mode, under ``torch.no_grad``, in
    float32, and moves to the inputs' device on first use.
    """

    def __init__(self, checkpoint: str | Path, iterations: int = 12) -> None:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.checkpoint = Path(checkpoint)
        self.iterations = int(iterations)
        self.network = load_raft(self.checkpoint)

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_rgb_pair(source, target)
        height, width = source.shape[-2:]
        pad_h, pad_w = -height % DOWNSAMPLE, -width % DOWNSAMPLE
        # (left, right, top, bottom): padding shifts nothing inside the crop, so flows need no correction
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        network = self.network.to(source.device)
        with torch.no_grad():
            image1 = target.detach().float()
            image2 = source.detach().float()
            if pad_h or pad_w:
                image1 = F.pad(image1, padding, mode="replicate")
                image2 = F.pad(image2, padding, mode="replicate")
            flow = network(image1, image2, num_flow_updates=self.iterations)
        flow = flow[..., padding[2]:padding[2] + height, padding[0]:padding[0] + width]
        return flow.float().contiguous()
