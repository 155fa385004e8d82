"""`make demo` / `medfound demo`: pretrain, then transfer with few labels, on real medical images that
ship inside installed packages, on CPU in about ten minutes. Small smoke studies, not clinical results.

- 3D: Models Genesis pretraining of the quarter-width Genesis U-Net (`unet3d_genesis_w8.mri`) on
  sub-volumes of nilearn's MNI152 T1 template (2 mm), then grey matter / white matter / CSF
  segmentation fine-tuned at several label fractions, against the same network from scratch. The
  brain is cut into axial slabs and the split is by slab, so no neighbouring voxels cross it.
- 2D: SimCLR pretraining of a small ResNet (`timm:resnet10t`) on tiles of scikit-image's
  immunohistochemistry and fundus images, the template's axial slices and pydicom's CT and MR, then a
  k-NN, a linear probe and a fine-tune for the IHC tiles' DAB-stain class (derived from colour
  deconvolution, so an easy label), against the same network from scratch. Patients are 2x2 blocks
  of neighbouring tiles: a split never cuts a block, though tiles on a block's edge touch tiles of
  other blocks (one slide offers no other source images to split by).

Self-supervised pretraining sees the pixels of every image, test images included (never a label):
with one brain and one slide nothing else is possible, and the printout says so. Each stage resumes:
run the demo again into the same folder and finished stages are reused.
"""

import csv
import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.engine.config import from_dict
from medfound.errors import ConfigError
from medfound.files import atomic_write
from medfound.tasks.example_data import load_brain, write_example_data, write_tissue_volume
from medfound.tasks.study_config import StudyConfig

log = logging.getLogger(__name__)

ENCODER_2D = "timm:resnet10t"
ENCODER_3D = "unet3d_genesis_w8.mri"
TILE = 64
BRAIN_MM = 2  # the template resampled to 2 mm: eight times fewer voxels than 1 mm
BRAIN_SLABS = 8
NOTICE = (
    "Smoke studies on one brain template and one slide, to show the pipeline end to end: not "
    "clinical results. Pretraining saw the unlabelled pixels of every image, test images included."
)


@dataclass(frozen=True)
class DemoScale:
    """How much the demo trains: FULL for `make demo`, SMOKE for the tests."""

    name: str
    simclr_steps: int
    genesis_steps: int
    finetune_steps_2d: int
    finetune_steps_3d: int
    fractions_2d: tuple[float, ...]
    fractions_3d: tuple[float, ...]
    seeds: tuple[int, ...]
    bootstrap: int


FULL = DemoScale(
    name="full",
    simclr_steps=150,
    genesis_steps=400,
    finetune_steps_2d=30,
    finetune_steps_3d=40,
    fractions_2d=(0.25, 0.5, 1.0),
    fractions_3d=(0.2, 0.6, 1.0),
    seeds=(0, 1, 2),
    bootstrap=200,
)
SMOKE = DemoScale(
    name="smoke",
    simclr_steps=2,
    genesis_steps=2,
    finetune_steps_2d=2,
    finetune_steps_3d=2,
    fractions_2d=(0.5, 1.0),
    fractions_3d=(0.2, 1.0),  # 0.2: one slab, less than a batch of patches
    seeds=(0,),
    bootstrap=20,
)


@dataclass
class DemoData:
    """The demo's inputs under OUT/data."""

    ihc_labels: Path  # the 2D task: ihc_tiles/labels.csv (path,label,patient)
    brain_slabs: Path  # the 3D task: an MSD folder of 2 mm slabs with tissue labels
    pretrain_tiles: Path  # pretrain/tiles.csv (path,source): every unlabelled image SimCLR sees


@dataclass
class DemoResult:
    """Where the demo put everything, and the tables it printed."""

    out: Path
    data: DemoData
    encoders: dict[str, Path]  # "simclr" / "genesis" -> the pretrained weights
    studies: dict[str, Path]  # "2d" / "3d" -> the study folder (report.html inside)
    tables: dict[str, str] = field(default_factory=dict)
    embedding_map: Path | None = None


def run_demo(out: str | Path, scale: DemoScale = FULL, device: str = "cpu") -> DemoResult:
    """Every stage of the demo into `out` (resuming what is there); see the module docstring."""
    from medfound.tasks.study import run_study
    from medfound.tasks.study_table import summary_table

    out = Path(out)
    _claim(out, scale)
    data = write_demo_data(out / "data")
    encoders = {
        "simclr": pretrain_2d(out / "runs" / "simclr", data.pretrain_tiles, scale, device),
        "genesis": pretrain_3d(out / "runs" / "genesis", data.brain_slabs, scale, device),
    }
    result = DemoResult(out, data, encoders, studies={})
    for name, config in (
        ("2d", study_2d(data, encoders["simclr"], scale, device)),
        ("3d", study_3d(data, encoders["genesis"], scale, device)),
    ):
        folder = out / "studies" / name
        log.info("demo: %s study into %s", name, folder)
        run_study(config, folder)
        result.studies[name] = folder
        result.tables[name] = summary_table(folder)
    result.embedding_map = embedding_map(out, data, encoders["simclr"], device)
    return result


def _claim(out: Path, scale: DemoScale) -> None:
    """Record the scale in OUT/demo.json, or refuse a folder holding a demo of another scale (its
    runs and studies would be continued with the wrong steps, or refused half-way)."""
    record = out / "demo.json"
    wanted = json.loads(json.dumps({"scale": dataclasses.asdict(scale)}))
    if record.is_file():
        found = json.loads(record.read_text()).get("scale", {})
        if found != wanted["scale"]:
            raise ConfigError(
                f"{out} holds a demo run at another scale ({found.get('name', '?')}, this one is "
                f"{scale.name}): choose another --out, or remove that folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(wanted, indent=2) + "\n"
    atomic_write(record, lambda tmp: tmp.write_text(text))


# --- data -------------------------------------------------------------------------------------


def write_demo_data(folder: Path) -> DemoData:
    """Under `folder`: `example/` (the example data: 1 mm slices, IHC tiles), `brain_2mm/` (the
    brain at 2 mm in slabs) and `pretrain/` (tiles.csv of the unlabelled pretraining images). Each
    part is written in a `.partial` folder renamed when complete: a part is there whole or not at
    all, so a demo killed while writing starts that part again."""
    example = _write_once(folder / "example", write_example_data)
    slabs = _write_once(
        folder / f"brain_{BRAIN_MM}mm",
        lambda tmp: write_tissue_volume(tmp, load_brain(BRAIN_MM), slabs=BRAIN_SLABS),
    )
    pretrain = _write_once(folder / "pretrain", _write_pretrain_tiles)
    return DemoData(example / "ihc_tiles" / "labels.csv", slabs, pretrain / "tiles.csv")


def _write_once(folder: Path, write) -> Path:
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write(partial)
        partial.rename(folder)
    return folder


def _write_pretrain_tiles(folder: Path) -> None:
    """tiles.csv (path,source): the IHC tiles and brain slices (images, not masks) of the sibling
    `example/`, the fundus photograph cut into tiles, and pydicom's CT and MR slices."""
    from PIL import Image
    from skimage import data as skimage_data

    pydicom_data = require("pydicom.data", "demo", "the demo's CT and MR files")
    example = folder.parent / "example"
    rows = [
        (f"../example/{p.relative_to(example)}", "histology IHC")
        for p in _sorted(example, "ihc_tiles/*/*")
    ]
    rows += [
        (f"../example/{p.relative_to(example)}", "brain MRI T1")
        for p in _sorted(example, "tissue_slices/slice*.png")
        if not p.stem.endswith("_mask")
    ]
    (folder / "fundus").mkdir(parents=True, exist_ok=True)
    retina = np.asarray(Image.fromarray(skimage_data.retina()).resize((8 * TILE, 8 * TILE)))
    for r in range(8):
        for c in range(8):
            tile = retina[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            if tile.mean() < 10:  # the black surround of the photograph
                continue
            name = f"fundus/tile_r{r}_c{c}.png"
            Image.fromarray(tile).save(folder / name, format="PNG")
            rows.append((name, "fundus"))
    for name, source in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        shutil.copyfile(pydicom_data.get_testdata_file(name), folder / name)
        rows.append((name, source))
    with open(folder / "tiles.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source"])
        writer.writerows(rows)


def _sorted(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


# --- pretraining ------------------------------------------------------------------------------

_QUIET = {"progress": False, "tensorboard": False, "log_every": 10}


def pretrain_2d(run: Path, tiles: Path, scale: DemoScale, device: str) -> Path:
    """SimCLR on the pretraining tiles from random initialisation (said out loud: no weights can
    be downloaded); returns the encoder file. A finished run is reused, a cut one resumed."""
    from medfound.tasks.pretrain import pretrain_simclr

    weights = run / "encoder.safetensors"
    if not weights.is_file():
        resume = (run / "config.yaml").is_file()
        overrides = {
            **_QUIET,
            "data": [str(tiles)],
            "model": ENCODER_2D,
            "init": "random",
            "image_size": TILE,
            "batch_size": 32,
            "max_steps": scale.simclr_steps,
            "optimizer": "lars",
            "lr": 0.3,
            "lr_scaling": "none",
            "warmup_epochs": 1.0,
            "temperature": 0.2,
            "checkpoint_every": 50,
            "device": device,
            "workers": 0,
        }
        log.info("demo: SimCLR pretraining into %s", run)
        pretrain_simclr(run, overrides=None if resume else overrides, resume=resume)
    return weights


def pretrain_3d(run: Path, slabs: Path, scale: DemoScale, device: str) -> Path:
    """Models Genesis on sub-volumes of the brain slabs; returns the pretrained U-Net file."""
    from medfound.tasks.pretrain_genesis import pretrain_genesis

    weights = run / "genesis.safetensors"
    if not weights.is_file():
        resume = (run / "config.yaml").is_file()
        overrides = {
            **_QUIET,
            "data": [str(slabs / "imagesTr")],
            "model": ENCODER_3D,
            "modality": "mri",
            "cube": "32,32,8",
            "cubes_per_volume": 4,
            "batch_size": 8,
            "max_steps": scale.genesis_steps,
            "warmup_epochs": 0.0,
            "checkpoint_every": 50,
            "device": device,
            "workers": 0,
        }
        log.info("demo: Models Genesis pretraining into %s", run)
        pretrain_genesis(run, overrides=None if resume else overrides, resume=resume)
    return weights


# --- the studies ------------------------------------------------------------------------------


def _study(
    task: dict,
    encoders: list[dict],
    protocols: list[str],
    fractions: tuple[float, ...],
    finetune: dict,
    scale: DemoScale,
    device: str,
) -> StudyConfig:
    config = from_dict(
        StudyConfig,
        {
            "tasks": [task],
            "encoders": encoders,
            "protocols": protocols,
            "fractions": list(fractions),
            "seeds": list(scale.seeds),
            "bootstrap": scale.bootstrap,
            "finetune": {**finetune, "tensorboard": False, "early_stop_patience": None},
            "device": device,
            "workers": 0,
            # 2D: of 16 patients (blocks of tiles) 4 for the test, 2 for validation, 10 for
            # training; 3D: of the 8 slabs 2, 1 and 5
            "test_fraction": 0.25,
            "val_fraction": 0.125,
        },
    )
    config.validate()
    return config


def study_2d(data: DemoData, simclr: Path, scale: DemoScale, device: str) -> StudyConfig:
    """DAB-stain class of the IHC tiles: k-NN, linear probe and fine-tuning, SimCLR vs scratch."""
    task = {
        "name": "ihc_dab",
        "kind": "classify",
        "data": str(data.ihc_labels.resolve()),
        "options": {"image_size": TILE},
    }
    encoders = [
        {"name": "scratch", "model": ENCODER_2D, "init": "random"},
        {"name": "simclr", "model": ENCODER_2D, "init": str(simclr.resolve())},
    ]
    finetune = {
        "max_steps": scale.finetune_steps_2d,
        "batch_size": 16,
        "optimizer": "adamw",
        "lr": 1e-3,
        "validate_every": max(1, scale.finetune_steps_2d // 4),
    }
    protocols = ["knn", "linear_probe", "finetune"]
    return _study(task, encoders, protocols, scale.fractions_2d, finetune, scale, device)


def study_3d(data: DemoData, genesis: Path, scale: DemoScale, device: str) -> StudyConfig:
    """Grey/white matter/CSF segmentation of the 2 mm brain slabs, Genesis vs scratch."""
    task = {
        "name": "brain_tissue",
        "kind": "segment",
        "data": str(data.brain_slabs.resolve()),
        "options": {"patch": "32,32,8", "patches_per_image": 4, "overlap": 0.25},
    }
    encoders = [
        {"name": "scratch", "model": ENCODER_3D, "init": "random"},
        {"name": "genesis", "model": ENCODER_3D, "init": str(genesis.resolve())},
    ]
    finetune = {
        "max_steps": scale.finetune_steps_3d,
        "batch_size": 8,
        "optimizer": "adamw",
        "lr": 1e-3,
        "validate_every": max(1, scale.finetune_steps_3d // 3),
    }
    return _study(task, encoders, ["segment"], scale.fractions_3d, finetune, scale, device)


# --- the embedding map ------------------------------------------------------------------------


def embedding_map(out: Path, data: DemoData, simclr: Path, device: str) -> Path:
    """The SimCLR encoder's embeddings of every pretraining tile, mapped by PCA, one colour per
    source image kind."""
    from medfound.tasks.embed import EmbedOptions, embed
    from medfound.tasks.plot_embeddings import plot_embeddings

    parquet = out / "embeddings_simclr.parquet"
    options = EmbedOptions(image_size=TILE, batch_size=32, device=device, workers=0, progress=False)
    embed([data.pretrain_tiles], parquet, weights=simclr, options=options)
    result = plot_embeddings(
        parquet, out / "embedding_map.png", color_by="source", labels=data.pretrain_tiles
    )
    return result.image
