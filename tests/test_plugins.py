"""A user's own task, encoder and dataset (examples/bench-plugin-example): named in a suite or registered by entry
points, listed, run end to end and reported, keyed by their source (an edit renews their cells, a comment does
not), checked by `bench check-task`, and refused in one line naming the file when broken."""

import shutil
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config.load import load_suite
from bench.errors import ConfigError
from bench.registry import DATASETS, ENCODERS, TASKS
from bench.run.source import plugin_digest, plugin_modules

from .conftest import ROOT, store_overrides

EXAMPLE = ROOT / "examples" / "bench-plugin-example"
NAMES = [(TASKS, "channel_permutation"), (ENCODERS, "tiny_vgg"), (DATASETS, "shapes")]
FAST = [
    "seeds=[0]",
    "pretrain.epochs=1",
    "dataset.pool_size=256",
    "tasks={channel_permutation={class='bench_example.tasks:ChannelPermutation'}, random={}}",
]


def bench(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def sets(folder: Path, *extra: str) -> list[str]:
    return [f"--set={s}" for s in [*store_overrides(folder), *extra]]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the example package on sys.path, imported afresh; its entries unregistered afterwards."""
    folder = tmp_path / "pkg"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("results", "__pycache__"))
    monkeypatch.syspath_prepend(str(folder))
    forget = lambda: [sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == "bench_example"]  # noqa: E731
    forget()
    yield folder
    forget()
    for registry, name in NAMES:
        registry.unregister(name)


@pytest.mark.slow
def test_a_suite_names_its_own_task_encoder_and_dataset_and_they_run_and_are_reported(package, tmp_path, capsys):
    suite = package / "suite.toml"
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, *FAST))
    assert rc == 0, out
    assert "channel_permutation seed=0 epoch 1/1" in out and "channel_permutation+linear budget=30 seed=0" in out
    table = (tmp_path / "results" / "example_plugins" / "table.md").read_text()
    assert "| channel_permutation |" in table and "shapes" in table
    # the resolved suite holds the plug-ins under their names; `bench list` shows where they come from
    loaded = load_suite(suite)
    assert loaded.encoder.name == "tiny_vgg" and loaded.dataset.name == "shapes"
    assert bench(capsys, "list")[1].count("plug-in: bench_example") == 3


@pytest.mark.slow
def test_an_edited_plugin_renews_its_cells_and_a_comment_does_not(package, tmp_path, capsys):
    suite, source = package / "suite.toml", package / "bench_example" / "tasks.py"
    assert bench(capsys, "run", str(suite), *sets(tmp_path, *FAST))[0] == 0
    source.write_text(source.read_text() + "\n# a comment changes no number\n")
    out = bench(capsys, "run", str(suite), "--dry-run", *sets(tmp_path, *FAST))[1]
    assert "0 to run" in out, out
    source.write_text(source.read_text().replace("Linear(hidden, 6)", "Linear(hidden, 6, bias=False)"))
    out = bench(capsys, "run", str(suite), "--dry-run", "--verbose", *sets(tmp_path, *FAST))[1]
    renewed = [line for line in out.splitlines() if "todo" in line]
    assert len(renewed) == 3 and all("stale: parts changed (task.channel_permutation 1+" in x for x in renewed), out
    assert all("channel_permutation" in line for line in renewed)  # random's cells, on the same encoder, are kept


def test_a_plugin_is_its_module_and_the_modules_of_its_package_it_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mine"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "task.py").write_text("import numpy\nfrom .helpers import HIDDEN\nimport mine.sub.losses\n")
    (pkg / "helpers.py").write_text("from . import constants\nHIDDEN = constants.N\n")
    (pkg / "constants.py").write_text("N = 4\n")
    (pkg / "sub" / "losses.py").write_text("from ..constants import N\n")
    (pkg / "unrelated.py").write_text("Y = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = plugin_modules("mine.task")
    # the package itself (its __init__, named by `from . import constants`) is imported code too
    assert found == ("mine", "mine.constants", "mine.helpers", "mine.sub.losses", "mine.task")
    before = plugin_digest(found)
    (pkg / "constants.py").write_text("N = 5\n")  # an edit two imports away
    assert plugin_digest(found) != before


def test_entry_points_of_an_installed_package_register_its_entries(package, tmp_path, capsys, monkeypatch):
    """An installed distribution's entry points (a dist-info folder on sys.path, as pip writes it)."""
    dist = package / "bench_plugin_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-plugin-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[bench.tasks]\nchannel_permutation = bench_example.tasks:ChannelPermutation\n"
        "[bench.encoders]\ntiny_vgg = bench_example.encoders:TinyVGG\n"
        "[bench.datasets]\nshapes = bench_example.data:load_shapes\n"
    )
    for registry, _ in NAMES:
        monkeypatch.setattr(registry, "_found", False)  # look for entry points again
    assert all(name in registry and registry.is_plugin(name) for registry, name in NAMES)
    text = "\n".join(line for line in (package / "suite.toml").read_text().splitlines() if not line.startswith("class"))
    (package / "plain.toml").write_text(text)
    suite = load_suite(package / "plain.toml", ["seeds=[0]"])
    assert "channel_permutation" in suite.tasks and suite.encoder.name == "tiny_vgg"
    out = bench(capsys, "list")[1]
    assert "channel_permutation" in out and "plug-in: bench_example.tasks" in out


BROKEN = [
    ("syntax", "class Broken(:\n", "line 1: syntax error"),
    ("import", "import not_installed_anywhere\n", "No module named 'not_installed_anywhere'"),
    ("raises", "raise RuntimeError('bad setup')\n", "RuntimeError: bad setup"),
    ("not a task", "class Mine:\n    name = 'mine'\n", "is not a subclass of bench.tasks.base.Task"),
    (
        "other name",
        "from bench.tasks.rotation import Rotation\nclass Mine(Rotation):\n    name = 'theirs'\n",
        "the class sets name = 'theirs'",
    ),
]


@pytest.mark.parametrize("what, source, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_task_plugin_is_one_line_naming_its_file(tmp_path, monkeypatch, capsys, what, source, message):
    (tmp_path / "broken_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("broken_plugin", None)
    suite = tmp_path / "s.toml"
    suite.write_text('name = "b"\n[tasks.mine]\nclass = "broken_plugin:Mine"\n')
    rc, out = bench(capsys, "run", str(suite), "--dry-run")
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert rc == 2 and "Traceback" not in out and len(lines) == 1, out
    assert "key 'tasks.mine.class'" in lines[0] and message in lines[0], lines[0]
    if what in ("syntax", "raises", "not a task", "other name"):
        assert str(tmp_path / "broken_plugin.py") in lines[0]
    TASKS.unregister("theirs")
    sys.modules.pop("broken_plugin", None)


def test_a_builtin_name_or_a_bad_path_is_refused(tmp_path):
    for table, message in [
        ('[encoder]\nname = "resnet18"\nclass = "bench_example.encoders:TinyVGG"', "built into bench"),
        ('[encoder]\nname = "mine"\nclass = "no_colon_here"', "write it as 'module:attribute'"),
        ('[dataset]\nname = "mine"\nclass = "json:dumps_not"', "defines no 'dumps_not'"),
    ]:
        (tmp_path / "s.toml").write_text(f'name = "b"\n{table}\n')
        with pytest.raises(ConfigError, match=message):
            load_suite(tmp_path / "s.toml")


def test_a_dataset_plugin_with_wrong_arrays_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_data.py").write_text(
        "import numpy as np\n"
        "def load(cfg):\n"
        "    x = np.zeros((8, 3, 16, 16), np.float32)\n"
        "    return ['a', 'b'], x, np.arange(8) % 2, x, np.arange(8) % 2, None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = tmp_path / "s.toml"
    suite.write_text('name = "b"\nbudgets = ["full"]\n[dataset]\nname = "floats"\nclass = "bad_data:load"\n')
    rc, out = bench(capsys, "run", str(suite), "--dry-run", *sets(tmp_path))
    assert rc == 2 and "Traceback" not in out
    assert "dataset plug-in 'floats': train_x must be uint8 (N, 3, H, W) of one size, got float32" in out, out
    DATASETS.unregister("floats")


def test_check_task_passes_the_example_and_fails_a_task_that_cannot_learn(package, tmp_path, monkeypatch, capsys):
    rc, out = bench(capsys, "check-task", "bench_example.tasks:ChannelPermutation")
    assert rc == 0 and out.count("pass ") == 8 and "meets the contract" in out, out
    (tmp_path / "idle.py").write_text(
        '"""A task whose loss never reaches the encoder."""\n'
        "import torch\n"
        "from bench.tasks.base import Task\n"
        "class Idle(Task):\n"
        "    name = 'idle'\n"
        "    summary = 'a loss of a detached encoder'\n"
        "    reference = 'none'\n"
        "    min_image_size = 16\n"
        "    def __init__(self, encoder, cfg, image_size):\n"
        "        super().__init__(encoder, cfg, image_size)\n"
        "        self.w = torch.nn.Parameter(torch.ones(()))\n"
        "    def loss(self, images, gen):\n"
        "        return (self.encoder(images.float()).detach().mean() * self.w) ** 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, out = bench(capsys, "check-task", "idle:Idle")
    assert rc == 1 and "FAIL  learns: the encoder's weights did not change" in out, out
    assert "FAIL  image size: min_image_size = 16, but check_data accepts smaller images" not in out  # base check
    assert "1 check(s) failed" in out
    TASKS.unregister("idle")
