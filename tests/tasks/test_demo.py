import pyarrow.parquet as pq
from PIL import Image

from medfound.tasks.demo import run_demo


def test_demo_embeds_every_shipped_image_and_plots(tmp_path):
    result = run_demo(tmp_path / "demo")
    table = pq.read_table(result.embeddings).to_pydict()
    assert result.summary.ok and len(table["path"]) == 13
    assert {"auto:ct", "auto:mri", "auto:path"} <= set(table["preset"])
    with Image.open(result.plot) as plot:
        assert plot.size[0] > 400 and len(plot.getcolors(1 << 20)) > 10
