"""A protocol is one file: a Protocol subclass defined here, outside bench, with its own settings table and search
space, is listed, selected and validated from a suite, planned under a key that holds its own version, run end to
end, tuned and reported, with no other file edited."""

import io

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from rich.console import Console

from bench.config.load import load_suite
from bench.config.settings import LogRange, Strict
from bench.errors import ConfigError
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.features import Fitted, cross_validated
from bench.registry import PROTOCOLS
from bench.run.plan import build_plan
from bench.run.runner import Runner

from .conftest import SMOKE

ONLY_RANDOM = "tasks={ random = {} }"  # no pretraining: the protocol is what is tested


class NearestMeanConfig(Strict):
    shrink: float = Field(0.0, ge=0, le=1)  # pulls each class mean toward the mean of all labelled features


class NearestMeanSpace(Strict):
    shrink: LogRange = (1e-3, 0.5)


def nearest_mean(feats: torch.Tensor, labels: torch.Tensor, classes: int, shrink: float):
    feats = F.normalize(feats, dim=1)
    means = torch.stack([feats[labels == c].mean(0) for c in range(classes)])
    means = (1 - shrink) * means + shrink * feats.mean(0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x, dim=1) @ means.T).argmax(1)

    return predict


@pytest.fixture
def plugin():
    """The toy protocol, registered while the test runs (defining the subclass registers it)."""

    class NearestMean(Protocol):
        name = "nearest_mean"
        summary = "frozen features, nearest class mean by cosine similarity"
        Config = NearestMeanConfig
        Space = NearestMeanSpace
        frozen = True

        @classmethod
        def fit(cls, settings: NearestMeanConfig, data: Labelled) -> Fitted:
            predict = nearest_mean(data.features, data.labels, data.classes, settings.shrink)
            return Fitted(predict, None, {"shrink": settings.shrink})

        @classmethod
        def score(cls, settings: NearestMeanConfig, data: Labelled, folds: list, watch: Watch) -> float:
            fit = lambda a, b: nearest_mean(a, b, data.classes, settings.shrink)  # noqa: E731
            return cross_validated(fit, data.features, data.labels, folds)

        @classmethod
        def suggest(cls, trial, space: NearestMeanSpace) -> dict:
            return {"shrink": trial.suggest_float("shrink", *space.shrink, log=True)}

        @classmethod
        def configured(cls, settings: NearestMeanConfig) -> dict:
            return {"shrink": settings.shrink}

    yield NearestMean
    PROTOCOLS.unregister("nearest_mean")
    assert "nearest_mean" not in PROTOCOLS


def test_the_protocol_is_listed_and_its_table_validated(plugin, capsys):
    from bench.cli import main

    assert main(["list"]) == 0
    assert "nearest_mean" in capsys.readouterr().out
    suite = load_suite(SMOKE, ["protocols=['nearest_mean']", "nearest_mean.shrink=0.25", ONLY_RANDOM])
    assert suite.protocol("nearest_mean").shrink == 0.25
    with pytest.raises(ConfigError, match=r"nearest_mean\.shrinkage.*allowed keys: shrink"):
        load_suite(SMOKE, ["protocols=['nearest_mean']", "nearest_mean.shrinkage=0.25"])
    with pytest.raises(ConfigError, match=r"nearest_mean\.shrink.*less than or equal to 1"):
        load_suite(SMOKE, ["protocols=['nearest_mean']", "nearest_mean.shrink=2"])


def test_an_unregistered_protocol_is_refused_naming_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown protocol 'nearest_mean'; registered: finetune, knn, linear"):
        load_suite(SMOKE, ["protocols=['nearest_mean']"])


def test_its_cells_carry_its_own_version(plugin, monkeypatch):
    suite = load_suite(SMOKE, ["protocols=['nearest_mean', 'linear']", ONLY_RANDOM])
    cells = [c for c in build_plan(suite, "d" * 16) if c.kind == "eval"]
    mine = {c.key for c in cells if c.protocol == "nearest_mean"}
    # its version, with the digest of its source (a plug-in has no lock)
    assert mine and all(c.identity["parts"]["protocol.nearest_mean"].startswith("1+") for c in cells if c.key in mine)
    assert all("protocol.nearest_mean" not in c.identity["parts"] for c in cells if c.key not in mine)
    monkeypatch.setattr(plugin, "version", 2)  # the protocol now computes something else
    again = [c for c in build_plan(suite, "d" * 16) if c.kind == "eval"]
    assert {c.key for c in again if c.protocol == "nearest_mean"}.isdisjoint(mine)
    assert {c.key for c in again if c.protocol == "linear"} == {c.key for c in cells if c.protocol == "linear"}


@pytest.mark.slow
def test_it_runs_is_tuned_and_is_reported(plugin, store, tmp_path):
    tuning = ["tuning.enabled=true", "tuning.protocols=['nearest_mean']", "tuning.trials=3"]
    args = [*store, "protocols=['nearest_mean', 'linear']", ONLY_RANDOM, "seeds=[0]", "budgets=[32, 'full']"]
    suite = load_suite(SMOKE, [*args, *tuning])
    printed = io.StringIO()
    outcome = Runner(suite, SMOKE, Console(file=printed, width=250)).run()
    assert outcome.failed == {} and outcome.ran == 4, printed.getvalue()
    runs = Runner(suite, SMOKE, Console(file=io.StringIO())).tracker.finished()
    evaluations = [r for r in runs.values() if r.data.tags.get("protocol") == "nearest_mean"]
    assert len(evaluations) == 2
    assert all(0.25 < r.data.metrics["test_acc"] <= 1 for r in evaluations)  # 4 classes: better than chance
    assert all(r.data.tags["hp_source"] == "tuned" for r in evaluations)
    assert all(r.data.params["hp_source"].startswith("tuned (3 trials") for r in evaluations)
    table = (tmp_path / "results" / "smoke" / "table.md").read_text()
    assert "nearest_mean" in table
