"""The whole editing model (ARCHITECTURE §1): E0 (encoder), the generator and the residual
branch of one family, checked to fit together. The networks only: the dataflow between them is
`warpres.stages`, run by `Session(model, backend="torch")` like every other backend.
"""

from __future__ import annotations

from torch import nn

from warpres.errors import WarpresError
from warpres.models.encoders import StyleEncoder
from warpres.models.stylegan2 import Generator
from warpres.models.styleres import StyleResBranch
from warpres.models.warpres import WarpResBranch

Branch = StyleResBranch | WarpResBranch


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
