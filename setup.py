from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="warpres",
    version="0.1.0",
    description="Real-image editing with StyleGAN2 by warping residual features (WarpRes, StyleRes)",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["warpres", "warpres.*"]),
    install_requires=[
        "numpy>=1.24",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8,<5",  # 5.x dropped the Haar cascades used for face crops
    ],
    extras_require={
        # The PyTorch side (models, checkpoint loading, training, export). Pin the build you want
        # on the command line (e.g. torch==2.13.0 for CPU); an unpinned install pulls CUDA wheels.
        "torch": ["torch>=2.5"],  # torch.serialization.safe_globals
        "test": ["pytest>=8"],
    },
)
