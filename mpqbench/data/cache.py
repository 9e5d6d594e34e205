"""The decoded cache under ``data/``: uint8 ``.npy`` arrays and ``meta.json``, byte-for-byte
deterministic so DVC sees the same hash on every machine; ImageNet's folder manifest."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mpqbench.data.datasets import CACHE_FORMAT, DATASETS, DatasetSpec
from mpqbench.data.sources import (
    CIFAR10_CLASSES,
    RawArrays,
    download_cifar,
    mirror_dir,
    read_cifar_pickles,
    read_jpeg_archive,
    verified_mirror_file,
)
from mpqbench.errors import MpqbenchError

# ----------------------------------------------------------------------------- the cache


@dataclass
class CacheMeta:
    """What ``meta.json`` of a prepared dataset holds."""

    dataset: str
    variant: str
    classes: list[str]
    source: str
    source_digest: str
    counts: dict[str, int] = field(default_factory=dict)
    format: int = CACHE_FORMAT


CACHE_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def prepare_dataset(
    name: str,
    out_dir: str | Path,
    raw_dir: str | Path | None = None,
    image_root: str | Path | None = None,
) -> CacheMeta:
    """Convert a dataset once into the cache folder ``out_dir``.

    With ``$MPQBENCH_MIRROR`` set and the dataset mirrored, reads the mirror (sha256 checked);
    otherwise downloads the original archive into ``raw_dir`` (md5 checked). An image-folder
    dataset (ImageNet) is not copied: ``out_dir`` gets its manifest (see ``write_folder_manifest``).
    """
    spec = DATASETS.get(name)
    if spec.image_folder:
        return write_folder_manifest(spec, image_root, out_dir)
    out_dir = Path(out_dir)
    mirrored = (
        verified_mirror_file(spec.mirror_file, spec.mirror_sha256) if spec.mirror_file else None
    )
    if mirrored is not None:
        raw = read_jpeg_archive(mirrored, CIFAR10_CLASSES if name == "cifar10" else None)
        variant, source, digest = spec.mirror_variant, str(mirrored.name), spec.mirror_sha256
    else:
        if mirror_dir() is not None:
            print(f"note: the mirror has no copy of {name}; downloading {spec.url}")
        raw_dir = Path(raw_dir) if raw_dir is not None else out_dir.parent / "raw"
        folder = download_cifar(spec, raw_dir)
        raw = read_cifar_pickles(folder, spec)
        variant, source, digest = spec.name, spec.url, spec.archive_md5
    meta = CacheMeta(
        dataset=name,
        variant=variant,
        classes=raw.classes,
        source=source,
        source_digest=digest,
        counts={"train": len(raw.train_y), "test": len(raw.test_y)},
    )
    write_cache(out_dir, raw, meta)
    return meta


FOLDER_SPLITS = {"train": "train", "test": "val"}  # split name -> sub-folder of the root


def folder_root(spec: DatasetSpec, root: str | Path | None) -> Path:
    """The user's image folder, checked for ``train/`` and ``val/``."""
    if root is None:
        raise MpqbenchError(
            f"{spec.name} needs a folder: set imagenet_root in params.yaml to a folder holding "
            f"train/<class>/*.JPEG and val/<class>/*.JPEG (the ImageNet suite: "
            f"`python -m mpqbench overlay configs/imagenet.yaml --set imagenet_root=PATH`)"
        )
    root = Path(root).expanduser()
    for part in FOLDER_SPLITS.values():
        if not (root / part).is_dir():
            raise MpqbenchError(
                f"{root / part} is not a folder; {spec.name} needs train/<class>/ and val/<class>/ "
                f"under imagenet_root"
            )
    return root


def write_folder_manifest(
    spec: DatasetSpec, root: str | Path | None, out_dir: str | Path
) -> CacheMeta:
    """Record what an image folder holds, in ``out_dir/meta.json``; the images stay where they are.

    The manifest lists the classes and image counts and a sha256 over every image's relative
    path and size in bytes, so DVC re-runs the stages that read the folder when it changes.
    Images are the files torchvision's ImageFolder reads (its extensions); other files are
    ignored. Walks every file once (stat only, no decoding).
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS
    from tqdm.auto import tqdm

    root = folder_root(spec, root)
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    classes_by_split: dict[str, list[str]] = {}
    for split, part in FOLDER_SPLITS.items():
        classes = sorted(e.name for e in os.scandir(root / part) if e.is_dir())
        if not classes:
            raise MpqbenchError(f"{root / part} holds no class folders")
        classes_by_split[split] = classes
        counts[split] = 0
        for name in tqdm(classes, desc=f"scan {part}/", unit="class",
                         disable=os.environ.get("MPQBENCH_PROGRESS") == "off"):
            files = sorted((e.name, e.stat().st_size) for e in os.scandir(root / part / name)
                           if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
            counts[split] += len(files)
            for file_name, size in files:
                digest.update(f"{part}/{name}/{file_name}\t{size}\n".encode())
        if counts[split] == 0:
            raise MpqbenchError(f"{root / part} holds no images")
    if classes_by_split["train"] != classes_by_split["test"]:
        raise MpqbenchError(f"{root}: train/ and val/ hold different class folders")
    meta = CacheMeta(dataset=spec.name, variant=spec.name, classes=classes_by_split["train"],
                     source=str(root.resolve()), source_digest=digest.hexdigest(), counts=counts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    return meta


def write_cache(out_dir: str | Path, raw: RawArrays, meta: CacheMeta) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in CACHE_ARRAYS:
        np.save(out_dir / f"{key}.npy", getattr(raw, key), allow_pickle=False)
    (out_dir / "meta.json").write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")


def read_cache(cache_dir: str | Path) -> tuple[RawArrays, CacheMeta]:
    """Load a prepared dataset; a missing or damaged cache names the command that rebuilds it."""
    cache_dir = Path(cache_dir)
    fix = (
        f"prepare it with `python -m mpqbench data --dataset {cache_dir.name} --out {cache_dir}` "
        f"(or `dvc repro data`)"
    )
    meta_path = cache_dir / "meta.json"
    if not meta_path.is_file():
        raise MpqbenchError(f"no prepared dataset at {cache_dir}; {fix}")
    try:
        meta = CacheMeta(**json.loads(meta_path.read_text()))
        arrays = {k: np.load(cache_dir / f"{k}.npy", allow_pickle=False) for k in CACHE_ARRAYS}
    except (OSError, ValueError, TypeError) as exc:
        raise MpqbenchError(f"the dataset cache {cache_dir} is damaged ({exc}); {fix}") from exc
    if meta.format != CACHE_FORMAT:
        raise MpqbenchError(f"{cache_dir} was written by another mpqbench version; {fix}")
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 4 or len(x) != len(y) or len(y) != meta.counts.get(split):
            raise MpqbenchError(f"the {split} arrays in {cache_dir} do not match meta.json; {fix}")
    return RawArrays(classes=meta.classes, **arrays), meta
