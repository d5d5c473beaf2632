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
    package_data={"warpres.demo": ["assets/*", "assets/*/*"]},  # the shipped demo models, samples, edits
    install_requires=[
        "numpy>=1.24",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8,<5",  # 5.x dropped the Haar cascades of the fallback face detector
        "yuface>=2023.5",  # face box + 5 landmarks, libfacedetection's network compiled in (BSD; no download)
        "av>=12",  # PyAV: H.264 video with the input's audio, robust decoding
        "click>=8.1",
        "tqdm>=4.66",
    ],
    extras_require={
        # The PyTorch side (models, checkpoint loading, training). Pin the build you want on the
        # command line (e.g. torch==2.13.0 for CPU); an unpinned install pulls CUDA wheels.
        "torch": ["torch>=2.5"],  # torch.serialization.safe_globals
        # Checkpoint -> ONNX subgraphs, validated against PyTorch with ONNX Runtime.
        # torch.onnx.export(dynamo=True) gives every graph a dynamic batch (tested with torch 2.13).
        "export": ["torch>=2.9", "onnx>=1.18", "onnxruntime>=1.20", "onnxscript>=0.5"],
        # Training the residual branch: YAML configs, PSNR / SSIM evaluation.
        "train": ["torch>=2.5", "pyyaml>=6", "scikit-image>=0.22"],
        # The CPU runtime: OpenVINO (BF16/INT8 on AMX) and ONNX Runtime, the portable reference.
        "cpu": ["openvino>=2025.0", "onnxruntime>=1.20"],
        # The GPU runtime (backend="tensorrt"): TensorRT and the CUDA runtime bindings it is driven through.
        "tensorrt": ["tensorrt-cu13", "cuda-python>=13"],
        # TensorRT-RTX stands in for TensorRT's parser/builder on machines without a GPU; never a hard dependency.
        "tensorrt-test": ["tensorrt-rtx-cu13", "cuda-python"],
        # FP16 graphs via ModelOpt AutoCast: nvidia-modelopt without its [onnx] extra (which pulls onnxruntime-gpu
        # and cupy), plus the parts of that extra AutoCast imports (graphsurgeon, polygraphy: its reference runner).
        "fp16": ["nvidia-modelopt", "onnxslim", "onnxconverter-common", "onnxscript", "lief", "cppimport",
                 "onnx-graphsurgeon", "polygraphy"],
        # INT8 / mixed calibration (`warpres calibrate`): NNCF for OpenVINO, ModelOpt (above) for TensorRT, SSIM.
        "calibration": ["nvidia-modelopt", "onnxslim", "onnxconverter-common", "onnxscript", "lief", "cppimport",
                        "onnx-graphsurgeon", "polygraphy", "nncf>=3.0", "scikit-image>=0.22"],
        # The browser app (`warpres app`).
        "app": ["gradio>=5"],
        # `warpres batch` on Ray Data (local or a cluster); pyarrow reads the input tables and writes the results.
        "batch": ["ray[data]>=2.40", "pyarrow>=14"],
        # skimage ships the public-domain portrait the face tests use; playwright drives a system
        # Chromium in the browser test (its own browser download is not used).
        "test": ["pytest>=8", "scikit-image>=0.22", "gradio>=5", "playwright>=1.40", "ray[data]>=2.40", "pyarrow>=14"],
    },
    entry_points={"console_scripts": ["warpres = warpres.cli:main"]},
)
