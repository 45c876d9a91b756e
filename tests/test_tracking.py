"""How a suite reads in the MLflow UI: run names, groups, links, params vs metrics, dataset input, descriptions,
superseded reports; and `bench report` on a suite that has no runs."""

import os
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config.load import load_suite
from bench.run.runner import Runner
from bench.store import ui
from bench.store.tracking import NOTE

from .conftest import ROOT, SMOKE

pytestmark = pytest.mark.slow


def experiment_runs(tmp_path, name="smoke"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client, exp, client.search_runs([exp.experiment_id], max_results=5000)


def test_a_sweep_reads_well_in_the_ui(smoke_store):
    tmp_path, store = smoke_store.folder, smoke_store.sets
    client, exp, found = experiment_runs(tmp_path)
    out = smoke_store.out
    assert ui.runs_url(ui.DEFAULT_UI, exp.experiment_id) in out  # bench run prints where the runs table is
    assert "rotation" in exp.tags[NOTE] and "scratch" in exp.tags[NOTE]  # the experiment says what it compares
    for key, value in ui.EXPERIMENT_TAGS.items():
        assert exp.tags[key] == value

    parent = next(r for r in found if r.data.tags["kind"] == "suite")
    assert "| rotation |" in parent.data.tags[NOTE] and parent.data.tags["report_status"] == "current"
    assert "range \\[" in parent.data.tags[NOTE] and "range [" not in parent.data.tags[NOTE]  # not a Markdown link
    (dataset,) = parent.inputs.dataset_inputs
    data = Runner(load_suite(SMOKE, store), SMOKE).data
    assert (dataset.dataset.name, dataset.dataset.digest) == ("synthetic", data.identity)

    pretrain = {r.data.tags["seed"]: r for r in found if r.data.tags["kind"] == "pretrain"}
    assert {s: r.info.run_name for s, r in pretrain.items()} == {
        "0": "rotation pretrain s0",
        "1": "rotation pretrain s1",
    }
    for r in pretrain.values():
        assert "pool_images" not in r.data.metrics and r.data.params["pool.pool"] == str(len(data.pool))
    evals = [r for r in found if r.data.tags["kind"] == "eval"]
    assert len(evals) == 2 * 3 * (3 + 2 + 1)  # seeds x budgets x (rotation 3 protocols, random 2, scratch 1)
    for r in evals:
        t = r.data.tags
        assert r.info.run_name == f"{t['task']} {t['protocol']} {t['budget']} s{t['seed']}"
        assert len(r.info.run_name) <= 28  # fits the UI's name column
        assert t["cell_group"] == f"{t['task']}/{t['protocol']}/{t['budget']}"
        assert t["device"] == "cpu" and t["mlflow.source.git.commit"]
        assert "n_labels" in r.data.params and "n_labels" not in r.data.metrics
        if t["task"] == "rotation":  # linked to the run that pretrained its encoder
            assert t["source_run_id"] == pretrain[t["seed"]].info.run_id
        else:
            assert "source_run_id" not in t


def test_an_extension_supersedes_the_old_report_and_removes_figures_it_no_longer_draws(tmp_path, store):
    """Extending a sweep by a seed: a new parent holds the report, the old one says it is superseded, and the
    seeds of one cell group are found together across both invocations."""
    out = tmp_path / "results" / "smoke"
    out.mkdir(parents=True)
    (out / "cd_diagram.png").write_bytes(b"from an earlier report with more seeds")
    (out / "parity.md").write_text("written by bench parity")
    small = [*store, "budgets=[8]", "protocols=['linear']", "tasks={rotation={head_hidden=16},random={}}"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in [*small, "seeds=[0, 1]"])]) == 0
    assert not (out / "cd_diagram.png").exists()  # 2 seeds draw no diagram: the old one must not stay
    assert (out / "parity.md").exists() and (out / "table.md").exists()
    extended = [*small, "seeds=[0, 1, 2]"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in extended)]) == 0
    client, exp, found = experiment_runs(tmp_path)
    parents = sorted((r for r in found if r.data.tags["kind"] == "suite"), key=lambda r: r.info.start_time)
    assert len(parents) == 2
    old, new = parents
    assert new.data.tags["report_status"] == "current" and "| rotation |" in new.data.tags[NOTE]
    assert old.data.tags["report_status"] == f"superseded by {new.info.run_id}"
    assert old.data.tags[NOTE].startswith("**Superseded**") and new.info.run_id in old.data.tags[NOTE]
    group = client.search_runs([exp.experiment_id], "tags.cell_group = 'rotation/linear/8'")
    assert sorted(r.data.tags["seed"] for r in group) == ["0", "1", "2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in group} == {old.info.run_id, new.info.run_id}


def test_a_report_of_an_edited_suite_leaves_the_finished_sweeps_record_as_it_was(tmp_path, store):
    small = [*store, "budgets=[8]", "protocols=['linear']", "tasks={random={}}"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in [*small, "seeds=[0]"])]) == 0
    client, _, found = experiment_runs(tmp_path)
    (done,) = [r for r in found if r.data.tags["kind"] == "suite"]
    files = sorted(f.path for f in client.list_artifacts(done.info.run_id, "report"))
    killed, writing = (tmp_path / "results" / "smoke" / f".table.md.{n}.tmp" for n in ("killed", "writing"))
    killed.write_text("half a table")
    writing.write_text("a report being written now")
    os.utime(killed, (time.time() - 3600,) * 2)
    assert main(["report", str(SMOKE), *(f"--set={s}" for s in [*small, "seeds=[0, 1]"])]) == 0  # not yet run
    assert not killed.exists() and writing.exists()  # a killed report's file goes, a live one's stays
    client, _, found = experiment_runs(tmp_path)
    parents = sorted((r for r in found if r.data.tags["kind"] == "suite"), key=lambda r: r.info.start_time)
    assert [p.info.run_id for p in parents][0] == done.info.run_id and len(parents) == 2
    old, new = parents
    assert old.data.tags[NOTE] == done.data.tags[NOTE] and old.data.tags["report_status"] == "current"
    assert sorted(f.path for f in client.list_artifacts(old.info.run_id, "report")) == files
    assert "PARTIAL" in new.data.tags[NOTE] and new.data.tags["report_status"] == "current"
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in [*small, "seeds=[0, 1]"])]) == 0  # now it is run
    client, _, found = experiment_runs(tmp_path)
    latest = max((r for r in found if r.data.tags["kind"] == "suite"), key=lambda r: r.info.start_time)
    assert "PARTIAL" not in latest.data.tags[NOTE] and latest.data.tags["report_status"] == "current"


def test_report_refuses_a_suite_without_runs_and_creates_nothing(tmp_path, store, capsys):
    assert main(["report", str(SMOKE), *(f"--set={s}" for s in store)]) == 2
    assert "no finished evaluation runs" in capsys.readouterr().out
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("smoke") is None
    assert not (tmp_path / "results" / "smoke").exists()


def test_suites_are_found_by_name_or_file(tmp_path, store, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["run", "smoke", "--dry-run", *(f"--set={s}" for s in store)]) == 0
    assert main(["report", "no_such_suite"]) == 2
    message = capsys.readouterr().out
    assert "no suite 'no_such_suite'" in message and "quick" in message and "smoke" in message
    mlflow.set_tracking_uri(None)


def test_a_moved_results_folder_keeps_writing_inside_itself(tmp_path, capsys):
    def run(folder, seeds):
        results = folder / "results"
        sets = [f"results_dir={str(results)!r}", f"tracking_uri='sqlite:///{results / 'mlflow.db'}'"]
        small = ["budgets=[8]", "protocols=['linear']", "tasks={rotation={}}", f"seeds={seeds}"]
        assert main(["run", str(SMOKE), *(f"--set={s}" for s in [*sets, *small])]) == 0
        return MlflowClient(f"sqlite:///{results / 'mlflow.db'}")

    run(tmp_path / "before", [0])
    (tmp_path / "before").rename(tmp_path / "after")
    capsys.readouterr()
    client = run(tmp_path / "after", [0, 1])  # seed 0 is done; seed 1 pretrains and reports
    assert "the results folder was moved" in capsys.readouterr().out
    assert not (tmp_path / "before").exists()  # nothing was written under the old path
    exp = client.get_experiment_by_name("smoke")
    new = (tmp_path / "after" / "results" / "mlartifacts").resolve().as_uri()
    assert exp.artifact_location.startswith(new)
    for r in client.search_runs([exp.experiment_id]):
        assert r.info.artifact_uri.startswith(new), r.info.artifact_uri
        assert client.list_artifacts(r.info.run_id), r.info.run_name  # each run's files are found where it says
