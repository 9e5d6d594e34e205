"""Where the raw data comes from: the offline mirror (checksummed) or the original download,
and the readers of the CIFAR pickles and the mirror's JPEG archive."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpqbench.data.datasets import MIRROR_ENV, DatasetSpec
from mpqbench.errors import MpqbenchError

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
    """Read the official CIFAR python pickles (the torchvision download) from ``folder``.

    Each file's md5 is checked against the published list before it is unpickled (a pickle
    runs code when loaded), so a file that is not the published one is never read."""
    folder = Path(folder)
    published = dict(spec.file_md5)

    def load(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            raise MpqbenchError(f"{path} is missing; delete {folder} and prepare the data again")
        if name not in published:
            raise MpqbenchError(f"{spec.name} lists no published md5 for {name}; refusing to "
                                f"unpickle {path}")
        actual = file_digest(path, "md5")
        if actual != published[name]:
            raise MpqbenchError(
                f"{path} is not the published {spec.name} file (md5 {actual}, published "
                f"{published[name]}); it was not loaded. Delete {folder} and prepare the data "
                f"again (python -m mpqbench data --dataset {spec.name})")
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
