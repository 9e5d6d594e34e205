"""Dataset registry: where each dataset comes from and how its images are normalized."""

from __future__ import annotations

from dataclasses import dataclass

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
