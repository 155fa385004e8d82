"""`make demo`: embed real medical images that ship inside installed packages, and plot them.

Sources: pydicom's CT_small.dcm and MR_small.dcm, tiles of scikit-image's immunohistochemistry image
and its fundus photograph, and axial slices of nilearn's MNI152 T1 template (saved as 2D NIfTI).
No weights can be downloaded, so the demo embeds with an explicitly random-initialised REMEDIS
architecture (recorded as such in the output); later stages of the demo pretrain one first.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.tasks.embed import EmbedOptions, EmbedSummary, embed

DEMO_MODEL = "resnetv2_50x1_bit.remedis_path_m"


@dataclass
class DemoResult:
    """Where the demo put its inputs and outputs, and what the plot shows."""

    inputs: Path
    embeddings: Path
    plot: Path
    summary: EmbedSummary
    points: dict[str, np.ndarray]  # source group -> its (n, 2) PCA coordinates, as drawn


def write_demo_inputs(folder: Path) -> dict[str, str]:
    """Write the demo images into `folder`; returns {file name: source group} for the plot."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, str] = {}
    pydicom_data = require("pydicom.data", "demo", "the demo's DICOM files")
    for name, group in (("CT_small.dcm", "CT (pydicom)"), ("MR_small.dcm", "MR (pydicom)")):
        shutil.copyfile(pydicom_data.get_testdata_file(name), folder / name)
        groups[name] = group

    skimage_data = require("skimage.data", "demo", "the demo's histology and fundus images")
    from PIL import Image

    ihc = skimage_data.immunohistochemistry()
    for i in range(4):
        r, c = divmod(i, 2)
        name = f"ihc_tile{i}.png"
        Image.fromarray(ihc[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]).save(folder / name)
        groups[name] = "histology IHC (skimage)"
    retina = skimage_data.retina()
    Image.fromarray(retina).resize((512, 512)).save(folder / "retina.jpg", quality=92)
    groups["retina.jpg"] = "fundus (skimage)"

    datasets = require("nilearn.datasets", "demo", "the demo's MNI152 template")
    nib = require("nibabel")
    template = datasets.load_mni152_template(resolution=2)
    volume = np.asarray(template.dataobj, dtype=np.float32)
    zooms = template.header.get_zooms()
    for z in np.linspace(25, volume.shape[2] - 25, 6).astype(int):
        name = f"mni152_axial_z{z:03d}.nii.gz"
        image = nib.Nifti1Image(volume[:, :, z : z + 1], np.diag([*zooms[:3], 1.0]))
        nib.save(image, str(folder / name))
        groups[name] = "brain MRI T1 (MNI152)"
    return groups


def plot_projection(
    embeddings: np.ndarray, labels: list[str], path: Path, title: str
) -> dict[str, np.ndarray]:
    """Scatter of the first two principal components, one colour per source group.

    Returns {group: (n, 2) coordinates} read back from the figure's scatter layers, in row order.
    """
    matplotlib = require("matplotlib", "demo", "the demo's plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = embeddings - embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for group in sorted(set(labels)):
        mask = np.array([label == group for label in labels])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=40, label=group)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    # read off the figure, not the inputs, so that this reports what was actually drawn
    drawn = {layer.get_label(): np.asarray(layer.get_offsets()) for layer in ax.collections}
    plt.close(fig)
    return drawn


def run_demo(out: Path, model_name: str = DEMO_MODEL) -> DemoResult:
    """Write the inputs, embed them (preset 'auto': CT window, MRI percentiles, RGB, gray), plot."""
    import pyarrow.parquet as pq

    out = Path(out)
    inputs = out / "inputs"
    groups = write_demo_inputs(inputs)
    embeddings = out / "embeddings.parquet"
    summary = embed(
        [inputs],
        embeddings,
        model_name=model_name,
        random_init=True,
        options=EmbedOptions(preset="auto", batch_size=4),
    )
    table = pq.read_table(embeddings).to_pydict()
    vectors = np.asarray(table["embedding"], dtype=np.float32)
    labels = [groups.get(Path(p).name, "other") for p in table["path"]]
    plot = out / "embeddings_pca.png"
    points = plot_projection(
        vectors, labels, plot, f"{model_name} (random init): PCA of {len(labels)} embeddings"
    )
    return DemoResult(inputs, embeddings, plot, summary, points)
