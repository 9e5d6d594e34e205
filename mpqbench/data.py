"""Datasets, their sources (offline mirror or original download), the cache, splits and batches.

CIFAR-10 / CIFAR-100 are converted once into a cache folder under ``data/`` holding uint8 images
(N, 32, 32, 3) and int64 labels as ``.npy`` files plus ``meta.json``; ``.npy`` is byte-for-byte
deterministic, so DVC sees the same hash on every machine. ImageNet is read from an image folder
the user provides.

The dataset *variant* (``cifar10`` for the original pickles, ``cifar10-jpeg`` for the mirror's
JPEG re-encoding) is stored in the cache and travels into every result.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import urllib.error
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mpqbench.errors import MpqbenchError
from mpqbench.registry import Registry

MIRROR_ENV = "MPQBENCH_MIRROR"
CACHE_FORMAT = 1
# Normalization the published CIFAR ResNet checkpoints were trained with (mirror README).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and how its images are normalized."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) fed to the model
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    url: str | None = None
    archive_md5: str | None = None
    extracted_dir: str | None = None
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    label_key: bytes = b"labels"
    meta_file: str = ""
    class_names_key: bytes = b"label_names"
    mirror_file: str | None = None
    mirror_sha256: str | None = None
    mirror_variant: str | None = None
    image_folder: bool = False  # ImageNet: read from a user-given folder, no cache


DATASETS: Registry[DatasetSpec] = Registry("dataset")

DATASETS.add(
    "cifar10",
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        input_shape=(3, 32, 32),
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        extracted_dir="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        meta_file="batches.meta",
        class_names_key=b"label_names",
        mirror_file="cifar10-jpeg.tar.gz",
        mirror_sha256="b6723528dd8d02a00bd295e1cb708e1001a088720fe1c12f47e02d66f279720e",
        mirror_variant="cifar10-jpeg",
    ),
)
DATASETS.add(
    "cifar100",
    DatasetSpec(
        name="cifar100",
        num_classes=100,
        input_shape=(3, 32, 32),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        extracted_dir="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        meta_file="meta",
        class_names_key=b"fine_label_names",
    ),
)
DATASETS.add(
    "imagenet",
    DatasetSpec(name="imagenet", num_classes=1000, input_shape=(3, 224, 224), image_folder=True),
)


# ----------------------------------------------------------------------------- checksums


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mirror_dir() -> Path | None:
    """The offline mirror named by ``$MPQBENCH_MIRROR``, or None when the variable is unset."""
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise MpqbenchError(
            f"{MIRROR_ENV}={value} is not a folder; point it at the offline mirror "
            f"(the folder holding cifar10-jpeg.tar.gz and checkpoints/), or unset it to download "
            f"from the original sources"
        )
    return path


def verified_mirror_file(relative: str, sha256: str) -> Path | None:
    """A mirror file checked against its sha256, or None when no mirror is configured."""
    mirror = mirror_dir()
    if mirror is None:
        return None
    path = mirror / relative
    if not path.is_file():
        raise MpqbenchError(
            f"the mirror {mirror} has no {relative}; copy it there (see the mirror's README) "
            f"or unset {MIRROR_ENV} to download from the original source"
        )
    actual = file_digest(path, "sha256")
    if actual != sha256:
        raise MpqbenchError(
            f"{path} is corrupt: sha256 {actual}, expected {sha256}; copy the file again from "
            f"a good mirror"
        )
    return path


# ----------------------------------------------------------------------------- raw readers


@dataclass
class RawArrays:
    """A whole dataset in memory: images (N, H, W, 3) uint8 and labels (N,) int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


def read_cifar_pickles(folder: str | Path, spec: DatasetSpec) -> RawArrays:
    """Read the official CIFAR python pickles (the torchvision download) from ``folder``."""
    folder = Path(folder)

    def load(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            raise MpqbenchError(f"{path} is missing; delete {folder} and prepare the data again")
        with path.open("rb") as f:
            return pickle.load(f, encoding="bytes")

    def stack(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        batches = [load(n) for n in names]
        x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b[spec.label_key], dtype=np.int64) for b in batches])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y

    train_x, train_y = stack(spec.train_files)
    test_x, test_y = stack(spec.test_files)
    names = [n.decode() for n in load(spec.meta_file)[spec.class_names_key]]
    return RawArrays(train_x, train_y, test_x, test_y, names)


def read_jpeg_archive(path: str | Path, classes: list[str] | None = None) -> RawArrays:
    """Read an image-folder tarball ``{train,test}/<class>/<name>.jpg`` into arrays.

    Images are ordered by (class index, file name) so the result is the same on every machine.
    """
    from PIL import Image

    found: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = member.name.strip("./").split("/")
                if not member.isfile() or len(parts) != 3 or parts[0] not in found:
                    continue
                data = tar.extractfile(member).read()
                image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
                found[parts[0]].append((parts[1], parts[2], image))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise MpqbenchError(f"cannot read {path} ({exc}); copy the archive again") from exc
    if classes is None:
        classes = sorted({c for c, _, _ in found["train"]})
    index = {c: i for i, c in enumerate(classes)}

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        items = found[split]
        unknown = {c for c, _, _ in items} - set(index)
        if unknown or not items:
            raise MpqbenchError(
                f"{path}: split {split!r} has unknown classes {unknown} or no images"
            )
        items.sort(key=lambda t: (index[t[0]], t[1]))
        x = np.stack([img for _, _, img in items])
        y = np.array([index[c] for c, _, _ in items], dtype=np.int64)
        return x, y

    train_x, train_y = arrays("train")
    test_x, test_y = arrays("test")
    return RawArrays(train_x, train_y, test_x, test_y, list(classes))


CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def download_cifar(spec: DatasetSpec, raw_dir: str | Path) -> Path:
    """Download and extract the official archive (md5 checked); returns the extracted folder."""
    raw_dir = Path(raw_dir)
    folder = raw_dir / spec.extracted_dir
    if folder.is_dir():
        return folder
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(spec.url, download_root=str(raw_dir), md5=spec.archive_md5)
    except (urllib.error.URLError, OSError) as exc:
        raise MpqbenchError(
            f"could not download {spec.name} from {spec.url} ({exc}). No network? Set "
            f"{MIRROR_ENV} to the offline mirror folder (see the README)"
        ) from exc
    except RuntimeError as exc:  # torchvision's md5 failure
        raise MpqbenchError(
            f"the {spec.name} archive downloaded to {raw_dir} failed its md5 check ({exc}); "
            f"delete it and try again"
        ) from exc
    return folder


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


# ----------------------------------------------------------------------------- splits


class Split(Protocol):
    """What every split offers: a length, labels, subsets and normalized batches."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    def subset(self, indices: torch.Tensor) -> Split: ...

    def batches(
        self, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def pad_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``pad``-pixel pad-and-crop plus horizontal flip, per image, vectorized.

    ``x``: (B, C, H, W) float in [0, 1]; zero padding as torchvision's RandomCrop(padding=pad).
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped).contiguous()


class TensorSplit:
    """An in-memory split: images (N, H, W, 3) uint8 and labels (N,) int64."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.images[indices], self.labels[indices], self.mean, self.std)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(
        self, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y): x (B, 3, H, W) float32 normalized, y (B,) int64; the last may be short."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator) if shuffle else None
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(
                start, start + batch_size
            )
            x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
            if augment:
                x = pad_crop_flip(x, 4, generator)
            yield (x - mean) / std, self.labels[idx]


class FolderSplit:
    """A split of an image folder (ImageNet layout ``<root>/<class>/<image>``), read lazily."""

    def __init__(self, folder, indices: torch.Tensor, workers: int = 2) -> None:
        self.folder, self.indices, self.workers = folder, indices, workers
        self.labels = torch.as_tensor(folder.targets)[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices: torch.Tensor) -> FolderSplit:
        return FolderSplit(self.folder, self.indices[indices], self.workers)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(
        self, batch_size: int, shuffle: bool = False, augment: bool = False, seed: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torchvision import transforms as T

        normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        if augment:
            tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                            normalize])
        else:
            tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
        dataset = _TransformedSubset(self.folder, self.indices.tolist(), tf)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.workers,
            generator=torch.Generator().manual_seed(seed),
        )
        yield from loader


class _TransformedSubset(torch.utils.data.Dataset):
    def __init__(self, folder, indices: list[int], transform) -> None:
        self.folder, self.indices, self.transform = folder, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[self.indices[i]]
        return self.transform(self.folder.loader(path)), label


@dataclass
class Splits:
    """train (minus the validation hold-out), val and test, plus what describes the data."""

    train: Split
    val: Split
    test: Split
    dataset: str
    variant: str
    classes: list[str]
    input_shape: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_holdout(
    labels: torch.Tensor, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, class-balanced hold-out: returns (kept indices, held-out indices), each sorted."""
    if not 0 <= size < len(labels):
        raise MpqbenchError(f"validation size {size} must be in [0, {len(labels)})")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    per_class = size // len(classes)
    extra = size - per_class * len(classes)
    held = []
    for rank, c in enumerate(classes.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[: per_class + (1 if rank < extra else 0)])
    held_idx = torch.sort(torch.cat(held)).values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_idx] = False
    return torch.nonzero(mask).flatten(), held_idx


def load_splits(
    name: str,
    data_dir: str | Path = "data",
    val_size: int = 5000,
    seed: int = 0,
    imagenet_root: str | Path | None = None,
    workers: int | None = None,
) -> Splits:
    """The three splits of a dataset: the prepared cache for CIFAR, an image folder for ImageNet.

    ``workers``: data-loader processes for an image folder (default: the CPU count, at most 8).
    """
    spec = DATASETS.get(name)
    if spec.image_folder:
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        return _imagenet_splits(spec, imagenet_root, Path(data_dir) / name, val_size, seed,
                                workers)
    raw, meta = read_cache(Path(data_dir) / name)
    train_all = TensorSplit(
        torch.from_numpy(raw.train_x), torch.from_numpy(raw.train_y), spec.mean, spec.std
    )
    keep, held = stratified_holdout(train_all.labels, val_size, seed)
    test = TensorSplit(
        torch.from_numpy(raw.test_x), torch.from_numpy(raw.test_y), spec.mean, spec.std
    )
    return Splits(
        train=train_all.subset(keep),
        val=train_all.subset(held),
        test=test,
        dataset=name,
        variant=meta.variant,
        classes=meta.classes,
        input_shape=spec.input_shape,
    )


def _imagenet_splits(
    spec: DatasetSpec, root: str | Path | None, manifest_dir: Path, val_size: int, seed: int,
    workers: int,
) -> Splits:
    from torchvision.datasets import ImageFolder

    root = folder_root(spec, root)
    train_folder = ImageFolder(str(root / FOLDER_SPLITS["train"]))
    test_folder = ImageFolder(str(root / FOLDER_SPLITS["test"]))
    if train_folder.classes != test_folder.classes:
        raise MpqbenchError(f"{root}: train/ and val/ hold different class folders")
    _check_manifest(manifest_dir, root, train_folder.classes,
                    {"train": len(train_folder), "test": len(test_folder)})
    keep, held = stratified_holdout(torch.as_tensor(train_folder.targets), val_size, seed)
    return Splits(
        train=FolderSplit(train_folder, keep, workers),
        val=FolderSplit(train_folder, held, workers),
        test=FolderSplit(test_folder, torch.arange(len(test_folder)), workers),
        dataset=spec.name,
        variant=spec.name,
        classes=list(train_folder.classes),
        input_shape=spec.input_shape,
    )


def _check_manifest(
    manifest_dir: Path, root: Path, classes: list[str], counts: dict[str, int]
) -> None:
    """Refuse a folder that no longer matches the manifest the ``data`` stage wrote."""
    path = manifest_dir / "meta.json"
    fix = (f"run `dvc repro data` (or `python -m mpqbench data --dataset {manifest_dir.name} "
           f"--out {manifest_dir}`)")
    if not path.is_file():
        raise MpqbenchError(f"no manifest of {root} at {path}; {fix}")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise MpqbenchError(f"the manifest {path} is damaged ({exc}); {fix}") from exc
    if meta.get("classes") != classes or meta.get("counts") != counts:
        raise MpqbenchError(
            f"{root} holds {counts} images in {len(classes)} classes, but the manifest {path} "
            f"recorded {meta.get('counts')} in {len(meta.get('classes', []))} (from "
            f"{meta.get('source')}); the folder or imagenet_root changed: {fix}"
        )


def calibration_subset(split: Split, size: int, seed: int) -> Split:
    """A seeded random subset of ``size`` images (drawn from train by the protocols)."""
    if not 0 < size <= len(split):
        raise MpqbenchError(f"calibration size {size} must be in [1, {len(split)}]")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.sort(torch.randperm(len(split), generator=generator)[:size]).values
    return split.subset(indices)
