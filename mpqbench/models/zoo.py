"""The model registry: architectures, the dataset each expects and their pretrained weights."""

from __future__ import annotations

import importlib.util
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from mpqbench.data import MIRROR_ENV, file_digest, verified_mirror_file
from mpqbench.errors import MpqbenchError
from mpqbench.models.cifar_resnet import cifar_resnet
from mpqbench.registry import Registry

AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


@dataclass(frozen=True)
class ModelSpec:
    """An architecture and where its pretrained weights come from.

    CIFAR models name a checkpoint file (URL + sha256, or the mirror's ``checkpoints/`` copy);
    torchvision models name the torchvision weights enum entry; a user's model
    (``register_user_models``) names a local weights file (``checkpoint_path`` + sha256).
    """

    name: str
    build: Callable[[int], nn.Module]  # num_classes -> model
    datasets: tuple[str, ...]
    checkpoint_file: str | None = None
    checkpoint_sha256: str | None = None
    published_top1: float | None = None  # on the original dataset, percent
    torchvision_weights: str | None = None
    checkpoint_path: str | None = None  # a user's weights file, relative to the repository


MODELS: Registry[ModelSpec] = Registry("model")

_AKAMASTER = {
    20: ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
         91.73),
    32: ("resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
         92.63),
    44: ("resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
         93.10),
    56: ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
         93.39),
}
for _depth, (_file, _sha, _top1) in _AKAMASTER.items():
    MODELS.add(
        f"resnet{_depth}",
        ModelSpec(
            name=f"resnet{_depth}",
            build=lambda num_classes, d=_depth: cifar_resnet(d, num_classes),
            datasets=("cifar10",),
            checkpoint_file=_file,
            checkpoint_sha256=_sha,
            published_top1=_top1,
        ),
    )


def _torchvision(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, num_classes=num_classes)

    return build


for _name, _weights, _top1 in (
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 69.758),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V1", 76.130),
    ("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", 71.878),
):
    MODELS.add(
        _name,
        ModelSpec(_name, _torchvision(_name), ("imagenet",), published_top1=_top1,
                  torchvision_weights=_weights),
    )


USER_MODELS_DIR = "user_models"


def _user_factory(name: str, path: Path) -> Callable[[int], nn.Module]:
    if not path.is_file():
        raise MpqbenchError(f"user model {name!r}: no factory {path}; write it with a function "
                            "build(num_classes) -> nn.Module (see user_models/README.md)")
    loader = importlib.util.spec_from_file_location(f"mpqbench_user_models.{name}", path)
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error is reported with its file
        raise MpqbenchError(f"user model {name!r}: {path} failed to import ({exc})") from exc
    build = getattr(module, "build", None)
    if not callable(build):
        raise MpqbenchError(f"user model {name!r}: {path} has no function build(num_classes)")
    return build


def register_user_models(entries: dict[str, dict] | None, repo: str | Path = ".") -> list[str]:
    """Register params.yaml's ``user_models`` (name -> ``{datasets, sha256, published_top1}``):
    the architecture from ``user_models/<name>.py`` (its ``build(num_classes)``), the weights
    from ``user_models/<name>.pt`` (a state dict, checked against ``sha256`` when loaded).
    Registering the same entry again does nothing; a shipped model's name, or a name already
    registered with other settings, is an error. Returns the names registered."""
    added = []
    for name, entry in (entries or {}).items():
        if name in MODELS.names() and MODELS.get(name).checkpoint_path is None:
            raise MpqbenchError(f"user_models.{name}: {name!r} is a model the suite ships; "
                                "give yours another name")
        folder = Path(repo, USER_MODELS_DIR)
        spec = ModelSpec(name, _user_factory(name, folder / f"{name}.py"),
                         tuple(entry["datasets"]), checkpoint_sha256=entry["sha256"],
                         published_top1=entry.get("published_top1"),
                         checkpoint_path=(folder / f"{name}.pt").resolve().as_posix())
        if name in MODELS.names():
            known = MODELS.get(name)
            if (known.datasets, known.checkpoint_sha256, known.checkpoint_path) != (
                    spec.datasets, spec.checkpoint_sha256, spec.checkpoint_path):
                raise MpqbenchError(f"user_models.{name} is registered already with other "
                                    "settings; use one params file per process")
            continue
        MODELS.add(name, spec)
        added.append(name)
    return added


def build_model(name: str, num_classes: int) -> nn.Module:
    """An untrained model of the registered architecture."""
    return MODELS.get(name).build(num_classes)


def check_model_dataset(name: str, dataset: str) -> ModelSpec:
    spec = MODELS.get(name)
    if dataset not in spec.datasets:
        raise MpqbenchError(
            f"model {name!r} has pretrained weights for {', '.join(spec.datasets)}, "
            f"not {dataset!r}; "
            f"pick a model registered for {dataset}: "
            + ", ".join(n for n in MODELS.names() if dataset in MODELS.get(n).datasets)
        )
    return spec


def pretrained_checkpoint_path(spec: ModelSpec, download_dir: str | Path) -> Path:
    """The published checkpoint file: from the mirror when configured, else downloaded."""
    mirrored = verified_mirror_file(f"checkpoints/{spec.checkpoint_file}", spec.checkpoint_sha256)
    if mirrored is not None:
        return mirrored
    target = Path(download_dir) / spec.checkpoint_file
    if not target.is_file() or file_digest(target) != spec.checkpoint_sha256:
        target.parent.mkdir(parents=True, exist_ok=True)
        url = AKAMASTER_URL + spec.checkpoint_file
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except (urllib.error.URLError, OSError) as exc:
            raise MpqbenchError(
                f"could not download {url} ({exc}). No network? Set {MIRROR_ENV} to the offline "
                f"mirror folder (see the README)"
            ) from exc
        actual = file_digest(target)
        if actual != spec.checkpoint_sha256:
            target.unlink()
            raise MpqbenchError(
                f"{url} downloaded with sha256 {actual}, expected {spec.checkpoint_sha256}"
            )
    return target


def user_checkpoint_path(spec: ModelSpec) -> Path:
    """A user's weights file, after its sha256 is checked against the registered one."""
    path = Path(spec.checkpoint_path)
    if not path.is_file():
        raise MpqbenchError(f"user model {spec.name!r}: no weights file {path}; save the "
                            "model's state_dict there (see user_models/README.md)")
    actual = file_digest(path)
    if actual != spec.checkpoint_sha256:
        raise MpqbenchError(f"user model {spec.name!r}: {path} has sha256 {actual}, params.yaml "
                            f"says {spec.checkpoint_sha256}; update user_models.{spec.name}.sha256 "
                            "if you replaced the file on purpose")
    return path


def load_published_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A published CIFAR checkpoint's state dict, without the DataParallel ``module.`` prefix."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise MpqbenchError(f"cannot read checkpoint {path} ({exc}); copy it again") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise MpqbenchError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def pretrained_model(
    name: str, dataset: str, num_classes: int, download_dir: str | Path = "checkpoints/published"
) -> nn.Module:
    """The registered model with its published weights, in eval mode, on the CPU."""
    spec = check_model_dataset(name, dataset)
    if spec.torchvision_weights is not None:
        import torchvision

        weights = torchvision.models.get_weight(spec.torchvision_weights)
        classes = len(weights.meta["categories"])
        if classes != num_classes:
            raise MpqbenchError(
                f"{spec.torchvision_weights} classifies {classes} classes, the dataset has "
                f"{num_classes}; point imagenet_root at the full ImageNet (1000 class folders)"
            )
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except (urllib.error.URLError, OSError) as exc:
            raise MpqbenchError(
                f"could not download the torchvision weights {spec.torchvision_weights} ({exc}); "
                f"this needs network access, or the file in torch.hub's cache"
            ) from exc
        return model.eval()
    model = spec.build(num_classes)
    path = (user_checkpoint_path(spec) if spec.checkpoint_path is not None
            else pretrained_checkpoint_path(spec, download_dir))
    state = load_published_state(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MpqbenchError(
            f"checkpoint for {name} does not fit the architecture: missing {missing}, "
            f"unexpected {unexpected}"
        )
    return model.eval()
