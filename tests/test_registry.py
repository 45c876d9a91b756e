"""The lazy registry and the error kinds: names known without importing an entry, an entry imported when first
looked up, plug-ins by object or by path, unknown names refused naming the registered ones; each error kind ends
a command with its exit code, and survives pickling (Ray sends a worker's error to the driver)."""

import pickle
import subprocess
import sys

import pytest
from rich.console import Console

from bench.cli import run_command
from bench.errors import (
    ConfigError,
    DataError,
    LeaseBusy,
    LeaseLost,
    OutputError,
    ServiceError,
    StoreError,
    UnknownName,
    UserError,
)
from bench.registry import DATASETS, ENCODERS, PROTOCOLS, TASKS, Registry


def test_names_are_known_without_importing_any_entry():
    probe = (
        "import sys\nfrom bench.registry import TASKS, PROTOCOLS\n"
        "names = TASKS.names() + PROTOCOLS.names()\n"
        "print(len(names), sorted(m for m in sys.modules if m.startswith(('bench.tasks.', 'bench.protocols.'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    count, imported = out.stdout.strip().split(" ", 1)
    assert int(count) == len(TASKS) + len(PROTOCOLS) and imported == "[]"


def test_an_entry_is_imported_when_first_looked_up():
    probe = (
        "import sys\nfrom bench.registry import TASKS\nTASKS['rotation']\n"
        "print(sorted(m for m in sys.modules if m.startswith('bench.tasks.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['bench.tasks.base', 'bench.tasks.rotation']"


def test_every_registry_lists_its_builtins():
    assert {"rotation", "simclr", "scratch", "random"} <= set(TASKS)
    assert PROTOCOLS.names() == ["finetune", "knn", "linear"]
    assert {"resnet18_cifar", "small_cnn"} <= set(ENCODERS) and ENCODERS["small_cnn"].summary
    assert DATASETS["cifar10"].classes == 10 and DATASETS["imagefolder"].classes is None


def test_plugins_by_object_by_path_and_by_decorator():
    registry = Registry("widget")
    registry.register("json", "json:dumps")  # imported when first used
    assert "json" in registry and registry.module_of("json") == "json"
    assert registry["json"]([1]) == "[1]"

    @registry.register("double")
    def double(x):
        return 2 * x

    registry.register("square", lambda x: x * x)
    assert registry.names() == ["double", "json", "square"] and registry["double"](3) == 6
    registry.unregister("square")
    assert "square" not in registry and len(registry) == 2


def test_an_unknown_name_is_a_user_error_that_lists_the_registered_ones():
    with pytest.raises(UnknownName) as err:
        TASKS["rotaton"]
    assert isinstance(err.value, ConfigError) and isinstance(err.value, KeyError)
    assert str(err.value).startswith("unknown task 'rotaton'; registered: barlowtwins, byol")
    with pytest.raises(KeyError):  # what a Mapping's callers expect
        ENCODERS["resnet99"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad key"), 2),
        (UnknownName("task", "x", ["a"]), 2),
        (DataError("no images"), 2),
        (OutputError("read-only"), 2),
        (StoreError("damaged"), 2),
        (ServiceError("no postgres"), 2),
        (LeaseBusy("held"), 3),
        (LeaseLost("taken over"), 1),
    ],
)
def test_each_kind_ends_a_command_with_its_exit_code_and_one_line(error, code, capsys):
    def fail():
        raise error

    assert isinstance(error, UserError) and error.exit_code == code
    assert run_command(fail, Console(width=250)) == code
    out = capsys.readouterr().out
    assert out.startswith("error: ") and out.count("\n") == 1 and str(error) in out
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)


def test_a_bug_is_not_a_user_error(capsys):
    def bug():
        raise ZeroDivisionError("division by zero")

    assert run_command(bug, Console(width=250)) == 1
    assert "ZeroDivisionError: division by zero (unexpected; the traceback is in" in capsys.readouterr().out
