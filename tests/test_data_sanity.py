"""What a run refuses, it refuses before any training, and the dry run refuses it too, after looking at the data."""

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from bench.cli import main

pytestmark = pytest.mark.slow


def digits(root: Path, size: int = 8, per_class: int = 12) -> Path:
    """A tiny handwritten-digit-like folder: two classes of ``size`` px images, train and test."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in ("0", "1"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                if c == "1":
                    img[:, size // 2 - 1 : size // 2 + 1] = 255  # a vertical stroke
                else:
                    img[1:-1, [1, -2]] = 255  # two strokes: a crude zero
                Image.fromarray(img).save(root / split / c / f"{i}.png")
    return root


def suite(tmp_path: Path, tasks: str) -> Path:
    path = tmp_path / "digits.toml"
    path.write_text(
        f"""name = "digits"
seeds = [0]
budgets = [4]
protocols = ["linear"]
device = "cpu"
[dataset]
name = "imagefolder"
root = "{tmp_path / "digits"}"
flip = false
[encoder]
name = "small_cnn"
[pretrain]
epochs = 1
batch_size = 8
[linear]
l2_grid = [1e-2]
max_iter = 10
{tasks}
"""
    )
    return path


def experiment_runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("digits")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_jigsaw_on_8px_images_is_refused_before_any_training_and_rotation_runs(tmp_path, store, capsys):
    digits(tmp_path / "digits")
    sets = [f"--set={s}" for s in store]
    path = suite(tmp_path, "[tasks.jigsaw]\n[tasks.rotation]\n[tasks.random]\n")
    for extra in (["--dry-run"], []):
        assert main(["run", str(path), *sets, *extra]) == 2
        out = capsys.readouterr().out
        assert "tasks.jigsaw" in out and "'jigsaw' needs images of at least" in out and "8 px" in out
    assert experiment_runs(tmp_path) == []  # refused before anything ran
    path = suite(tmp_path, "[tasks.rotation]\n[tasks.random]\n")
    assert main(["run", str(path), *sets]) == 0
    assert len([r for r in experiment_runs(tmp_path) if r.info.status == "FINISHED"]) == 1 + 2 + 1


def test_dry_run_describes_the_data_and_refuses_what_a_run_refuses(tmp_path, store, capsys):
    digits(tmp_path / "digits", size=16)
    (tmp_path / "digits" / "test" / "7").mkdir()  # a test class the training set lacks
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "digits" / "test" / "7" / "a.png")
    path = suite(tmp_path, "[tasks.rotation]\n")
    sets = [f"--set={s}" for s in store]
    assert main(["run", str(path), *sets, "--dry-run"]) == 2
    assert "7" in capsys.readouterr().out
    (tmp_path / "digits" / "test" / "7" / "a.png").unlink()
    (tmp_path / "digits" / "test" / "7").rmdir()
    assert main(["run", str(path), *sets, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "data: imagefolder, 2 classes, 3 x 16 x 16 px; train 24, test 12" in out
    assert "pretraining pool: train 24, unlabeled 0, duplicates_dropped 0, pool 24" in out
    assert main(["run", str(path), *sets, "--set=budgets=[100]", "--dry-run"]) == 2  # budget > images
    assert "budget 100 exceeds" in capsys.readouterr().out
