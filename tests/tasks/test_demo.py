import re
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.decomposition import PCA

from medfound.tasks.demo import run_demo

# What the demo ships, by file name: its source group and how many images of it.
SOURCES = {
    r"CT_small\.dcm": ("CT (pydicom)", 1),
    r"MR_small\.dcm": ("MR (pydicom)", 1),
    r"ihc_tile\d\.png": ("histology IHC (skimage)", 4),
    r"retina\.jpg": ("fundus (skimage)", 1),
    r"mni152_axial_z\d{3}\.nii\.gz": ("brain MRI T1 (MNI152)", 6),
}


def _source(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    (group,) = [g for pattern, (g, _) in SOURCES.items() if re.fullmatch(pattern, name)]
    return group


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    result = run_demo(tmp_path_factory.mktemp("demo"))
    return result, pq.read_table(result.embeddings).to_pydict()


def test_demo_embeds_every_shipped_image(demo):
    result, table = demo
    assert result.summary.ok and result.summary.total_rows == len(table["path"])
    rows = Counter(map(_source, table["path"]))
    assert rows == {group: n for group, n in SOURCES.values()}
    assert {"auto:ct", "auto:mri", "auto:path"} <= set(table["preset"])


def test_the_plot_shows_every_row_of_every_source(demo):
    result, table = demo
    drawn = {group: len(xy) for group, xy in result.points.items()}
    assert drawn == Counter(map(_source, table["path"]))  # a missing or extra source fails here
    # the points are the first two principal components of the stored embeddings (up to sign)
    sources = np.array([_source(p) for p in table["path"]])
    expected = PCA(n_components=2).fit_transform(np.asarray(table["embedding"], dtype=np.float64))
    scale = np.abs(expected).max()
    for group, xy in result.points.items():
        np.testing.assert_allclose(
            np.abs(xy), np.abs(expected[sources == group]), atol=1e-3 * scale, rtol=0
        )
    with Image.open(result.plot) as plot:
        assert plot.size[0] > 400 and len(plot.getcolors(1 << 20)) > 10
