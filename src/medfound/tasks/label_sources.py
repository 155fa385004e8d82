"""One entry to every classification label source (data/labels.py, chexpert.py, mimic.py, pcam.py):
the `data` and `format` fields of a fine-tuning or probe config -> a LabelTable."""

from pathlib import Path

from medfound.data.labels import LabelTable, read_class_folders, read_csv_header, read_label_csv
from medfound.errors import ConfigError

# CheXpert's CSV is told apart from a generic label CSV by these columns.
_CHEXPERT_COLUMNS = {"Path", "Frontal/Lateral"}
_MIMIC_COLUMNS = {"subject_id", "study_id"}


def detect_format(data: str | Path) -> str:
    """csv, folders, chexpert, mimic or pcam, from the folder's files or the CSV's header."""
    path = Path(data)
    if path.is_dir():
        if any(path.glob("camelyonpatch_level_2_split_*_x.h5")):
            return "pcam"
        return "folders"
    if not path.is_file():
        raise ConfigError(f"data {path}: no such file or folder")
    header = read_csv_header(path)
    if set(header) >= _CHEXPERT_COLUMNS:
        return "chexpert"
    if set(header) >= _MIMIC_COLUMNS and "path" not in header:
        return "mimic"
    return "csv"


def load_label_table(config) -> LabelTable:
    """The LabelTable a config's data fields describe (ClassifyConfig's or a probe's)."""
    data = config.data
    fmt = detect_format(data) if config.format == "auto" else config.format
    kind = getattr(config, "kind", "auto")
    observations = {"observations": tuple(config.observations)} if config.observations else {}
    policies = {"uncertain": config.uncertain, "blank": config.blank}
    if fmt == "csv":
        return read_label_csv(data, config.label_columns or None, kind=kind)
    if fmt == "folders":
        return read_class_folders(data)
    if fmt == "pcam":
        return _pcam(data)
    if fmt == "chexpert":
        views = config.views[0] if config.views else "frontal"
        if len(config.views) > 1:
            raise ConfigError("views for CheXpert: one of frontal, lateral, all")
        return _chexpert(data, config.image_root, views=views, **observations, **policies)
    if fmt == "mimic":
        if not config.mimic_metadata or not config.image_root:
            raise ConfigError(
                "MIMIC-CXR-JPG needs --mimic-metadata (mimic-cxr-2.0.0-metadata.csv) and "
                "--image-root (the folder holding files/)"
            )
        from medfound.data.mimic import read_mimic_cxr

        views = {"views": tuple(config.views)} if config.views else {}
        if not observations:
            from medfound.data.chexpert import CHEXPERT_COMPETITION

            observations = {"observations": CHEXPERT_COMPETITION}
        return read_mimic_cxr(
            data,
            config.mimic_metadata,
            config.image_root,
            split_csv=config.mimic_split,
            **views,
            **observations,
            **policies,
        )
    raise ConfigError(f"format must be one of auto, csv, folders, chexpert, mimic, pcam: {fmt!r}")


def _chexpert(data, root, **options) -> LabelTable:
    from medfound.data.chexpert import CHEXPERT_COMPETITION, read_chexpert

    options.setdefault("observations", CHEXPERT_COMPETITION)
    return read_chexpert(data, root, **options)


def _pcam(data) -> LabelTable:
    from medfound.data.pcam import read_pcam

    return read_pcam(data)
