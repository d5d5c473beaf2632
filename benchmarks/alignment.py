"""Face alignment accuracy and cost: faces moved by known similarity transforms into larger
canvases, found again, and compared with the alignment of the untouched photo.

For each face (scikit-image's astronaut; the shipped demo samples; the insightface wheel's
group photo t1.jpg when installed) and each transform (rotation -30..30 degrees, scale 0.5..2,
a random position on a plain 1400 x 1300 canvas) this reports:

- landmark error: the five points found in the canvas, mapped back through the known
  transform, against the five points found in the photo itself (photo pixels, worst point);
- crop PSNR: the aligned crop from the canvas against the aligned crop of the photo;
- time per face, for the photo settings (`PRECISE`) and the video ones (`FAST`), and for
  following a known face into the next frame (`follow`).

Paste-back of an identity edit (the crop itself) is measured on the photos: the largest
change outside the face mask (must be 0) and the mean change inside it.

    python benchmarks/alignment.py [--transforms 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

from warpres.benchmark import cpu_description, psnr, publish
from warpres.demo import SAMPLES
from warpres.media.detection import FAST, PRECISE
from warpres.media.faces import DEMO, FFHQ, FaceAligner, FaceNotFoundError, face_mask, paste_back
from warpres.media.imageio import read_image, to_rgb8

RESULTS = Path(__file__).with_name("results") / "alignment.md"
CANVAS = (1400, 1300)
BACKGROUND = (90, 110, 130)


def faces() -> list[tuple[str, np.ndarray, object, int]]:
    """(name, photo, framing, crop size) for every test face, one face per photo."""
    found = []
    skimage = importlib.util.find_spec("skimage")
    if skimage is not None:
        found.append(("astronaut", to_rgb8(read_image(Path(next(iter(skimage.submodule_search_locations)))
                                                      / "data" / "astronaut.png")), FFHQ, 256))
    found += [(f"demo sample {k}", read_image(SAMPLES / f"sample-{k}.png"), DEMO, 128) for k in range(4)]
    insightface = importlib.util.find_spec("insightface")
    if insightface is not None:
        group = to_rgb8(read_image(Path(next(iter(insightface.submodule_search_locations)))
                                   / "data" / "images" / "t1.jpg"))
        for index, crop in enumerate(FaceAligner(256).align_all(group)):
            x, y, w, h = (int(v) for v in crop.face.box)
            side = int(2.2 * max(w, h))
            cx, cy = x + w // 2, y + h // 2
            patch = group[max(0, cy - side // 2):cy + side // 2, max(0, cx - side // 2):cx + side // 2]
            found.append((f"t1 face {index}", np.ascontiguousarray(patch), FFHQ, 256))
    return found


def moved(image: np.ndarray, degrees: float, scale: float, offset) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, scale)
    matrix[:, 2] += offset
    return cv2.warpAffine(image, matrix, CANVAS, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BACKGROUND), matrix


def measure_face(name, photo, framing, size, settings, transforms, rng) -> dict:
    aligner = FaceAligner(size, framing, settings=settings)
    direct = aligner.align(photo, name)
    errors, psnrs, times, follow_times = [], [], [], []
    for _ in range(transforms):
        degrees, scale = rng.uniform(-30, 30), float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        # The photo's centre anywhere its turned extent fits (the middle where it does not).
        reach = np.minimum(scale * max(photo.shape[:2]) * 0.71, np.array(CANVAS) / 2)
        offset = rng.uniform(reach, np.array(CANVAS) - reach) - (np.array(photo.shape[1::-1]) - 1) / 2
        canvas, matrix = moved(photo, degrees, scale, offset)
        start = time.perf_counter()
        try:
            crop = aligner.align(canvas, name)
        except FaceNotFoundError:   # a miss is a result here, counted below
            errors.append(np.inf)
            continue
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        aligner.follow(canvas, crop.face)
        follow_times.append(time.perf_counter() - start)
        back = cv2.invertAffineTransform(matrix)
        points = crop.face.points @ back[:, :2].T + back[:, 2]
        errors.append(float(np.linalg.norm(points - direct.face.points, axis=1).max()))
        psnrs.append(psnr(crop.image, direct.image))
    eye_distance = direct.face.eye_distance
    errors = np.array(errors)
    found = errors[np.isfinite(errors)]
    if not len(found):
        return {"face": name, "eyes": eye_distance, "found": f"0/{len(errors)}", "median": np.nan, "p90": np.nan,
                "psnr": np.nan, "ms": np.nan, "follow": np.nan}
    return {"face": name, "eyes": eye_distance, "found": f"{len(found)}/{len(errors)}",
            "median": np.median(found), "p90": np.percentile(found, 90),
            "psnr": np.median(psnrs), "ms": 1000 * np.median(times), "follow": 1000 * np.median(follow_times)}


def paste_check(name, photo, framing, size) -> tuple[float, float]:
    crop = FaceAligner(size, framing).align(photo, name)
    pasted = paste_back(photo, crop.image, crop)
    height, width = photo.shape[:2]
    weight = cv2.warpAffine(face_mask(size, framing), crop.matrix, (width, height),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    change = np.abs(pasted.astype(int) - photo).max(axis=2)
    return float(change[weight == 0].max()), float(change[weight > 0.99].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transforms", type=int, default=20)
    args = parser.parse_args()
    lines = [f"# Face alignment ({cpu_description()}; {args.transforms} random transforms per face: "
             f"rotation -30..30 deg, scale 0.5..2, any position on a {CANVAS[0]}x{CANVAS[1]} canvas)", "",
             "Landmark error: photo pixels, worst of the five points, against the points found in the photo "
             "itself. PSNR: the canvas crop against the photo's crop.", ""]
    for label, settings in (("photos (PRECISE)", PRECISE), ("video (FAST)", FAST)):
        rows = [measure_face(*face, settings, args.transforms, np.random.default_rng(0)) for face in faces()]
        lines += [f"## {label}", "",
                  "| face | eye distance px | found | landmark error median / p90 px | crop PSNR dB | "
                  "align ms | follow ms |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['face']} | {r['eyes']:.0f} | {r['found']} | {r['median']:.2f} / {r['p90']:.2f} | "
                  f"{r['psnr']:.1f} | {r['ms']:.0f} | {r['follow']:.1f} |" for r in rows]
        lines.append("")
    lines += ["## Paste-back of an identity edit", "", "| face | max change outside the mask | mean change inside |",
              "|---|---|---|"]
    for name, photo, framing, size in faces():
        outside, inside = paste_check(name, photo, framing, size)
        lines.append(f"| {name} | {outside:.0f} | {inside:.2f} |")
    publish("\n".join(lines) + "\n", RESULTS)


if __name__ == "__main__":
    main()
