"""Data identity, cache invalidation, refusals of broken image folders, and de-duplication of the pool."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.errors import DataError


def _save(path: Path, seed: int, size: int | tuple[int, int] = 8, fmt: str | None = None) -> None:
    """A random RGB image whose pixels depend only on ``seed`` (so two folders can hold the same content)."""
    w, h = (size, size) if isinstance(size, int) else size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def _folder(root: Path, classes=("cat", "dog"), train: int = 3, test: int = 2, size=8, seed: int = 0) -> Path:
    """``root/train/<class>/i.png`` and ``root/test/<class>/i.png``, every image distinct."""
    for k, c in enumerate(classes):
        for i in range(train):
            _save(root / "train" / c / f"{i}.png", seed * 10_000 + k * 100 + i, size)
        for i in range(test):
            _save(root / "test" / c / f"{i}.png", seed * 10_000 + k * 100 + 50 + i, size)
    return root


def _load(root: Path, **kw):
    return load_dataset(DatasetConfig(name="imagefolder", root=str(root), **kw))


def _cache_stamp(root: Path) -> tuple[int, int]:
    """Changes whenever the cache is rewritten (a new file: new inode and modification time)."""
    st = os.stat(root / ".bench-cache" / "imagefolder" / "train_x.npy")
    return st.st_ino, st.st_mtime_ns


def _refusal(root: Path, **kw) -> str:
    with pytest.raises(DataError) as err:
        _load(root, **kw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- identity and cache invalidation


def test_a_class_added_after_the_first_load_is_seen(tmp_path):
    _folder(tmp_path)
    first = _load(tmp_path)
    assert first.classes == ["cat", "dog"] and len(first.train_x) == 6
    _folder(tmp_path, classes=("bird",), seed=1)
    second = _load(tmp_path)
    assert second.classes == ["bird", "cat", "dog"] and len(second.train_x) == 9 and len(second.test_x) == 6
    assert second.identity != first.identity


def test_an_unchanged_folder_reuses_the_cache_and_a_touched_or_changed_file_rebuilds_it(tmp_path):
    _folder(tmp_path)
    first = _load(tmp_path)
    stamp = _cache_stamp(tmp_path)
    assert _load(tmp_path).identity == first.identity and _cache_stamp(tmp_path) == stamp  # reused

    image = tmp_path / "train" / "cat" / "0.png"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same pixels, new mtime
    touched = _load(tmp_path)
    assert _cache_stamp(tmp_path) != stamp and touched.identity == first.identity
    stamp = _cache_stamp(tmp_path)

    _save(image, seed=999)  # new pixels, same size in bytes is possible: the mtime must tell
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    changed = _load(tmp_path)
    assert _cache_stamp(tmp_path) != stamp and changed.identity != first.identity
    assert [p.name for p in (tmp_path / ".bench-cache").iterdir()] == ["imagefolder"]  # no half-written leftovers
    assert (changed.train_x[0].permute(1, 2, 0).numpy() == np.asarray(Image.open(image))).all()


def test_identity_is_the_content_not_the_place_nor_the_subset(tmp_path):
    a = _load(_folder(tmp_path / "a"))
    b = _load(_folder(tmp_path / "b"))
    other = _load(_folder(tmp_path / "c", seed=3))
    assert len(a.identity) >= 12 and a.identity == b.identity != other.identity
    subset = _load(tmp_path / "a", train_size=2, test_size=2, pool_size=3)
    assert subset.identity == a.identity and len(subset.train_x) == 2


def test_synthetic_identity_is_a_digest_of_the_generated_arrays():
    small = DatasetConfig(name="synthetic", synthetic={"train": 30, "test": 12, "size": 16})
    assert load_dataset(small).identity == load_dataset(small).identity
    bigger = DatasetConfig(name="synthetic", synthetic={"train": 40, "test": 12, "size": 16})
    assert load_dataset(bigger).identity != load_dataset(small).identity


def test_a_cache_without_its_manifest_is_rebuilt(tmp_path):
    """A write killed before the manifest (or a cache written by an older bench) is never trusted."""
    _folder(tmp_path)
    first = _load(tmp_path)
    stamp = _cache_stamp(tmp_path)
    (tmp_path / ".bench-cache" / "imagefolder" / "manifest.json").unlink()
    again = _load(tmp_path)
    assert _cache_stamp(tmp_path) != stamp and again.identity == first.identity
    assert (tmp_path / ".bench-cache" / "imagefolder" / "manifest.json").exists()


def test_an_old_style_cache_is_not_trusted(tmp_path):
    """The cache layout of earlier versions (arrays and classes.txt, no manifest) holding stale data."""
    _folder(tmp_path)
    cache = tmp_path / ".bench-cache" / "imagefolder"
    cache.mkdir(parents=True)
    for name, a in {
        "train_x": np.zeros((2, 3, 8, 8), np.uint8),
        "train_y": np.array([0, 1]),
        "test_x": np.zeros((2, 3, 8, 8), np.uint8),
        "test_y": np.array([0, 1]),
        "unlabeled_x": np.zeros((0, 3, 8, 8), np.uint8),
    }.items():
        np.save(cache / f"{name}.npy", a)
    (cache / "classes.txt").write_text("old\nstale")
    data = _load(tmp_path)
    assert data.classes == ["cat", "dog"] and len(data.train_x) == 6


def test_a_write_killed_halfway_leaves_a_cache_that_is_never_mixed(tmp_path, monkeypatch):
    _folder(tmp_path)
    first = _load(tmp_path)
    _folder(tmp_path, classes=("bird",), seed=1)
    from bench.data.cache import NpyWriter

    real_write, calls = NpyWriter.write, []

    def killed(self, chunk):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies in the middle of writing the new cache
        return real_write(self, chunk)

    monkeypatch.setattr(NpyWriter, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        _load(tmp_path)
    assert not list((tmp_path / ".bench-cache").glob("*.tmp-*"))  # the half-written folder is removed
    monkeypatch.setattr(NpyWriter, "write", real_write)
    data = _load(tmp_path)
    assert data.classes == ["bird", "cat", "dog"] and len(data.train_x) == 9 and data.identity != first.identity
    assert _load(tmp_path).identity == data.identity


def test_torchvision_layout_is_rebuilt_when_its_files_change(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()

    class FakeCIFAR10:  # torchvision's CIFAR10, reading one byte from its pickle folder
        classes = ["a", "b"]

        def __init__(self, root, train=True, download=False):
            value = (Path(root) / "cifar-10-batches-py" / "data_batch_1").read_bytes()[0]
            self.data = np.full((4, 8, 8, 3), value, np.uint8)  # (N, H, W, C) as torchvision keeps it
            self.targets = [0, 1, 0, 1]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    cfg = DatasetConfig(name="cifar10", root=str(tmp_path))
    (batches / "data_batch_1").write_bytes(b"\x05")
    first = load_dataset(cfg)
    assert int(first.train_x.max()) == 5 and int(load_dataset(cfg).train_x.max()) == 5
    (batches / "data_batch_1").write_bytes(b"\x09")
    st = (batches / "data_batch_1").stat()
    os.utime(batches / "data_batch_1", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_dataset(cfg)
    assert int(second.train_x.max()) == 9 and second.identity != first.identity


# ---------------------------------------------------------------- refusals, before any training


def test_stray_files_and_hidden_folders_are_ignored(tmp_path):
    _folder(tmp_path)
    for stray in ("train/.DS_Store", "train/cat/.DS_Store", "train/cat/README.txt", "test/dog/notes.md"):
        (tmp_path / stray).write_text("not an image")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    assert _load(tmp_path).classes == ["cat", "dog"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_class_folder_is_refused(tmp_path, split):
    _folder(tmp_path)
    (tmp_path / split / "cat").mkdir(exist_ok=True)
    for f in (tmp_path / split / "cat").iterdir():
        f.unlink()
    (tmp_path / split / "cat" / ".DS_Store").write_text("")
    msg = _refusal(tmp_path)
    assert f"{tmp_path / split / 'cat'}" in msg and "no images" in msg


def test_an_empty_class_folder_added_after_a_load_is_refused(tmp_path):
    _folder(tmp_path)
    _load(tmp_path)
    (tmp_path / "train" / "bird").mkdir()  # empty, while test/bird has an image
    _save(tmp_path / "test" / "bird" / "0.png", 77)
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train' / 'bird'}" in msg and "no images" in msg


def test_classes_only_in_test_are_refused(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "test" / "bird" / "0.png", 77)
    msg = _refusal(tmp_path)
    assert "bird" in msg and "test" in msg and str(tmp_path) in msg and "cat" not in msg


def test_classes_only_in_train_are_refused(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "train" / "bird" / "0.png", 77)
    _save(tmp_path / "train" / "fish" / "0.png", 78)
    msg = _refusal(tmp_path)
    assert "bird, fish" in msg and "train" in msg and str(tmp_path) in msg


def test_a_single_class_is_refused(tmp_path):
    _folder(tmp_path, classes=("cat",))
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train'}" in msg and "one class" in msg and "cat" in msg


def test_train_and_test_of_different_sizes_are_refused(tmp_path):
    _folder(tmp_path, test=0)
    for c in ("cat", "dog"):
        _save(tmp_path / "test" / c / "0.png", 5, size=16)
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'test'}" in msg and "16x16" in msg and "8x8" in msg


def test_unlabeled_images_of_another_size_are_refused(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "unlabeled" / "u.png", 5, size=16)
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'unlabeled'}" in msg and "16x16" in msg and "8x8" in msg


def test_images_that_are_not_square_are_refused(tmp_path):
    _folder(tmp_path, size=(12, 8))  # every image 12 wide, 8 high: one size, but not square
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train' / 'cat' / '0.png'}" in msg and "12x8" in msg and "square" in msg


def test_images_that_differ_in_size_within_a_split_are_refused(tmp_path):
    _folder(tmp_path)
    _save(tmp_path / "train" / "dog" / "big.png", 5, size=16)
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train' / 'dog' / 'big.png'}" in msg and "16x16" in msg and "8x8" in msg


def _truncated_jpeg(size: int = 16) -> bytes:
    """A JPEG missing its last tenth: PIL decodes it without complaint when LOAD_TRUNCATED_IMAGES is set."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) * 9 // 10]


def _png_bytes(size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("garbage.png", b"this is not a png at all", "cannot identify"),
        ("empty.png", b"", "empty"),
        ("truncated.jpg", _truncated_jpeg(8), "truncated"),
        ("truncated.png", _png_bytes()[: len(_png_bytes()) // 2], ""),
    ],
)
def test_broken_images_are_refused_naming_the_file_and_the_reason(tmp_path, name, content, reason):
    _folder(tmp_path)
    (tmp_path / "train" / "dog" / name).write_bytes(content)
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train' / 'dog' / name}" in msg and reason in msg


def test_a_truncated_jpeg_is_refused_even_when_pil_is_told_to_accept_truncated_files(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it, process-wide
    _folder(tmp_path, size=16)
    (tmp_path / "test" / "cat" / "cut.jpg").write_bytes(_truncated_jpeg(16))
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'test' / 'cat' / 'cut.jpg'}" in msg and "truncated" in msg


def test_an_unreadable_image_is_refused(tmp_path):
    _folder(tmp_path)
    (tmp_path / "train" / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a dangling link
    msg = _refusal(tmp_path)
    assert f"{tmp_path / 'train' / 'cat' / 'gone.png'}" in msg and "No such file" in msg


# ---------------------------------------------------------------- the pretraining pool


def test_unlabeled_duplicates_of_train_images_and_of_each_other_are_dropped(tmp_path):
    _folder(tmp_path)  # 6 train images; train/cat/0.png has seed 0, train/dog/1.png seed 101
    u = tmp_path / "unlabeled"
    _save(u / "copy_of_cat0.png", 0)
    _save(u / "sub" / "copy_of_dog1.bmp", 101, fmt="BMP")  # other format, same decoded pixels
    _save(u / "new1.png", 5000)
    _save(u / "new1_again.png", 5000)
    _save(u / "new2.png", 5001)
    data = _load(tmp_path)
    rows = {x.numpy().tobytes() for x in data.pool.resident()}
    assert len(data.pool) == len(rows) == 8
    assert {x.numpy().tobytes() for x in data.train_x} <= rows
    assert data.pool_composition == {"train": 6, "unlabeled": 5, "duplicates_dropped": 3, "pool": 8}


def test_duplicates_are_dropped_before_the_pool_size_subset(tmp_path):
    _folder(tmp_path)
    u = tmp_path / "unlabeled"
    for i in range(6):  # every unlabeled image is a copy of the same train image
        _save(u / f"copy{i}.png", 0)
    _save(u / "new.png", 5000)
    data = _load(tmp_path, pool_size=7)  # 6 train + 1 new: the only 7 distinct images
    assert len({x.numpy().tobytes() for x in data.pool.resident()}) == 7
    assert data.pool_composition == {"train": 6, "unlabeled": 7, "duplicates_dropped": 6, "pool": 7}
    smaller = _load(tmp_path, pool_size=4)
    assert smaller.pool_composition["pool"] == len({x.numpy().tobytes() for x in smaller.pool.resident()}) == 4


def test_pool_composition_without_unlabeled_images(tmp_path):
    data = _load(_folder(tmp_path), train_size=4)
    assert data.pool_composition == {"train": 4, "unlabeled": 0, "duplicates_dropped": 0, "pool": 4}
    synthetic = load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 30, "test": 12}, pool_size=20))
    assert synthetic.pool_composition == {"train": 30, "unlabeled": 0, "duplicates_dropped": 0, "pool": 20}


def test_a_cache_build_out_of_space_says_why_leaves_no_folder_and_still_loads(tmp_path, monkeypatch, capsys):
    import errno

    from bench.data.cache import NpyWriter

    _folder(tmp_path)

    def full(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NpyWriter, "write", full)
    data = _load(tmp_path)
    out = capsys.readouterr().out
    assert "decoded images not cached (No space left on device)" in out and "(None)" not in out
    assert list((tmp_path / ".bench-cache").iterdir()) == []  # no half-written folder left to fill the disk
    monkeypatch.undo()
    assert _load(tmp_path).identity == data.identity and len(data.train_x) == 6  # decoded in memory meanwhile
