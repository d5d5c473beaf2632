"""Generators and discriminators in the NVlabs PyTorch layout (stylegan2-ada / stylegan3
`networks_stylegan2`, StyleRes).

Our Generator and Discriminator use this layout natively, so loading is a strict state-dict load
after the configuration has been read off the tensor shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from warpres.checkpoints.safe_load import load_state_strict, require_keys, require_state_dict
from warpres.errors import CheckpointError
from warpres.models.discriminator import Discriminator, DiscriminatorConfig
from warpres.models.resample import setup_filter
from warpres.models.stylegan2 import Generator, GeneratorConfig

_BLOCK = re.compile(r"^synthesis\.b(\d+)\.")
_FC = re.compile(r"^mapping\.fc(\d+)\.weight$")
DEFAULT_EMBED_RES = 64


def infer_generator_config(state: Mapping[str, torch.Tensor], source: str, *,
                           conv_clamp: float | None, embed_res: int | None = None) -> GeneratorConfig:
    """Resolution, widths and latent sizes from the tensors; conv_clamp is not in the tensors.

    embed_res defaults to 64 (the StyleRes/WarpRes injection point) or, for generators below
    256 px, a quarter of the resolution.
    """
    resolutions = sorted({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    fcs = sorted(int(m.group(1)) for k in state if (m := _FC.match(k)))
    if not resolutions or not fcs:
        raise CheckpointError(f"{source}: no 'synthesis.b<res>.*' or 'mapping.fc<i>.weight' keys: "
                              "not an NVlabs-layout StyleGAN2 generator")
    resolution = resolutions[-1]
    try:
        channels = tuple(int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions)
        z_dim = int(state["mapping.fc0.weight"].shape[1])
        w_dim = int(state[f"mapping.fc{fcs[-1]}.weight"].shape[0])
        img_channels = int(state[f"synthesis.b{resolution}.torgb.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing key {exc.args[0]!r} needed to infer the generator shape") from None
    if embed_res is None:
        embed_res = DEFAULT_EMBED_RES if resolution >= 4 * DEFAULT_EMBED_RES else max(resolution // 4, 16)
    try:
        return GeneratorConfig(resolution=resolution, channels=channels, z_dim=z_dim, w_dim=w_dim,
                               mapping_layers=len(fcs), img_channels=img_channels, conv_clamp=conv_clamp,
                               embed_res=embed_res)
    except ValueError as exc:
        raise CheckpointError(f"{source}: inferred an impossible generator: {exc}") from None


def check_resample_filters(state: Mapping[str, torch.Tensor], source: str) -> None:
    """We implement the [1,3,3,1] filter only; a checkpoint built with another must not load silently."""
    expected = setup_filter()
    for key, value in state.items():
        if key.endswith("resample_filter") and not torch.allclose(value.float(), expected, atol=1e-6):
            raise CheckpointError(f"{source}: {key} is not the [1,3,3,1] binomial filter this model implements")


def load_nvlabs_generator(state: object, source: str, *, conv_clamp: float | None = 256.0,
                          embed_res: int | None = None) -> Generator:
    """A Generator from an NVlabs-layout state dict (keys `mapping.*`, `synthesis.*` only)."""
    state = require_state_dict(state, source)
    config = infer_generator_config(state, source, conv_clamp=conv_clamp, embed_res=embed_res)
    check_resample_filters(state, source)
    generator = Generator(config)
    load_state_strict(generator, state, source)
    return generator.eval()


_FROMRGB = re.compile(r"^b(\d+)\.fromrgb\.weight$")


def load_nvlabs_discriminator(state: Mapping[str, torch.Tensor], source: str, *,
                              mbstd_group_size: int | None = 4,
                              conv_clamp: float | None = 256.0) -> Discriminator:
    """A Discriminator holding an NVlabs `D` state dict (stylegan2-ada-pytorch / stylegan3, c_dim=0).

    Resolution, image channels, widths and mbstd_num_channels are read from the tensors; the group
    size and clamp are not stored in weights, so they are arguments (NVlabs defaults). Any missing,
    unexpected or mis-shaped key raises a CheckpointError naming it.
    """
    state = require_state_dict(state, source)
    if any(k.startswith("mapping.") for k in state):
        raise CheckpointError(f"{source}: has 'mapping.*' keys: conditional discriminators (c_dim > 0) "
                              "are not supported, only unconditional ones")
    tops = sorted(int(m.group(1)) for k in state if (m := _FROMRGB.match(k)))
    if len(tops) != 1:
        raise CheckpointError(f"{source}: expected exactly one 'b{{resolution}}.fromrgb.weight' key "
                              f"(the top block), found {[f'b{r}.fromrgb.weight' for r in tops]}")
    resolution = tops[0]
    log2 = math.log2(resolution)
    if resolution < 8 or log2 != int(log2):
        raise CheckpointError(f"{source}: 'b{resolution}.fromrgb.weight' implies resolution {resolution}, "
                              "not a power of two >= 8")
    resolutions = [2**k for k in range(2, int(log2) + 1)]
    width_keys = ["b4.conv.weight"] + [f"b{r}.conv0.weight" for r in resolutions[1:]]
    require_keys(state, width_keys, source)
    for key in [*width_keys, f"b{resolution}.fromrgb.weight"]:
        if state[key].ndim != 4:
            raise CheckpointError(f"{source}: {key} should be a 4-D conv weight, has shape {tuple(state[key].shape)}")
    channels = tuple(int(state[k].shape[0]) for k in width_keys)
    try:
        config = DiscriminatorConfig(
            resolution=resolution, img_channels=int(state[f"b{resolution}.fromrgb.weight"].shape[1]),
            channels=channels, mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=int(state["b4.conv.weight"].shape[1]) - channels[0], conv_clamp=conv_clamp)
    except ValueError as exc:
        raise CheckpointError(f"{source}: inconsistent discriminator tensors (b4.conv.weight): {exc}") from None
    model = Discriminator(config)
    load_state_strict(model, state, source)
    return model
