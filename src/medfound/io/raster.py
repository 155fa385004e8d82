"""PNG / JPEG / TIFF / BMP through Pillow: 8- and 16-bit, grayscale, RGB, RGBA and palette images."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medfound.errors import ImageReadError
from medfound.io.image import MedicalImage

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Pillow modes -> (array dtype kind, full-scale value). Alpha is dropped: medical images carry no
# meaning in it, and compositing would invent intensities.
_GRAY_MODES = {"1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F"}
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"}


def read_raster(path: Path) -> MedicalImage:
    """Read one raster image; raise ImageReadError naming the file and the reason."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA"):
                # A palette maps indices to colours: the indices themselves mean nothing.
                img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
                mode = img.mode
            if mode in _COLOUR_MODES:
                rgb = np.asarray(img.convert("RGB"))
                array = np.moveaxis(rgb, -1, 0).astype(np.float32)
                value_range: tuple[float, float] | None = (0.0, 255.0)
                bits = 8
            elif mode in _GRAY_MODES:
                if mode == "LA":
                    img = img.getchannel("L")
                raw = np.asarray(img)
                array, value_range, bits = _gray_range(raw, mode)
                array = array[None]
            else:
                raise ImageReadError(f"{path}: unsupported Pillow image mode {mode!r}")
            meta = {"format": str(img.format or path.suffix.lstrip(".")).upper(), "bits": str(bits)}
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return MedicalImage(array=array, source_id=str(path), value_range=value_range, meta=meta)


def _gray_range(raw: np.ndarray, mode: str) -> tuple[np.ndarray, tuple[float, float] | None, int]:
    """Grayscale pixels as float32 with the range their bit depth implies (None for float images)."""
    if mode == "1":
        return raw.astype(np.float32), (0.0, 1.0), 1
    if mode == "F":
        return raw.astype(np.float32), None, 32
    if raw.dtype == np.uint8:
        return raw.astype(np.float32), (0.0, 255.0), 8
    # 16-bit files open as I;16 or as 32-bit "I": the container says 16 bits either way.
    return raw.astype(np.float32), (0.0, 65535.0), 16
