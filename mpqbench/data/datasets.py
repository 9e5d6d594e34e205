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
    # md5 of every raw pickle (train, test and meta files), checked before it is unpickled:
    # unpickling runs code, so only the published bytes are read (values as torchvision's
    # CIFAR10 / CIFAR100 classes list them)
    file_md5: tuple[tuple[str, str], ...] = ()
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
        file_md5=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
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
        file_md5=(
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", "7973b15100ade9c7d40fb424638fde48"),
        ),
    ),
)
DATASETS.add(
    "imagenet",
    DatasetSpec(name="imagenet", num_classes=1000, input_shape=(3, 224, 224), image_folder=True),
)
