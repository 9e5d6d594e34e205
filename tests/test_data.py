import hashlib
import pickle
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from mpqbench.data import (
    DATASETS,
    CacheMeta,
    RawArrays,
    calibration_subset,
    load_splits,
    pad_crop_flip,
    prepare_dataset,
    read_cache,
    stratified_holdout,
    write_cache,
)
from mpqbench.data.sources import file_digest
from mpqbench.errors import MpqbenchError


def test_real_cifar10_splits_shapes_labels_and_balance(cifar_splits):
    s = cifar_splits
    assert s.variant in ("cifar10", "cifar10-jpeg")
    assert s.classes[:3] == ["airplane", "automobile", "bird"] and s.num_classes == 10
    assert (len(s.train), len(s.val), len(s.test)) == (45000, 5000, 10000)
    assert s.train.images.shape == (45000, 32, 32, 3) and s.train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(s.val.labels), torch.full((10,), 500))
    assert torch.equal(torch.bincount(s.train.labels), torch.full((10,), 4500))
    assert torch.equal(torch.bincount(s.test.labels), torch.full((10,), 1000))
    x, y = next(s.test.batches(64))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    # normalized with the checkpoints' statistics: per-channel means near 0 on real images
    mean = next(s.train.batches(4096, shuffle=True))[0].mean(dim=(0, 2, 3))
    assert mean.abs().max() < 0.35


def test_val_and_train_are_disjoint_and_cover_the_training_set():
    labels = torch.arange(1000) % 10
    keep, held = stratified_holdout(labels, 100, seed=3)
    assert len(set(keep.tolist()) & set(held.tolist())) == 0
    assert sorted(keep.tolist() + held.tolist()) == list(range(1000))
    assert torch.equal(torch.bincount(labels[held]), torch.full((10,), 10))
    keep2, held2 = stratified_holdout(labels, 100, seed=3)
    assert torch.equal(held, held2)
    assert not torch.equal(held, stratified_holdout(labels, 100, seed=4)[1])


def test_real_val_images_are_not_in_train(cifar_splits):
    # hash every image: no validation image appears among the training images
    def keys(split):
        flat = split.images.reshape(len(split), -1).to(torch.int64)
        generator = torch.Generator().manual_seed(0)
        weights = torch.randint(0, 2**31, (flat.shape[1],), generator=generator)
        return set((flat * weights).sum(1).tolist())

    assert not keys(cifar_splits.val) & keys(cifar_splits.train)


def test_corrupt_mirror_archive_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"not the archive")
    monkeypatch.setenv("MPQBENCH_MIRROR", str(tmp_path))
    with pytest.raises(MpqbenchError, match="corrupt: sha256"):
        prepare_dataset("cifar10", tmp_path / "out")


def test_missing_mirror_folder_and_file_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MPQBENCH_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(MpqbenchError, match="MPQBENCH_MIRROR=.* is not a folder"):
        prepare_dataset("cifar10", tmp_path / "out")
    monkeypatch.setenv("MPQBENCH_MIRROR", str(tmp_path))
    with pytest.raises(MpqbenchError, match="has no cifar10-jpeg.tar.gz"):
        prepare_dataset("cifar10", tmp_path / "out")


def test_no_network_and_no_mirror_says_so(tmp_path, no_mirror, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(MpqbenchError, match="No network.*MPQBENCH_MIRROR"):
        prepare_dataset("cifar10", tmp_path / "cifar10")


def test_unknown_dataset_lists_known():
    with pytest.raises(MpqbenchError, match="unknown dataset 'mnist'; known: cifar10, cifar100"):
        DATASETS.get("mnist")


def _write_cifar_pickles(folder, spec, n_train, n_test, classes, rng):
    folder.mkdir(parents=True)
    images = {}
    for name, n in [(f, n_train // len(spec.train_files)) for f in spec.train_files] + [
        (f, n_test) for f in spec.test_files
    ]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, spec.label_key: labels}, f)
        images[name] = (data, labels)
    with open(folder / spec.meta_file, "wb") as f:
        pickle.dump({spec.class_names_key: [f"c{i}".encode() for i in range(classes)]}, f)
    return images


def _publish(monkeypatch, spec, folder):
    """Stand-in pickles pass the md5 check only once their own digests are the published list."""
    digests = tuple((p.name, file_digest(p, "md5")) for p in sorted(folder.iterdir()))
    monkeypatch.setitem(DATASETS._entries, spec.name, replace(spec, file_md5=digests))


@pytest.mark.parametrize("name,classes", [("cifar100", 100), ("cifar10", 10)])
def test_official_pickles_convert_with_the_right_pixel_layout(tmp_path, no_mirror, name, classes,
                                                              monkeypatch):
    spec = DATASETS.get(name)
    rng = np.random.default_rng(0)
    written = _write_cifar_pickles(tmp_path / "raw" / spec.extracted_dir, spec, 250, 40, classes,
                                   rng)
    _publish(monkeypatch, spec, tmp_path / "raw" / spec.extracted_dir)
    meta = prepare_dataset(name, tmp_path / name, raw_dir=tmp_path / "raw")
    assert meta.variant == name and meta.counts == {"train": 250, "test": 40}
    raw, _ = read_cache(tmp_path / name)
    data, labels = written[spec.test_files[0]]
    # a row is 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    assert raw.test_x[7, 2, 5, 1] == data[7, 1024 + 2 * 32 + 5]
    assert raw.test_x[3, 31, 0, 2] == data[3, 2048 + 31 * 32]
    assert raw.test_y.tolist() == labels
    splits = load_splits(name, tmp_path, val_size=classes, seed=0)
    assert len(splits.val) == classes and len(splits.train) == 250 - classes
    assert splits.num_classes == classes


class _Payload:
    """Unpickling this runs ``touch`` on the marker path: what a crafted batch file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


@pytest.mark.parametrize("content", ["crafted", "random"])
def test_raw_pickles_that_are_not_the_published_files_are_never_unpickled(tmp_path, no_mirror,
                                                                          content, capsys):
    """Without a mirror an existing cifar-10-batches-py folder used to be unpickled unchecked:
    a crafted batch ran its payload, random bytes gave a raw UnpicklingError traceback."""
    spec = DATASETS.get("cifar10")
    folder = tmp_path / "raw" / spec.extracted_dir
    _write_cifar_pickles(folder, spec, 50, 10, 10, np.random.default_rng(0))
    marker = tmp_path / "payload-ran"
    with open(folder / "data_batch_1", "wb") as f:
        if content == "crafted":
            pickle.dump(_Payload(marker), f)
        else:
            f.write(np.random.default_rng(1).bytes(4096))
    from mpqbench.cli import main

    assert main(["data", "--dataset", "cifar10", "--out", str(tmp_path / "cifar10")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpqbench: error: ") and len(err.strip().splitlines()) == 1
    assert "data_batch_1 is not the published cifar10 file (md5 " in err
    assert "it was not loaded. Delete" in err and "python -m mpqbench data --dataset cifar10" in err
    assert not marker.exists(), "the pickle's payload ran"


def test_damaged_cache_names_the_rebuild_command(tmp_path):
    raw = RawArrays(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64),
                    np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, np.int64), ["a"])
    write_cache(tmp_path / "cifar10", raw, CacheMeta("cifar10", "cifar10", ["a"], "x", "y",
                                                      {"train": 4, "test": 2}))
    read_cache(tmp_path / "cifar10")
    (tmp_path / "cifar10" / "train_x.npy").write_bytes(b"garbage")
    with pytest.raises(MpqbenchError, match="damaged.*mpqbench data --dataset cifar10"):
        read_cache(tmp_path / "cifar10")
    with pytest.raises(MpqbenchError, match="no prepared dataset"):
        read_cache(tmp_path / "cifar100")


def test_imagenet_folder_loads_with_eval_transforms(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("val", 2)):
        for cls in ("n01", "n02"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / part / cls / f"{i}.png")
    (tmp_path / "val" / "n01" / "LICENSE.txt").write_text("ImageFolder skips this file")
    data_dir = tmp_path / "data"
    with pytest.raises(MpqbenchError, match="no manifest.*dvc repro data"):
        load_splits("imagenet", data_dir, imagenet_root=tmp_path, val_size=2, workers=0)
    meta = prepare_dataset("imagenet", data_dir / "imagenet", image_root=tmp_path)
    assert meta.counts == {"train": 12, "test": 4} and meta.classes == ["n01", "n02"]
    splits = load_splits("imagenet", data_dir, val_size=2, seed=0, imagenet_root=tmp_path,
                         workers=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 2, 4)
    assert splits.classes == ["n01", "n02"]
    assert torch.equal(torch.bincount(splits.val.labels), torch.tensor([1, 1]))
    x, y = next(splits.test.batches(4))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]
    xa, _ = next(splits.train.batches(3, shuffle=True, augment=True))
    assert xa.shape == (3, 3, 224, 224)
    with pytest.raises(MpqbenchError, match="imagenet_root"):
        load_splits("imagenet")
    with pytest.raises(MpqbenchError, match="is not a folder"):
        load_splits("imagenet", imagenet_root=tmp_path / "train")
    # one more image: the folder no longer matches the manifest the data stage wrote
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "val" / "n02" / "9.png")
    with pytest.raises(MpqbenchError, match="manifest.*changed"):
        load_splits("imagenet", data_dir, val_size=2, imagenet_root=tmp_path, workers=0)
    (data_dir / "imagenet" / "meta.json").write_text('{"classes": [')
    with pytest.raises(MpqbenchError, match="manifest.*damaged.*dvc repro data"):
        load_splits("imagenet", data_dir, val_size=2, imagenet_root=tmp_path, workers=0)


def test_folder_manifest_fingerprints_names_and_sizes(tmp_path):
    for part in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / part / cls).mkdir(parents=True)
            (tmp_path / part / cls / "0.jpg").write_bytes(b"12345")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image: ImageFolder skips it")
    first = prepare_dataset("imagenet", tmp_path / "m1", image_root=tmp_path)
    assert first.counts == {"train": 2, "test": 2} and first.variant == "imagenet"
    # an independent oracle: sha256 over "<part>/<class>/<file>\t<size>" lines, sorted
    lines = "".join(f"{part}/{cls}/0.jpg\t5\n" for part in ("train", "val") for cls in "ab")
    assert first.source_digest == hashlib.sha256(lines.encode()).hexdigest()
    (tmp_path / "val" / "b" / "0.jpg").write_bytes(b"123456")  # same names, one size changed
    second = prepare_dataset("imagenet", tmp_path / "m2", image_root=tmp_path)
    assert second.counts == first.counts and second.source_digest != first.source_digest
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(MpqbenchError, match="different class folders"):
        prepare_dataset("imagenet", tmp_path / "m3", image_root=tmp_path)
    with pytest.raises(MpqbenchError, match="imagenet_root"):
        prepare_dataset("imagenet", tmp_path / "m4")


def test_pad_crop_flip_is_a_shifted_or_flipped_crop():
    x = torch.rand(16, 3, 8, 8)
    out = pad_crop_flip(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5) for dx in range(5) for flip in (False, True)
            if torch.equal(out[i], (lambda c: c.flip(2) if flip else c)(
                padded[i, :, dy:dy + 8, dx:dx + 8]))
        ]
        assert matches, f"image {i} is not a crop of its padded input"
        flips += matches[0][2]
    assert 0 < flips < 16


def test_batches_are_seeded_and_cover_every_image():
    from mpqbench.data import TensorSplit

    split = TensorSplit(torch.arange(10 * 12, dtype=torch.uint8).reshape(10, 2, 2, 3).repeat(
        1, 1, 1, 1), torch.arange(10), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    labels = [y for _, y in split.batches(3, shuffle=True, seed=5)]
    again = [y for _, y in split.batches(3, shuffle=True, seed=5)]
    assert [len(y) for y in labels] == [3, 3, 3, 1]
    assert all(torch.equal(a, b) for a, b in zip(labels, again, strict=True))
    assert sorted(torch.cat(labels).tolist()) == list(range(10))
    x, y = next(split.batches(10))
    assert torch.allclose(x[4].permute(1, 2, 0).flatten() * 255, split.images[4].flatten().float())


def test_calibration_subset_is_seeded_and_bounded():
    from mpqbench.data import TensorSplit

    split = TensorSplit(torch.zeros(50, 2, 2, 3, dtype=torch.uint8), torch.arange(50),
                        (0.0,) * 3, (1.0,) * 3)
    a = calibration_subset(split, 20, seed=1)
    assert torch.equal(a.labels, calibration_subset(split, 20, seed=1).labels)
    assert len(set(a.labels.tolist())) == 20
    with pytest.raises(MpqbenchError, match="calibration size 51"):
        calibration_subset(split, 51, seed=1)
