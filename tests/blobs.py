"""Images with Gaussian dots at given landmarks, and the dots found again."""

import numpy as np


def blob_image(h, w, points, sigma=2.5):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres, pixel-corner coordinates
    img = np.zeros((h, w), np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat((255 * img.clip(0, 1))[..., None], 3, 2).astype(np.uint8)


def find_dot(gray, near, radius=6):
    """Intensity-weighted centroid of the dot near ``near`` (pixel-corner coordinates)."""
    h, w = gray.shape
    x0, y0 = int(near[0]) - radius, int(near[1]) - radius
    ys, xs = np.mgrid[
        max(0, y0) : min(h, y0 + 2 * radius + 1), max(0, x0) : min(w, x0 + 2 * radius + 1)
    ]
    wgt = gray[ys, xs].astype(np.float64)
    wgt = np.clip(wgt - 0.2 * wgt.max(), 0, None)
    return np.array([(wgt * (xs + 0.5)).sum() / wgt.sum(), (wgt * (ys + 0.5)).sum() / wgt.sum()])
