"""The whole editing model and the PyTorch editing pipeline (ARCHITECTURE §1).

`EditingModel` holds E0 (encoder), the generator and the residual branch of one family.
`Editor` runs the dataflow with the per-image cache: `invert` runs everything that depends only
on the image (encoder, head of the original latent, E1) once; each edit then reruns only the
head of the edited latent, the flow (WarpRes), the fuse (E2) and the tail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from warpres.edits import DirectionLibrary, EditRequest, parse_edit_spec
from warpres.errors import EditError, WarpresError
from warpres.models.encoders import StyleEncoder
from warpres.models.stylegan2 import Generator, HeadOutputs
from warpres.models.styleres import StyleResBranch
from warpres.models.warpres import WarpResBranch

Branch = StyleResBranch | WarpResBranch
LatentEdit = Callable[[np.ndarray], np.ndarray]
Edits = str | Sequence[str | EditRequest | LatentEdit] | torch.Tensor


class EditingModel(nn.Module):
    """E0 + generator + residual branch. Without a branch it is plain StyleGAN2 inversion."""

    def __init__(self, generator: Generator, encoder: StyleEncoder | None = None,
                 branch: Branch | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.encoder = encoder
        self.branch = branch
        if encoder is not None:
            self._check_encoder_fits(encoder.config)
        if branch is not None:
            self._check_branch_fits(branch)

    @property
    def family(self) -> str:
        """'styleres' or 'warpres'; 'inversion' (encoder, no branch); 'generator' (generator only)."""
        if self.branch is not None:
            return self.branch.family
        return "inversion" if self.encoder is not None else "generator"

    def _check_encoder_fits(self, enc) -> None:
        gen = self.generator.config
        if (enc.num_ws, enc.w_dim) != (gen.num_ws, gen.w_dim):
            raise WarpresError(f"encoder predicts ({enc.num_ws}, {enc.w_dim}) codes but the generator takes "
                               f"W+ of ({gen.num_ws}, {gen.w_dim})")
        if self.branch is not None and enc.feature_size != gen.embed_res:
            raise WarpresError(f"encoder features are {enc.feature_size}x{enc.feature_size} but the generator "
                               f"embeds residuals at {gen.embed_res}x{gen.embed_res}")

    def _check_branch_fits(self, branch: Branch) -> None:
        gen = self.generator.config
        e = gen.embed_res
        expected = {"feat_channels": gen.channels_at(e)}
        if self.encoder is not None:
            expected["enc_channels"] = self.encoder.config.feature_channels
        if isinstance(branch, WarpResBranch):
            expected |= {"tap_quarter_channels": gen.channels_at(e // 4), "tap_half_channels": gen.channels_at(e // 2)}
        for name, value in expected.items():
            if getattr(branch.config, name) != value:
                raise WarpresError(f"{branch.family} branch has {name}={getattr(branch.config, name)} but the "
                                   f"encoder/generator provide {value}")


@dataclass
class Inversion:
    """Everything an edit of these images reuses (the per-image cache), batch B.

    wplus (B, L, 512); enc_feat (B, Ce, E, E); head: the synthesis head of `wplus`;
    residual (B, Cg, E, E) from E1, or None for plain inversion.
    """

    wplus: torch.Tensor
    enc_feat: torch.Tensor
    head: HeadOutputs
    residual: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return self.wplus.shape[0]

    @staticmethod
    def cat(parts: Sequence[Inversion]) -> Inversion:
        """Caches of several batches joined along the batch, in order."""
        if len(parts) == 1:
            return parts[0]
        join = lambda tensors: torch.cat(list(tensors))  # noqa: E731
        return Inversion(join(p.wplus for p in parts), join(p.enc_feat for p in parts),
                         HeadOutputs(*(join(fields) for fields in zip(*(p.head for p in parts), strict=True))),
                         None if parts[0].residual is None else join(p.residual for p in parts))

    def repeat(self, times: int) -> Inversion:
        """The same cache tiled `times` along the batch (edit-major order)."""
        return Inversion.cat([self] * times)


class Editor:
    """invert / edit / edit_many over an EditingModel, in batches, with the per-image cache.

    Images are float tensors (B, 3, S, S) in [-1, 1] at the encoder size; outputs (B, 3, R, R)
    in [-1, 1]. Edits, applied in order, are specs resolved in `directions` ("smile=2",
    EditRequest), functions W+ -> W+ on numpy (B, L, 512) arrays, or a precomputed W+ tensor.
    """

    def __init__(self, model: EditingModel, directions: DirectionLibrary | None = None, max_batch: int = 8) -> None:
        if model.encoder is None:
            raise WarpresError(f"a {model.family} checkpoint has no encoder, so it cannot invert real images")
        self.model = model.eval()
        self.directions = directions
        self.max_batch = max_batch

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> Inversion:
        """Encode images and precompute everything that does not depend on the edit."""
        size = self.model.encoder.config.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size) or not images.is_floating_point():
            raise WarpresError(f"images must be float (B, 3, {size}, {size}) in [-1, 1], got "
                               f"{images.dtype} {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise WarpresError("images contain NaN or inf")
        return Inversion.cat([self._invert_batch(images[start:start + self.max_batch].to(self._device))
                              for start in range(0, images.shape[0], self.max_batch)])

    def _invert_batch(self, images: torch.Tensor) -> Inversion:
        wplus, enc_feat = self.model.encoder(images)
        head = self.model.generator.synthesis.head(wplus)
        branch = self.model.branch
        residual = None if branch is None else branch.encode_residual(enc_feat, head.feat)
        return Inversion(wplus, enc_feat, head, residual)

    @torch.no_grad()
    def render(self, inversion: Inversion, wplus_edit: torch.Tensor) -> torch.Tensor:
        """Images of the inverted batch under the edited latents (B, L, 512) -> (B, 3, R, R)."""
        if tuple(wplus_edit.shape) != tuple(inversion.wplus.shape):
            raise WarpresError(f"edited W+ {tuple(wplus_edit.shape)} does not match the inversion "
                               f"{tuple(inversion.wplus.shape)}")
        synthesis, branch = self.model.generator.synthesis, self.model.branch
        outputs = []
        for start in range(0, inversion.batch_size, self.max_batch):
            part = slice(start, start + self.max_batch)
            w_edit = wplus_edit[part].to(self._device)
            edit_head = synthesis.head(w_edit)
            feat = edit_head.feat
            if isinstance(branch, WarpResBranch):
                orig = inversion.head
                flow = branch.estimate_flow(orig.tap_quarter[part], orig.tap_half[part], orig.feat[part],
                                            edit_head.tap_quarter, edit_head.tap_half, edit_head.feat)
                feat = branch.fuse(inversion.residual[part], edit_head.feat, flow)
            elif branch is not None:
                feat = branch.fuse(inversion.residual[part], edit_head.feat)
            outputs.append(synthesis.tail(feat, edit_head.rgb, w_edit))
        return torch.cat(outputs)

    def edit(self, inversion: Inversion, edits: Edits = ()) -> torch.Tensor:
        """Apply edits in order to the inverted latents and render: (B, 3, R, R).

        No edits renders the reconstruction (with residuals, for StyleRes / WarpRes).
        """
        return self.render(inversion, self.edited_latents(inversion, edits))

    def edit_many(self, inversion: Inversion, edit_sets: Sequence[Edits]) -> list[torch.Tensor]:
        """Several edits of the same images, batched together: one (B, 3, R, R) per edit set."""
        if not edit_sets:
            return []
        latents = torch.cat([self.edited_latents(inversion, edits) for edits in edit_sets])
        images = self.render(inversion.repeat(len(edit_sets)), latents)
        return list(images.split(inversion.batch_size))

    def edited_latents(self, inversion: Inversion, edits: Edits) -> torch.Tensor:
        """The inverted W+ with `edits` applied in order: (B, L, 512)."""
        if isinstance(edits, torch.Tensor):
            return edits
        if isinstance(edits, str):
            edits = parse_edit_spec(edits)
        wplus = inversion.wplus.detach().cpu().numpy()
        for edit in edits:
            wplus = edit(wplus) if callable(edit) else self._apply_named(wplus, edit)
        return torch.from_numpy(np.ascontiguousarray(wplus, dtype=np.float32)).to(inversion.wplus.device)

    def _apply_named(self, wplus: np.ndarray, edit: str | EditRequest) -> np.ndarray:
        if self.directions is None:
            raise EditError(f"edit {edit!r} names a direction, but this Editor was given no directions")
        requests = parse_edit_spec(edit) if isinstance(edit, str) else [edit]
        return self.directions.apply(wplus, requests)
