"""Result plots written as PNG with Pillow (no plotting stack needed on a training host)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(labels, int), np.asarray(predicted, int)), 1)
    return m


def write_confusion_png(counts: np.ndarray, class_names: list[str], path: str,
                        title: str = "") -> None:
    """A row-normalised confusion matrix (white = 0 -> dark blue = all of the row), class names on
    the rows (true) and as indices on the columns (predicted), counts in the cells when the matrix
    is small enough to read. Large label sets (400 classes) get 2-px cells and no text."""
    from PIL import Image, ImageDraw, ImageFont
    k = counts.shape[0]
    cell = 28 if k <= 30 else max(2, 1200 // k)
    text = k <= 30
    font = ImageFont.load_default()
    label_w = (8 + 7 * max((len(n) for n in class_names), default=1)) if text else 0
    top = 40 if text else 20
    width, height = label_w + k * cell + 10, top + k * cell + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    for i in range(k):
        for j in range(k):
            f = frac[i, j]
            colour = tuple(int(round(255 - f * (255 - c))) for c in (8, 48, 107))
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour)
            if text and counts[i, j]:
                draw.text((x0 + 3, y0 + 8), str(int(counts[i, j])), font=font,
                          fill="white" if f > 0.5 else "black")
    if text:
        for i, name in enumerate(class_names):
            draw.text((4, top + i * cell + 8), name, font=font, fill="black")
            draw.text((label_w + i * cell + 8, top - 14), str(i), font=font, fill="black")
    draw.text((4, 4), title or "confusion (rows: true, columns: predicted)", font=font,
              fill="black")
    image.save(path, format="PNG")
