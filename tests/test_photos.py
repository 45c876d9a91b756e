"""Image folders as people have them: mixed sizes and aspect ratios, every common mode, EXIF orientation, nested
folders and stray files, read first try with ``dataset.image_size`` (shorter side, then the centre square), with
each conversion to RGB as the documentation states it."""

import numpy as np
import pytest
from PIL import Image

from bench.config.load import load_suite
from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.errors import DataError
from bench.run.plan import data_config

RED, BLUE, GREEN, GREY = (220, 20, 20), (20, 20, 220), (20, 200, 20), (128, 128, 128)


def _rgb(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _photos(folder, seed: int) -> None:
    """One image of each kind a photo folder holds, each of its own size and aspect ratio."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(_rgb(40, 30, seed)).save(folder / "landscape.jpg", quality=90)
    Image.fromarray(_rgb(20, 50, seed + 1)[..., 0], "L").save(folder / "portrait_grey.png")
    rgba = np.concatenate([_rgb(24, 24, seed + 2), rng.integers(0, 256, (24, 24, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    Image.fromarray(_rgb(33, 17, seed + 3)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    deep = (rng.integers(0, 65536, (18, 26))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen_bit.png")
    Image.fromarray(_rgb(30, 30, seed + 4)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.uniform(0, 1, (21, 21)).astype(np.float32), "F").save(folder / "float.tif")
    (folder / "2019" / "summer").mkdir(parents=True)
    Image.fromarray(_rgb(64, 48, seed + 5)).save(folder / "2019" / "summer" / "nested.webp")
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / "notes.txt").write_text("not an image")


@pytest.fixture
def photos(tmp_path):
    for split, seed in (("train", 0), ("test", 100)):
        for k, c in enumerate(("beach", "forest")):
            _photos(tmp_path / split / c, seed + 10 * k)
    return tmp_path


def _load(root, **kw):
    return load_dataset(DatasetConfig(name="imagefolder", root=str(root), **kw))


def test_a_folder_of_mixed_sizes_and_modes_loads_first_try_with_image_size(photos):
    data = _load(photos, image_size=16)
    assert data.classes == ["beach", "forest"]
    assert tuple(data.train_x.shape) == (16, 3, 16, 16) and tuple(data.test_x.shape) == (16, 3, 16, 16)
    assert data.train_y.tolist() == [0] * 8 + [1] * 8
    again = _load(photos, image_size=24)  # another size: another cache, another identity
    assert tuple(again.train_x.shape[2:]) == (24, 24) and again.identity != data.identity
    assert {p.name for p in (photos / ".bench-cache").iterdir()} >= {"imagefolder-16px", "imagefolder-24px"}
    assert _load(photos, image_size=16).identity == data.identity  # read back from its cache


def test_without_image_size_a_mixed_folder_is_refused_with_what_to_set(photos):
    with pytest.raises(DataError, match="set dataset.image_size to resize every image") as err:
        _load(photos)
    assert "\n" not in str(err.value)


def _one(tmp_path, name: str, image: Image.Image, size: int = 16, **save) -> np.ndarray:
    """``image`` saved as ``name`` beside one plain image in each class folder, decoded at ``size``: (H, W, 3)."""
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 60, np.uint8)).save(tmp_path / split / c / "plain.png")
    image.save(tmp_path / "train" / "a" / name, **save)
    data = _load(tmp_path, image_size=size)
    names = sorted(p.name for p in (tmp_path / "train" / "a").iterdir())
    return data.train_x[names.index(name)].permute(1, 2, 0).numpy()


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (*RED, 255)  # left half opaque red, right half fully transparent (its colour hidden: black)
    out = _one(tmp_path, "t.png", Image.fromarray(rgba, "RGBA"))
    assert (out[:, :6] == RED).all() and (out[:, 10:] == 255).all()


def test_sixteen_bit_is_rescaled_from_its_range_not_clipped(tmp_path):
    deep = np.full((16, 16), 65535, np.uint16)
    deep[:, 8:] = 32768
    out = _one(tmp_path, "d.png", Image.fromarray(deep))
    assert (out[:, :6] == 255).all() and (out[:, 10:] == 128).all()


def test_float_images_are_read_as_zero_to_one_and_others_refused(tmp_path):
    out = _one(tmp_path, "f.tif", Image.fromarray(np.full((16, 16), 0.5, np.float32), "F"))
    assert (out == 128).all()
    Image.fromarray(np.full((16, 16), 200.0, np.float32), "F").save(tmp_path / "train" / "a" / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: a 32-bit float image with values in \[200, 200\]"):
        _load(tmp_path, image_size=16)


def test_exif_orientation_is_applied(tmp_path):
    """20 wide, 10 high, red left and blue right, tagged 'rotate 90 clockwise to display' (orientation 6):
    displayed 10 wide and 20 high, red on top; fitted to 16, the centre square is red above, blue below."""
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10], pixels[:, 10:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    out = _one(tmp_path, "o.jpg", Image.fromarray(pixels), exif=exif, quality=100)
    assert Image.open(tmp_path / "train" / "a" / "o.jpg").getexif()[0x0112] == 6
    top, bottom = out[2, 8].astype(int), out[13, 8].astype(int)
    assert top[0] > 150 and top[2] < 80 and bottom[2] > 150 and bottom[0] < 80, (top, bottom)


def test_the_centre_square_is_kept(tmp_path):
    """40 wide, 20 high: green 5-px bands at both ends, grey between; fitted to 16 the centre square is grey."""
    pixels = np.full((20, 40, 3), GREY, np.uint8)
    pixels[:, :5], pixels[:, 35:] = GREEN, GREEN
    out = _one(tmp_path, "c.png", Image.fromarray(pixels))
    assert np.abs(out.astype(int) - GREY).max() <= 2


def test_image_size_is_in_the_key_only_when_set(tmp_path):
    (tmp_path / "s.toml").write_text('name = "s"\n[dataset]\nname = "imagefolder"\n')
    assert "image_size" not in data_config(load_suite(tmp_path / "s.toml"))
    assert data_config(load_suite(tmp_path / "s.toml", ["dataset.image_size=64"]))["image_size"] == 64


@pytest.mark.slow
def test_a_photo_folder_runs_first_try_with_image_size(photos, tmp_path, capsys):
    from bench.cli import main

    from .conftest import store_overrides

    suite = tmp_path / "photos.toml"
    suite.write_text(
        f'name = "photos"\nseeds = [0]\nbudgets = ["full"]\nprotocols = ["linear"]\n[dataset]\nname = "imagefolder"\n'
        f'root = "{photos}"\nimage_size = 16\n[encoder]\nname = "small_cnn"\n[pretrain]\nepochs = 1\nbatch_size = 8\n'
        "[tasks.rotation]\n[tasks.random]\n"
    )
    rc = main(["run", str(suite), *[f"--set={s}" for s in store_overrides(tmp_path)]])
    out = capsys.readouterr().out
    assert rc == 0 and "data: imagefolder, 2 classes, 3 x 16 x 16 px; train 16, test 16" in out, out
    assert "rotation+linear budget=full seed=0: test_acc" in out
