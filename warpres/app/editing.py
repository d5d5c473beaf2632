"""Face-aligned editing, one implementation for stills and video frames:
crop the largest face -> invert the crops -> edit_many -> paste each edit back into its frame."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from warpres.media.faces import FaceAligner, FaceCrop, FaceNotFoundError, paste_back


def edit_faces(session, frames: Sequence[np.ndarray], crops: Sequence[FaceCrop], edit_sets: Sequence,
               *, paste: bool = True, latent_filter: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> list[list[np.ndarray]]:
    """Per edit set, per frame: the edited face crop (R, R, 3), pasted into its RGB uint8 frame
    when `paste`. `crops[i]` was cut from `frames[i]`; `latent_filter` goes to `Session.invert`."""
    inversion = session.invert([crop.image for crop in crops], latent_filter=latent_filter)
    edited = session.edit_many(inversion, edit_sets)
    if not paste:
        return [list(images) for images in edited]
    return [[paste_back(frame, tile, crop) for frame, tile, crop in zip(frames, images, crops, strict=True)]
            for images in edited]


def frame_editor(session, edits: Sequence, latent_filter, *, align_faces: bool = False
                 ) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """RGB frames -> edited RGB frames (for `run_video`): the whole frame, or with `align_faces`
    each frame's largest face (`face_frame_editor`)."""
    if align_faces:
        return face_frame_editor(session, edits, latent_filter)
    return lambda frames: list(session.edit(session.invert(frames, latent_filter=latent_filter), edits))


def face_frame_editor(session, edits: Sequence, latent_filter) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """RGB frames -> edited RGB frames (for `run_video`): each frame's largest face is edited and
    pasted back; frames without a face pass through unedited."""
    aligner = FaceAligner(session.info.image_size)

    def edit_frames(frames: list[np.ndarray]) -> list[np.ndarray]:
        crops = {}
        for index, frame in enumerate(frames):
            try:
                crops[index] = aligner.align(frame, f"frame {index}")
            except FaceNotFoundError:
                continue
        out = list(frames)
        if crops:
            (pasted,) = edit_faces(session, [frames[i] for i in crops], list(crops.values()), [edits],
                                   latent_filter=latent_filter)
            for index, frame in zip(crops, pasted, strict=True):
                out[index] = frame
        return out

    return edit_frames
