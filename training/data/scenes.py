"""Classes for class-conditional tasks made from footage: its shots clustered by look.

A shot (frames between two cuts of a frame store) is described by the mean colours of a 4 x 4
grid of its frames (48 numbers: where the sky, the grass and the dark parts are); k-means groups
the shots of the footage's content into classes. The clusters are then looked at and named by a
person (a contact sheet per class, `contact_sheet`); `training/data/bbb.json` holds the result
for the training film, as (start second of a shot, class) segments.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MIN_SHOT_FRAMES = 12  # shorter shots (flashes, flicker) join the class of the shot before


def shot_features(frames: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """uint8 frames [N, H, W, 3], shots [a, b) -> [S, 48] in [0, 1]."""
    feats = []
    for a, b in bounds:
        sample = np.array(frames[a : b : max(1, (b - a) // 8)])
        x = torch.from_numpy(sample).permute(0, 3, 1, 2).float() / 255.0
        feats.append(F.adaptive_avg_pool2d(x, 4).mean(0).flatten().numpy())
    return np.stack(feats)


def shot_bounds(cuts: tuple[int, ...], start: int, end: int) -> list[tuple[int, int]]:
    """The shots [a, b) of frames start..end, short ones merged into the one before."""
    edges = [start] + [c for c in cuts if start < c < end] + [end]
    shots: list[tuple[int, int]] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if shots and b - a < MIN_SHOT_FRAMES:
            shots[-1] = (shots[-1][0], b)
        else:
            shots.append((a, b))
    return shots


def cluster_shots(features: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """[S] class of each shot, classes numbered by their first appearance."""
    from sklearn.cluster import KMeans

    labels = KMeans(num_classes, n_init=20, random_state=seed).fit_predict(features)
    order = {c: i for i, c in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[c] for c in labels])


def contact_sheet(frames: np.ndarray, bounds, labels: np.ndarray, per_class: int = 10):
    """uint8 [classes * h, per_class * w, 3]: the middle frames of shots of each class."""
    h, w = frames.shape[1:3]
    k = int(labels.max()) + 1
    sheet = np.zeros((k * h, per_class * w, 3), np.uint8)
    for c in range(k):
        picks = [i for i in range(len(bounds)) if labels[i] == c]
        picks = [
            picks[j] for j in np.linspace(0, len(picks) - 1, min(per_class, len(picks))).astype(int)
        ]
        for j, i in enumerate(picks):
            a, b = bounds[i]
            sheet[c * h : (c + 1) * h, j * w : (j + 1) * w] = frames[(a + b) // 2]
    return sheet
