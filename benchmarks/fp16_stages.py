"""FP16 stage graphs against their FP32 graphs, per stage and output: what keeping math in FP32 buys.

For each model this exports the portable graphs once, converts every stage with ModelOpt AutoCast
twice (warpres's keep-list: style affine, demodulation, clamps and grid math in FP32, as
`warpres build --precision fp16` does; and everything FP16 that AutoCast's own range checks
allow) and runs FP32 and FP16 graphs on ONNX Runtime (CPU) on the activations the stage meets in
an edit (`validation_activations`, batch 1 and 2). It reports each output's largest error
relative to its largest magnitude; FP16's own rounding is 4.9e-4. Results go to stdout and to
benchmarks/results/fp16_stages.md.

    python benchmarks/fp16_stages.py [--archs ffhq-warpres,tiny] [--bundle warpres/demo/assets/models.safetensors]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import onnx
import torch
from cpu_backends import build

from warpres.export import export_model
from warpres.calibration.fp16 import FP32_OP_TYPES, compare_fp16, convert_fp16
from warpres.export.validation import validation_activations
from warpres.files import atomic_path
from warpres.models.editor import EditingModel

RESULTS = Path(__file__).with_name("results") / "fp16_stages.md"
BATCHES = (1, 2)
VARIANTS = {"keep-list": (FP32_OP_TYPES, True), "all FP16": ((), False)}


def measure(name: str, model: EditingModel, work: Path) -> list[str]:
    start = time.perf_counter()
    folder = export_model(model, work / name, validate=False, progress=False)
    print(f"{name}: exported in {time.perf_counter() - start:.0f} s", flush=True)
    activations = validation_activations(model, BATCHES)
    worst: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
    kept: dict[str, int] = {}
    for variant, (op_types, grid_math) in VARIANTS.items():
        graphs = {}
        for stage in folder.manifest.stages:
            report = convert_fp16(folder.graph_path(stage), work / f"{name}-{variant}" / f"{stage.name}.onnx",
                                  op_types_to_exclude=op_types, keep_grid_math=grid_math)
            graphs[stage.name] = report.destination
            if variant == "keep-list":
                kept[stage.name] = sum(report.kept_op_types.values()) + len(report.kept_grid_math)
        errors = compare_fp16(folder, graphs, activations)
        worst[variant] = {key: (e.max_rel, e.reference_max) for key, e in errors.worst().items()}
        print(f"{name}: {variant} converted and compared in {time.perf_counter() - start:.0f} s", flush=True)
    nodes = {stage.name: len(onnx.load(str(folder.graph_path(stage)), load_external_data=False).graph.node)
             for stage in folder.manifest.stages}
    lines = [f"### {name}", "",
             "| stage | output | max abs FP32 | rel. error, keep-list | rel. error, all FP16 | nodes kept FP32 |",
             "|---|---|---|---|---|---|"]
    for (stage, output), (rel, scale) in worst["keep-list"].items():
        lines.append(f"| {stage} | {output} | {scale:.3g} | {rel:.2e} | {worst['all FP16'][(stage, output)][0]:.2e} "
                     f"| {kept[stage]} of {nodes[stage]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="ffhq-warpres", help="comma-separated: tiny, ffhq-warpres, ffhq-styleres")
    parser.add_argument("--bundle", type=Path, help="also a demo bundle's trained WarpRes model")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    models = [(arch, build(arch)) for arch in args.archs.split(",") if arch]
    if args.bundle is not None:
        from warpres.demo.bundle import read_bundle

        models.append((f"demo-warpres ({args.bundle.name})", read_bundle(args.bundle)["warpres"]))
    lines = [f"FP16 vs FP32 stage graphs on ONNX Runtime (CPU), batches {BATCHES}; {platform.processor() or 'cpu'}", ""]
    with tempfile.TemporaryDirectory(prefix="warpres-fp16-") as scratch:
        for name, model in models:
            section = measure(name.split(" ")[0], model, Path(scratch))
            print("\n".join(section), flush=True)
            lines += [*section, ""]
    text = "\n".join(lines)
    with atomic_path(RESULTS) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
