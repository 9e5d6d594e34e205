"""Train (minus a seeded validation hold-out), val and test splits, their batches and
augmentation, and the seeded calibration subsets."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from mpqbench.data.cache import FOLDER_SPLITS, folder_root, read_cache
from mpqbench.data.datasets import DATASETS, IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from mpqbench.errors import MpqbenchError

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
