import numpy as np
import pytest
from PIL import Image

from medfound.errors import ImageReadError
from medfound.io import read_image
from tests.factories import write_png


def test_png_8bit_gray(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = read_image(write_png(tmp_path / "g.png", pixels))
    assert image.array.shape == (1, 16, 16)
    assert image.value_range == (0.0, 255.0)
    np.testing.assert_array_equal(image.array[0], pixels)


def test_png_16bit_gray_keeps_full_depth(tmp_path):
    pixels = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = tmp_path / "g16.png"
    Image.fromarray(pixels).save(path)
    image = read_image(path)
    assert image.value_range == (0.0, 65535.0)
    assert image.meta["bits"] == "16"
    np.testing.assert_array_equal(image.array[0], pixels.astype(np.float32))


def test_rgb_and_rgba_drop_alpha(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 7
    image = read_image(write_png(tmp_path / "a.png", rgba))
    assert image.array.shape == (3, 4, 5)
    assert image.array[:, 0, 0].tolist() == [10, 20, 30]


def test_palette_png_becomes_its_colours(tmp_path):
    img = Image.new("P", (6, 6))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.array.shape == (3, 6, 6)
    assert image.array[:, 0, 0].tolist() == [0, 0, 255]
    assert image.array[:, 1, 1].tolist() == [255, 0, 0]


def test_jpeg_and_16bit_tiff(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "x.jpg")
    assert read_image(tmp_path / "x.jpg").array.shape == (3, 8, 8)
    tif = np.full((5, 7), 40000, np.uint16)
    Image.fromarray(tif).save(tmp_path / "x.tif")
    image = read_image(tmp_path / "x.tif")
    assert image.array.shape == (1, 5, 7) and image.array.max() == 40000
    assert image.value_range == (0.0, 65535.0)


def test_truncated_png_is_a_clear_error(tmp_path):
    path = write_png(
        tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    )
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"t\.png: not a readable image"):
        read_image(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"e\.png: empty file"):
        read_image(tmp_path / "e.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match=r"unsupported file type \.txt"):
        read_image(tmp_path / "notes.txt")
