"""Drawing on photos with PIL only, for ``lmkit predict`` (which needs no plotting library),
and the colours every figure uses."""

from __future__ import annotations

import numpy as np

from lmkit.study.schemes import Scheme

TRUE_COLOUR, PRED_COLOUR, BOX_COLOUR = "#22c55e", "#ef4444", "#3b82f6"


def annotated_photo(image: np.ndarray, faces, scheme: Scheme):
    """A PIL image of the photo with each face's box and points drawn on it (``lmkit predict``)."""
    from PIL import Image, ImageDraw

    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    r = max(1.0, max(image.shape[:2]) / 400)
    for face in faces:
        if face.box is not None:
            draw.rectangle(face.box, outline=BOX_COLOUR, width=max(1, round(r)))
        for g in scheme.groups:
            pts = [tuple(p) for p in face.points[g.indices]]
            draw.line(
                pts + pts[:1] if g.closed else pts, fill=PRED_COLOUR, width=max(1, round(r / 2))
            )
        for x, y in face.points:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=PRED_COLOUR)
    return out
