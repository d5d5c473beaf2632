"""warpres: real-image editing with StyleGAN2 residual warping (WarpRes) and StyleRes."""

__version__ = "0.1.0"
