"""Generated labelled images for the fine-tuning tests: two classes told apart by brightness."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_labelled_images(folder: Path, patients: int = 20, per_patient: int = 2, seed: int = 0):
    """PNG images (32 px) of classes 'dark' and 'bright' plus labels.csv (path, label, patient);
    each patient's images share one class. Returns the CSV's path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(patients):
        label = "bright" if p % 2 else "dark"
        for k in range(per_patient):
            level = 0.65 if label == "bright" else 0.35
            pixels = np.clip(level + 0.15 * rng.standard_normal((32, 32)), 0, 1)
            name = f"p{p:03d}_{k}.png"
            Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / name)
            rows.append({"path": name, "label": label, "patient": f"patient{p:03d}"})
    csv_path = folder / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
