"""Whole-model checkpoints in the official formats: StyleRes `.pth` and e4e / pSp `.pt`.

StyleRes (`styleres_ffhq.pth`): {'e4e': encoder state (no prefix), 'latent_avg': (18, 512),
'generator_smooth': NVlabs generator state with the branch under
`synthesis.b64.modify_feature_{alignment,extraction,gates}.*`}.
e4e / pSp: {'state_dict': {'encoder.*', 'decoder.*' (rosinality generator)}, 'opts': dict,
'latent_avg': (18, 512)}; `opts['encoder_type']` tells e4e from pSp.
Architectures are read off the tensor shapes; nothing in these files is executed.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping

import torch

from warpres.checkpoints.nvlabs import load_nvlabs_generator
from warpres.checkpoints.rosinality import load_rosinality_generator
from warpres.checkpoints.safe_load import load_state_strict, require_keys, require_state_dict, strip_prefix
from warpres.errors import CheckpointError, WarpresError
from warpres.models.editor import EditingModel
from warpres.models.encoders import UNITS_PER_STAGE, EncoderConfig, StyleEncoder
from warpres.models.styleres import StyleResBranch, StyleResConfig, branch_state_from_official

ENCODER_TYPES = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}
STYLERES_KEYS = ("e4e", "latent_avg", "generator_smooth")
_BODY_UNIT = re.compile(r"^body\.(\d+)\.res_layer\.1\.weight$")
_STYLE_HEAD = re.compile(r"^styles\.(\d+)\.linear\.weight$")
_HEAD_CONV = re.compile(r"^styles\.0\.convs\.(\d+)\.weight$")
_MODIFY = re.compile(r"^synthesis\.b(\d+)\.modify_")


def infer_encoder_config(state: Mapping[str, torch.Tensor], kind: str, source: str,
                         feature_size: int | None = None) -> EncoderConfig:
    """Depth, SE mode, widths, W+ layout and input size of an e4e/pSp encoder from its tensors.

    The input size S follows from the first style head, which halves S/16 down to 1x1 with
    log2(S/16) stride-2 convolutions. `feature_size` (E) picks the body stage whose output is
    enc_feat: S/4 (stage 1) unless the residual branch reads another resolution.
    """
    units = sorted(int(m.group(1)) for k in state if (m := _BODY_UNIT.match(k)))
    heads = sorted(int(m.group(1)) for k in state if (m := _STYLE_HEAD.match(k)))
    head_convs = [k for k in state if _HEAD_CONV.match(k)]
    depth = {sum(v): d for d, v in UNITS_PER_STAGE.items()}.get(len(units))
    if depth is None or not heads or not head_convs:
        raise CheckpointError(f"{source}: not an IR/IR-SE e4e/pSp encoder ({len(units)} body units, "
                              f"{len(heads)} style heads)")
    stage_ends = [sum(UNITS_PER_STAGE[depth][: i + 1]) - 1 for i in range(4)]
    try:
        widths = tuple(int(state[f"body.{i}.res_layer.1.weight"].shape[0]) for i in stage_ends)
        se_key = "body.0.res_layer.5.fc1.weight"
        mode = "ir_se" if se_key in state else "ir"
        se_reduction = widths[0] // int(state[se_key].shape[0]) if mode == "ir_se" else 16
        w_dim = int(state["styles.0.linear.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing encoder key {exc.args[0]!r}") from None
    input_size = 16 * 2 ** len(head_convs)
    feature_stage = 1 if feature_size is None else int(math.log2(input_size // feature_size)) - 1
    try:
        return EncoderConfig(kind=kind, num_layers=depth, mode=mode, num_ws=len(heads), w_dim=w_dim,
                             input_size=input_size, stage_widths=widths, se_reduction=se_reduction,
                             feature_stage=feature_stage)
    except ValueError as exc:
        raise CheckpointError(f"{source}: inferred an impossible encoder: {exc}") from None


def load_encoder(state: object, kind: str, latent_avg: torch.Tensor | None, source: str,
                 feature_size: int | None = None) -> StyleEncoder:
    state = require_state_dict(state, source)
    encoder = StyleEncoder(infer_encoder_config(state, kind, source, feature_size))
    load_state_strict(encoder, state, source)
    if latent_avg is not None:
        try:
            encoder.set_latent_avg(latent_avg.float())
        except ValueError as exc:
            raise CheckpointError(f"{source}: latent_avg: {exc}") from None
    return encoder.eval()


def _latent_avg(data: Mapping, source: str, required: bool) -> torch.Tensor | None:
    """The W average added to every encoder output; e4e/pSp trained without one may omit it."""
    value = data.get("latent_avg")
    if value is None:
        if required:
            raise CheckpointError(f"{source}: missing latent_avg, the W average added to every encoder output")
        return None
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{source}: latent_avg must be a tensor, found {type(value).__name__}")
    return value


def _assemble(source: str, *parts) -> EditingModel:
    try:
        return EditingModel(*parts)
    except WarpresError as exc:
        raise CheckpointError(f"{source}: its parts do not fit together: {exc}") from None


def is_styleres(data: Mapping) -> bool:
    return all(k in data for k in STYLERES_KEYS)


def load_styleres(data: Mapping, source: str) -> EditingModel:
    """The official StyleRes checkpoint: e4e encoder, NVlabs generator, StyleRes branch."""
    require_keys(data, list(STYLERES_KEYS), source)
    generator_state = require_state_dict(data["generator_smooth"], f"{source}[generator_smooth]")
    embed = sorted({int(m.group(1)) for k in generator_state if (m := _MODIFY.match(k))})
    if len(embed) != 1:
        raise CheckpointError(f"{source}: generator_smooth must hold the StyleRes branch "
                              f"(synthesis.b<E>.modify_*) at exactly one resolution, found {embed}")
    embed_res = embed[0]
    branch_state = branch_state_from_official(generator_state, embed_res)
    plain = {k: v for k, v in generator_state.items() if not _MODIFY.match(k)}
    generator = load_nvlabs_generator(plain, f"{source}[generator_smooth]", conv_clamp=256.0, embed_res=embed_res)
    encoder = load_encoder(data["e4e"], "e4e", _latent_avg(data, source, required=True), f"{source}[e4e]",
                           feature_size=embed_res)
    branch = StyleResBranch(_styleres_config(branch_state, f"{source}[generator_smooth]"))
    load_state_strict(branch, branch_state, f"{source}[generator_smooth.synthesis.b{embed_res}.modify_*]")
    return _assemble(source, generator, encoder, branch.eval())


def _styleres_config(state: Mapping[str, torch.Tensor], source: str) -> StyleResConfig:
    try:
        align, concat = state["alignment.first_layer.weight"].shape[:2]
        gate, feat = state["gates.down1.weight"].shape[:2]
        extract = state["extraction.first_layer.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing StyleRes key for {exc.args[0]!r}") from None
    return StyleResConfig(enc_channels=int(concat - feat), feat_channels=int(feat), align_channels=int(align),
                          extract_channels=int(extract), gate_channels=int(gate))


def is_e4e_or_psp(data: Mapping) -> bool:
    state = data.get("state_dict")
    return isinstance(state, Mapping) and any(str(k).startswith("encoder.") for k in state)


def load_e4e_or_psp(data: Mapping, source: str) -> EditingModel:
    """An e4e or pSp checkpoint: encoder + its rosinality decoder, plain inversion (no branch)."""
    opts = data.get("opts")
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    encoder_type = opts.get("encoder_type") if isinstance(opts, Mapping) else None
    if encoder_type not in ENCODER_TYPES:
        raise CheckpointError(f"{source}: opts['encoder_type'] is {encoder_type!r}; expected one of "
                              f"{sorted(ENCODER_TYPES)}")
    state = data["state_dict"]
    encoder = load_encoder(strip_prefix(state, "encoder."), ENCODER_TYPES[encoder_type],
                           _latent_avg(data, source, required=False), f"{source}[state_dict.encoder]")
    decoder = strip_prefix(state, "decoder.")
    if not decoder:
        raise CheckpointError(f"{source}: state_dict has no decoder.* generator weights")
    # Residuals (a later fine-tune) are injected where the encoder features are: E = S / 4.
    generator = load_rosinality_generator(decoder, f"{source}[state_dict.decoder]",
                                          embed_res=encoder.config.feature_size)
    return _assemble(source, generator, encoder)
