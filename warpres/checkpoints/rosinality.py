"""Generators in rosinality's stylegan2-pytorch layout (their `g_ema`, and e4e/pSp `decoder.*`).

Same network as NVlabs' layout, other names and shapes: modulated weights carry a leading batch
axis, biases are (1, C, 1, 1), noise buffers are (1, 1, H, W), the conv stack is a flat list
(`convs.2j-2` / `convs.2j-1` are conv0 / conv1 of block 2^(j+2)) and `noises.noise_i` follow the
same order. The scale 1/sqrt(fan_in) that rosinality applies to conv weights cancels under
demodulation and equals NVlabs' toRGB weight gain, so weights copy over unscaled. Rosinality
files carry no W average; it is estimated as the mean mapping output of seeded samples, as
their `mean_latent` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from warpres.checkpoints.nvlabs import load_nvlabs_generator
from warpres.checkpoints.safe_load import require_state_dict
from warpres.errors import CheckpointError
from warpres.models.resample import setup_filter
from warpres.models.stylegan2 import Generator

_CONV = re.compile(r"^convs\.(\d+)\.conv\.weight$")
_STYLE = re.compile(r"^style\.(\d+)\.weight$")
W_AVG_SAMPLES = 10_000
W_AVG_SEED = 0


def _modulated(prefix: str, target: str, state: Mapping[str, torch.Tensor], out: dict) -> None:
    out[f"{target}.weight"] = state[f"{prefix}.conv.weight"][0]
    out[f"{target}.affine.weight"] = state[f"{prefix}.conv.modulation.weight"]
    out[f"{target}.affine.bias"] = state[f"{prefix}.conv.modulation.bias"]


def _styled_conv(prefix: str, target: str, noise: torch.Tensor, state: Mapping, out: dict) -> None:
    _modulated(prefix, target, state, out)
    out[f"{target}.bias"] = state[f"{prefix}.activate.bias"].reshape(-1)
    out[f"{target}.noise_strength"] = state[f"{prefix}.noise.weight"].reshape(())
    out[f"{target}.noise_const"] = noise.reshape(noise.shape[-2:])
    out[f"{target}.resample_filter"] = setup_filter()


def _to_rgb(prefix: str, target: str, state: Mapping, out: dict) -> None:
    _modulated(prefix, target, state, out)
    out[f"{target}.bias"] = state[f"{prefix}.bias"].reshape(-1)


def _check_blur_kernels(state: Mapping[str, torch.Tensor], source: str) -> None:
    binomial = setup_filter()
    for key, value in state.items():
        if key.endswith(("blur.kernel", "upsample.kernel")):
            normalised = value.float() / value.float().sum()
            if normalised.shape != binomial.shape or not torch.allclose(normalised, binomial, atol=1e-6):
                raise CheckpointError(f"{source}: {key} is not the [1,3,3,1] binomial filter this model implements")


def rosinality_to_nvlabs(state: object, source: str) -> dict[str, torch.Tensor]:
    """Rename and reshape a rosinality generator state dict into the NVlabs layout (w_avg excluded)."""
    state = require_state_dict(state, source)
    num_convs = 1 + max((int(m.group(1)) for k in state if (m := _CONV.match(k))), default=-1)
    mapping_layers = sorted(int(m.group(1)) for k in state if (m := _STYLE.match(k)))
    if num_convs == 0 or num_convs % 2 or not mapping_layers:
        raise CheckpointError(f"{source}: no 'style.<i>.weight' / paired 'convs.<i>.conv.weight' keys: "
                              "not a rosinality StyleGAN2 generator")
    _check_blur_kernels(state, source)
    out: dict[str, torch.Tensor] = {}
    try:
        for idx, layer in enumerate(mapping_layers):
            out[f"mapping.fc{idx}.weight"] = state[f"style.{layer}.weight"]
            out[f"mapping.fc{idx}.bias"] = state[f"style.{layer}.bias"]
        out["synthesis.b4.const"] = state["input.input"][0]
        out["synthesis.b4.resample_filter"] = setup_filter()
        _styled_conv("conv1", "synthesis.b4.conv1", state["noises.noise_0"], state, out)
        _to_rgb("to_rgb1", "synthesis.b4.torgb", state, out)
        for j in range(1, num_convs // 2 + 1):
            block = f"synthesis.b{2 ** (j + 2)}"
            out[f"{block}.resample_filter"] = setup_filter()
            _styled_conv(f"convs.{2 * j - 2}", f"{block}.conv0", state[f"noises.noise_{2 * j - 1}"], state, out)
            _styled_conv(f"convs.{2 * j - 1}", f"{block}.conv1", state[f"noises.noise_{2 * j}"], state, out)
            _to_rgb(f"to_rgbs.{j - 1}", f"{block}.torgb", state, out)
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing key {exc.args[0]!r} of the rosinality generator layout") from None
    known = {k for k in state if not k.endswith(("blur.kernel", "upsample.kernel"))}
    used = _rosinality_keys(mapping_layers, num_convs)
    if known - used:
        raise CheckpointError(f"{source}: unexpected keys for a rosinality generator: {sorted(known - used)[:8]}")
    return out


def _rosinality_keys(mapping_layers: list[int], num_convs: int) -> set[str]:
    keys = {f"style.{i}.{p}" for i in mapping_layers for p in ("weight", "bias")}
    keys |= {"input.input", "to_rgb1.bias", *(f"noises.noise_{i}" for i in range(num_convs + 1))}
    modulated = ("conv.weight", "conv.modulation.weight", "conv.modulation.bias")
    styled = (*modulated, "activate.bias", "noise.weight")
    keys |= {f"conv1.{p}" for p in styled} | {f"to_rgb1.{p}" for p in modulated}
    keys |= {f"convs.{i}.{p}" for i in range(num_convs) for p in styled}
    keys |= {f"to_rgbs.{j}.{p}" for j in range(num_convs // 2) for p in (*modulated, "bias")}
    return keys


@torch.no_grad()
def estimate_w_avg(generator: Generator, samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
    """Mean W over seeded standard-normal z: (w_dim,)."""
    z = torch.randn(samples, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    return generator.mapping(z)[:, 0].mean(dim=0)


def load_rosinality_generator(state: Mapping[str, torch.Tensor], source: str,
                              embed_res: int | None = None) -> Generator:
    """A Generator from a rosinality state dict; rosinality never clamps convolutions."""
    nvlabs = rosinality_to_nvlabs(state, source)
    nvlabs["mapping.w_avg"] = torch.zeros(nvlabs["synthesis.b4.conv1.affine.weight"].shape[1])
    generator = load_nvlabs_generator(nvlabs, source, conv_clamp=None, embed_res=embed_res)
    generator.mapping.w_avg.copy_(estimate_w_avg(generator))
    return generator
