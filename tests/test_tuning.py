"""Optuna tuning: equal trial counts for every task and baseline, validation inside the budget only, resume."""

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

import bench.protocols.finetune
import bench.protocols.tuning
import bench.store.tracking
from bench.cli import main
from bench.data.datasets import Dataset

pytestmark = pytest.mark.slow

SUITE = """
name = "tune"
seeds = [0, 1]
budgets = [16, 48]
protocols = ["linear", "knn", "finetune"]
device = "cpu"
[dataset]
name = "synthetic"
synthetic = { classes = 4, train = 96, test = 64, size = 16 }
[encoder]
name = "small_cnn"
[linear]
max_iter = 20
[finetune]
epochs = 1
min_steps = 8
batch_size = 16
[tuning]
enabled = true
trials = 3
protocols = ["finetune", "linear", "knn"]
[tasks.scratch]
[tasks.random]
"""


def run(tmp_path: Path, *extra: str) -> int:
    path = tmp_path / "tune.toml"
    path.write_text(SUITE)
    store = [f"results_dir={str(tmp_path / 'results')!r}", f"tracking_uri='sqlite:///{tmp_path}/mlflow.db'"]
    return main(["run", str(path), *(f"--set={s}" for s in [*store, *extra])])


def studies(tmp_path: Path) -> dict[str, list]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "optuna.journal"))
    )
    return {s.study_name: storage.get_all_trials(s._study_id) for s in storage.get_all_studies()}


def test_every_task_and_baseline_gets_the_same_trials_and_test_labels_stay_unread(tmp_path, monkeypatch):
    reads_during_tuning, datasets = [], []
    original = bench.protocols.tuning.Tuner.params

    def watched(self, *args):
        before = self.data.test_label_reads
        out = original(self, *args)
        reads_during_tuning.append(self.data.test_label_reads - before)
        datasets.append(self.data)
        return out

    monkeypatch.setattr(bench.protocols.tuning.Tuner, "params", watched)
    assert run(tmp_path) == 0
    assert reads_during_tuning and set(reads_during_tuning) == {0}  # no study ever read a test label
    evals = 2 * 2 * (2 + 1)  # seeds x budgets x (random: linear, knn; scratch: finetune)
    assert datasets[0].test_label_reads == evals  # once per evaluation cell, to score it

    found = studies(tmp_path)
    assert len(found) == 2 * 3 * 2  # (random: linear, knn; scratch: finetune) x 2 budgets x 2 seeds
    done = {name: sum(t.state in bench.protocols.tuning.DONE for t in trials) for name, trials in found.items()}
    assert set(done.values()) == {3}  # the same number of finished trials for every task and baseline

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tune")
    trials = client.search_runs([exp.experiment_id], "tags.kind = 'trial'", max_results=1000)
    assert len(trials) == sum(len(t) for t in found.values())  # every trial is a nested MLflow run
    evals_runs = client.search_runs([exp.experiment_id], "tags.kind = 'eval'", max_results=1000)
    assert all(r.data.tags["hp_source"] == "tuned" for r in evals_runs)
    assert all(r.data.params["hp_source"].startswith("tuned (3 trials") for r in evals_runs)
    ft = [r for r in evals_runs if r.data.tags["protocol"] == "finetune"]
    assert all({"hp.lr", "hp.head_lr", "hp.weight_decay"} <= set(r.data.params) for r in ft)
    # each seed's cell used the choice of its own study
    for r in ft:
        assert f":seed{r.data.tags['seed']}:" in r.data.params["hp_source"]


def test_every_label_a_cell_depends_on_lies_inside_its_own_budget(tmp_path, monkeypatch):
    """The labels behind a tuned cell's number: its budget's, which it is fitted on, and those its study
    validated on. Both must be inside the budget of the cell's own seed."""
    import re

    from bench.data.budgets import budget_indices
    from bench.data.datasets import load_dataset

    study_labels: dict[str, set[int]] = {}  # study name -> the label indices of its folds
    cells: list[tuple] = []
    original_study, original_folds = bench.protocols.tuning.Tuner._study, bench.protocols.tuning.validation_folds
    drawn: list[set[int]] = []

    def folds(*a, **k):
        out = original_folds(*a, **k)
        drawn.append({int(i) for pair in out for part in pair for i in part})
        return out

    def study(self, *a, **k):
        drawn.clear()
        params, source = original_study(self, *a, **k)
        name = re.search(r"study (\S+),", source)
        if name:
            study_labels.setdefault(name.group(1), set()).update(*drawn)
        return params, source

    original_eval_run = bench.store.tracking.Tracker.eval_run

    def eval_run(self, cell, suite, settings, hparams, hp_source, idx):
        cells.append((cell, hp_source, {int(i) for i in idx}, suite))
        return original_eval_run(self, cell, suite, settings, hparams, hp_source, idx)

    monkeypatch.setattr(bench.protocols.tuning, "validation_folds", folds)
    monkeypatch.setattr(bench.protocols.tuning.Tuner, "_study", study)
    monkeypatch.setattr(bench.store.tracking.Tracker, "eval_run", eval_run)
    assert run(tmp_path, "tuning.protocols=['finetune', 'linear']", "tuning.trials=2") == 0
    tuned = [c for c in cells if c[1].startswith("tuned")]
    assert len(tuned) == 2 * 2 * 2  # (random linear, scratch finetune) x 2 budgets x 2 seeds
    labels = load_dataset(cells[0][3].dataset).train_y.numpy()
    for cell, source, fitted_on, _ in tuned:
        budget = set(budget_indices(labels, cell.budget, cell.seed).tolist())
        validated_on = study_labels[re.search(r"study (\S+),", source).group(1)]
        assert validated_on and fitted_on == budget
        assert validated_on <= budget, f"{cell.label}: its study validated on labels outside its budget"


def test_an_interrupted_study_resumes_from_its_storage(tmp_path, monkeypatch):
    args = ["seeds=[0]", "budgets=[48]", "tuning.protocols=['finetune']"]
    calls = {"n": 0}
    original = bench.protocols.finetune.finetune

    def dies_in_the_second_trial(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands in for a kill in the middle of trial 1
        return original(*a, **k)

    monkeypatch.setattr(bench.protocols.finetune, "finetune", dies_in_the_second_trial)
    assert run(tmp_path, *args) == 130  # interrupted: exit 130, resumable
    ((name, trials),) = studies(tmp_path).items()
    first = trials[0]
    assert first.state == optuna.trial.TrialState.COMPLETE and len(trials) == 2

    monkeypatch.setattr(bench.protocols.finetune, "finetune", original)
    assert run(tmp_path, *args) == 0
    ((name2, trials),) = studies(tmp_path).items()
    assert name2 == name
    assert sum(t.state in bench.protocols.tuning.DONE for t in trials) == 3  # only the missing trials were run
    assert trials[0].params == first.params and trials[0].value == first.value


def test_test_labels_are_counted():
    import torch

    data = Dataset("x", ["a"], torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.tensor([0, 1]), torch.zeros(1))
    assert data.test_label_reads == 0
    assert data.score(torch.tensor([0, 0])) == 0.5 and data.test_label_reads == 1


PRETRAINED = ["tasks.rotation={head_hidden=8}", "pretrain.epochs=1", "pretrain.batch_size=32", "budgets=[48]"]


def test_extending_a_sweep_to_another_seed_adds_that_seeds_studies_and_keeps_the_others(tmp_path):
    args = [*PRETRAINED, "tuning.protocols=['finetune']", "tuning.trials=2"]
    assert run(tmp_path, *args, "seeds=[1]") == 0
    first = studies(tmp_path)
    assert run(tmp_path, *args, "seeds=[0, 1]") == 0  # the sweep extended to another seed
    after = studies(tmp_path)
    assert set(first) < set(after) and all(":seed0:" in n for n in set(after) - set(first))
    assert {n: len(after[n]) for n in first} == {n: len(t) for n, t in first.items()}  # no new trials for seed 1


def test_a_kill_during_the_defaults_trial_is_redone_on_rerun(tmp_path, monkeypatch):
    args = ["seeds=[0]", "budgets=[48]", "tuning.protocols=['finetune']"]
    original = bench.protocols.finetune.finetune

    def killed(*a, **k):
        raise SystemExit(137)  # not caught by Optuna: the trial stays RUNNING, as after a SIGKILL

    monkeypatch.setattr(bench.protocols.finetune, "finetune", killed)
    with pytest.raises(SystemExit):
        run(tmp_path, *args)
    (trials,) = studies(tmp_path).values()
    assert [t.state for t in trials] == [optuna.trial.TrialState.RUNNING]
    defaults = trials[0].system_attrs["fixed_params"]

    monkeypatch.setattr(bench.protocols.finetune, "finetune", original)
    assert run(tmp_path, *args) == 0
    (trials,) = studies(tmp_path).values()
    assert sum(t.state in bench.protocols.tuning.DONE for t in trials) == 3
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the interrupted one, closed
    redone = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.params == defaults]
    assert redone  # the configured defaults were evaluated after all


def test_a_tuned_sweep_reproduces_exactly_in_a_fresh_store(tmp_path):
    """Same machine, same thread count: the studies choose the same settings and every number is the same."""
    args = ["seeds=[0]", "budgets=[48]", "tuning.protocols=['finetune', 'knn']"]
    found = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert run(tmp_path / name, *args) == 0
        found.append(tuned_cells(tmp_path / name))
    assert found[0] == found[1] and len(found[0]) == 3 and sum(bool(hp) for _, _, hp in found[0].values()) == 2


def tuned_cells(folder: Path) -> dict[str, tuple]:
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name("tune")
    evals = client.search_runs([exp.experiment_id], "tags.kind = 'eval'", max_results=1000)
    hp = {r.info.run_id: sorted((k, v) for k, v in r.data.params.items() if k.startswith("hp.")) for r in evals}
    return {
        r.data.tags["cell_key"]: (r.data.tags["seed"], r.data.metrics["test_acc"], hp[r.info.run_id]) for r in evals
    }


def test_a_seed_tuned_beside_other_seeds_has_what_a_fresh_run_of_it_has(tmp_path):
    """Seeds [0, 1] then [1, 2] in one store give seed 1 the settings and accuracy a fresh [1, 2] sweep gives it:
    a tuned cell's key holds its own study (the seed's, on its budget), never another seed's."""
    args = ["budgets=[16]", "protocols=['linear']", "tuning.protocols=['linear']", "tuning.trials=3"]
    args.append("tasks={random={}}")
    for folder, sweeps in (("extended", ["[0, 1]", "[1, 2]"]), ("fresh", ["[1, 2]"])):
        (tmp_path / folder).mkdir()
        for seeds in sweeps:
            assert run(tmp_path / folder, *args, f"seeds={seeds}") == 0
    extended, fresh = tuned_cells(tmp_path / "extended"), tuned_cells(tmp_path / "fresh")
    assert len(extended) == 3 and len(fresh) == 2 and all(hp for _, _, hp in fresh.values())
    assert {k: v for k, v in extended.items() if v[0] != "0"} == fresh  # seed 1 (and 2): one key, one result
