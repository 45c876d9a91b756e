"""Test images that are also training images are warned of, in one line each, in the run, the dry run and the
report; a clean dataset gets no warning and its numbers are untouched by the check."""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bench.cli import main
from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset


def _folder(root: Path, unlabeled: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(root / split / c / f"{i}.png")
    if unlabeled:
        (root / "unlabeled").mkdir()
        for i in range(unlabeled):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(root / "unlabeled" / f"u{i}.png")
    return root


def _load(root: Path, **kw):
    return load_dataset(DatasetConfig(name="imagefolder", root=str(root), **kw))


def test_a_clean_folder_has_no_warning(tmp_path):
    assert _load(_folder(tmp_path, unlabeled=4)).warnings == []


def test_test_copies_of_train_images_are_counted_with_the_other_class_ones_and_named(tmp_path):
    root = _folder(tmp_path)
    shutil.copy(root / "train/cat/0.png", root / "test/cat/9.png")  # a copy, the same class
    shutil.copy(root / "train/dog/1.png", root / "test/cat/8.png")  # a copy labelled with another class
    (warning,) = _load(root).warnings
    assert "\n" not in warning
    assert warning.startswith("2 of the 8 test images are pixel copies of training images (1 of them labelled")
    assert "test/cat/8.png = train/dog/1.png" in warning and "test/cat/9.png = train/cat/0.png" in warning


def test_unlabeled_copies_of_test_images_in_the_pool_are_warned_of(tmp_path):
    root = _folder(tmp_path, unlabeled=3)
    shutil.copy(root / "test/dog/2.png", root / "unlabeled/copy.png")
    (warning,) = _load(root).warnings
    assert warning.startswith("1 unlabelled images pretrained on are pixel copies of test images")
    assert "unlabeled/copy.png" in warning


def test_a_copy_outside_the_used_subset_is_no_leak(tmp_path):
    root = _folder(tmp_path)
    shutil.copy(root / "train/cat/0.png", root / "test/cat/9.png")
    assert _load(root).warnings  # all 8 test images used: the copy is among them
    copy = np.asarray(Image.open(root / "test/cat/9.png")).transpose(2, 0, 1)
    for size in (2, 4, 6):  # class-balanced subsets of the test images: warned exactly when the copy is drawn
        kept = _load(root, test_size=size)
        drawn = any(np.array_equal(x.numpy(), copy) for x in kept.test_x)
        assert len(kept.warnings) == drawn and len(kept.test_x) == size
        assert not drawn or f"1 of the {size} test images" in kept.warnings[0]


def test_the_dry_run_and_the_report_say_it(tmp_path, capsys):
    root = _folder(tmp_path / "data")
    shutil.copy(root / "train/cat/0.png", root / "test/cat/9.png")
    suite = tmp_path / "leak.toml"
    suite.write_text(
        'name = "leak"\nseeds = [0]\nbudgets = [4]\nprotocols = ["knn"]\ndevice = "cpu"\n'
        f'results_dir = "{tmp_path / "results"}"\ntracking_uri = "sqlite:///{tmp_path / "mlflow.db"}"\n'
        f'[dataset]\nname = "imagefolder"\nroot = "{root}"\n[encoder]\nname = "small_cnn"\n[tasks.random]\n'
    )
    assert main(["run", str(suite), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 of the 7 test images are pixel copies of training images" in out
    assert main(["run", str(suite)]) == 0
    table = (tmp_path / "results" / "leak" / "table.md").read_text()
    assert "**Data warning:** 1 of the 7 test images are pixel copies" in table
