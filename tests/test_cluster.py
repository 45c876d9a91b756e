"""Scale-out: cells as Ray tasks, tracked by an MLflow server on PostgreSQL, tuned by Optuna on the same database.

The service tests start PostgreSQL, an MLflow server and a local Ray instance (2 CPUs). Ray binds every
interface and advertises the machine's own address, so they run inside a network namespace that has only
loopback (``unshare -n``; needs root): ``test_service_tests_in_a_loopback_only_namespace`` runs this file there
with BENCH_NETNS=1, and the tests marked ``netns`` are collected only inside it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config.load import load_suite
from bench.errors import ConfigError, ServiceError

from .conftest import ROOT, SMOKE

INSIDE = os.environ.get("BENCH_NETNS") == "1"
netns = pytest.mark.netns


# ------------------------------------------------------------------ outside: no services, no Ray


def test_execution_section_is_validated_data():
    suite = load_suite(SMOKE, ["execution.backend=ray", "execution.address=auto", "execution.pretrain.gpus=1"])
    assert (suite.execution.backend, suite.execution.address, suite.execution.pretrain.gpus) == ("ray", "auto", 1)
    assert load_suite(SMOKE).execution.backend == "local"
    with pytest.raises(ConfigError, match="execution.backend"):
        load_suite(SMOKE, ["execution.backend=slurm"])
    with pytest.raises(ConfigError, match="execution.address.*ray://host:port"):
        load_suite(SMOKE, ["execution.address=my cluster"])
    with pytest.raises(ConfigError, match="execution.evaluate.cpus"):
        load_suite(SMOKE, ["execution.evaluate.cpus=0"])


def test_a_file_store_on_a_cluster_of_several_machines_is_refused(tmp_path, store):
    from bench.cluster.executor import RayExecutor

    executor = RayExecutor()
    executor.suite = load_suite(SMOKE, [*store, "execution.backend=ray"])
    executor.refuse_local_stores(1)  # one machine: the file is everyone's
    with pytest.raises(ConfigError, match="2 machines.*bench server.*MLFLOW_TRACKING_URI=http://"):
        executor.refuse_local_stores(2)
    tuned = [*store, "execution.backend=ray", "tuning.enabled=true", "tracking_uri='http://127.0.0.1:1'"]
    executor.suite = load_suite(SMOKE, tuned)
    with pytest.raises(ConfigError, match="tuning.storage.*journal file.*2 machines"):
        executor.refuse_local_stores(2)


def test_the_ray_path_plans_the_local_keys_and_uses_no_private_names():
    """One identity for both executors (tuning parallelism aside), and the Ray path reaches the runner only
    through its public seam."""
    import ast

    import bench.cluster
    from bench.cluster.executor import RayExecutor
    from bench.run.identity import NOT_NUMERIC, plan_environment
    from bench.run.plan import build_plan

    local = load_suite(SMOKE, ["tuning.enabled=true", "tuning.protocols=['linear']"])
    ray = load_suite(SMOKE, ["tuning.enabled=true", "tuning.protocols=['linear']", "execution.backend=ray"])
    assert RayExecutor().environment(ray) == plan_environment(local)
    plan = lambda s: {c.label: c.key for c in build_plan(s, "d" * 16, plan_environment(s))}  # noqa: E731
    one_worker = load_suite(
        SMOKE,
        ["tuning.enabled=true", "tuning.protocols=['linear']", "execution.backend=ray", "execution.tuning_workers=1"],
    )
    assert plan(one_worker) == plan(local)
    parallel, serial = plan(ray), plan(local)  # two tuning workers by default: tuned cells are other cells
    changed = {label for label in serial if parallel[label] != serial[label]}
    assert changed and all("linear" in label for label in changed)
    private = [
        f"{path.name}: {n.module}.{a.name}"
        for path in sorted(Path(bench.cluster.__file__).parent.glob("*.py"))
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.ImportFrom)
        and (n.module or "").startswith("bench.")
        and not n.module.startswith("bench.cluster.")
        for a in n.names
        if a.name.startswith("_")
    ]
    assert not private
    assert "bench.cluster.*" in NOT_NUMERIC


def test_a_trial_runs_only_while_fewer_than_the_target_are_finished_running_or_waiting(tmp_path):
    import optuna

    from bench.cluster.studies import SharedTuner, Surplus, stop_on_surplus

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    claimed = SharedTuner._claimed(None, lambda trial: 0.5, 3)
    first, _second = study.ask(), study.ask()  # two running elsewhere
    study.optimize(claimed, n_trials=5, catch=(Surplus,), callbacks=[stop_on_surplus])
    third, fourth = study.trials[2:]  # the first claim ran; the second found 3 ahead, and the worker stopped
    assert third.state == optuna.trial.TrialState.COMPLETE and third.user_attrs["worker_trial"] == 2
    assert third.user_attrs["worker_pid"] == os.getpid()
    assert fourth.state == optuna.trial.TrialState.FAIL and fourth.user_attrs["surplus"]
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # a worker failed: room for one more
    study.enqueue_trial({"x": 1.0})  # numbered now, run later: it counts from now on
    raced = optuna.Trial(study, study._storage.create_new_trial(study._study_id))  # another worker's new trial
    with pytest.raises(Surplus):
        claimed(raced)  # second, third and the waiting trial are ahead of it
    study.tell(raced, state=optuna.trial.TrialState.FAIL)
    study.optimize(claimed, n_trials=1, catch=(Surplus,))  # the waiting trial itself runs
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and done[-1].number == 4


def test_trials_of_a_dead_worker_on_this_machine_are_failed_and_retried(tmp_path):
    import optuna

    from bench.cluster.studies import _retry_callback, fail_dead_trials
    from bench.store.lease import machine_id, process_start

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_started = process_start(dead.pid)
    dead.wait()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = [study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(4)]
    workers = [
        {"worker_machine": machine_id(), "worker_pid": dead.pid, "worker_started": dead_started},  # gone
        {"worker_machine": machine_id(), "worker_pid": os.getpid(), "worker_started": process_start(os.getpid())},
        {"worker_machine": "another-machine", "worker_pid": dead.pid, "worker_started": ""},  # its heartbeat decides
        None,  # asked, not yet recorded: only after the grace period
    ]
    for trial, worker in zip(trials, workers):
        for key, value in (worker or {}).items():
            trial.set_user_attr(key, value)
        if worker:
            trial.set_user_attr("worker_trial", trial.number)
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert fail_dead_trials(study, running, _retry_callback(1)) == [0]
    states = [t.state for t in study.get_trials()]
    assert states[0] == optuna.trial.TrialState.FAIL and states[1:4] == [optuna.trial.TrialState.RUNNING] * 3
    (retried,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert retried.params == trials[0].params or retried.system_attrs.get("fixed_params") == trials[0].params


def test_the_capacity_estimate_schedules_pretraining_before_its_evaluations():
    from bench.cluster.capacity import Unit, critical_path, schedule

    units = [
        Unit("pretrain a s0", 10.0, None),
        Unit("evaluate a s0", 4.0, "pretrain a s0"),
        Unit("pretrain a s1", 10.0, None),
        Unit("evaluate a s1", 4.0, "pretrain a s1"),
        Unit("evaluate scratch s0", 6.0, None),
    ]
    assert schedule(units, 1) == 34.0  # all the work, one unit after another
    assert schedule(units, 2) == 18.0  # both pretrainings first (longest path), then 6 beside 4 + 4
    assert schedule(units, 3) == critical_path(units) == 14.0  # enough workers: the longest chain
    assert schedule(units, 64) == 14.0


@pytest.mark.slow
def test_service_tests_in_a_loopback_only_namespace():
    if INSIDE:
        pytest.skip("already inside")
    pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    if os.geteuid() != 0 or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root for a network namespace (unshare -n)")
    from bench.cluster.server import pg_bin

    try:
        pg_bin("initdb")
    except ServiceError:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it: apt-get install postgresql)")
    inner = f"ip link set lo up && exec {sys.executable} -m pytest -q -x -p no:cacheprovider {__file__} -m netns"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner],
        cwd=ROOT,
        env=dict(os.environ, BENCH_NETNS="1", COLUMNS="250"),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    print(done.stdout[-20000:], done.stderr[-5000:])
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


# ------------------------------------------------------------------ inside the namespace


@pytest.fixture(scope="module")
def services():
    from bench.cluster.server import Services, free_port

    folder = Path(tempfile.mkdtemp(prefix="bench-services-"))  # under /tmp: PostgreSQL's user must reach it
    try:
        with Services(folder, pg_port=free_port(), port=free_port(), workers=2, durable=False).running() as s:
            yield s
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
    yield ray
    ray.shutdown()


def on_server(services, tmp_path, *extra: str) -> list[str]:
    return [
        f"--set=results_dir={str(tmp_path / 'results')!r}",
        f"--set=tracking_uri={services.tracking_uri!r}",
        "--set=execution.backend=ray",
        *(f"--set={e}" for e in extra),
    ]


def cells_of(uri: str, suite: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(suite)
    return [r for r in client.search_runs([exp.experiment_id], max_results=5000) if "cell_key" in r.data.tags]


def accuracies(runs) -> dict[str, float | None]:
    out = {}
    for r in runs:
        if r.info.status == "FINISHED":
            assert r.data.tags["cell_key"] not in out, "two FINISHED runs of one cell"
            out[r.data.tags["cell_key"]] = r.data.metrics.get("test_acc")
    return out


@netns
def test_smoke_suite_through_ray_into_the_server_matches_the_local_run(services, ray_instance, tmp_path, capfd):
    local_uri = f"sqlite:///{tmp_path / 'local.db'}"
    local = ["--set=results_dir=" + repr(str(tmp_path / "local")), f"--set=tracking_uri={local_uri!r}"]
    assert main(["run", str(SMOKE), *local]) == 0
    # two threads per task, as the local run on these 2 cores (CPU results depend on the thread count); each
    # task asks for both CPUs, so two tasks never share them
    whole = ["execution.threads=2", "execution.pretrain.cpus=2", "execution.evaluate.cpus=2"]
    assert main(["run", str(SMOKE), *on_server(services, tmp_path, *whole)]) == 0
    out = capfd.readouterr().out
    assert "ray: 1 node(s), 2 CPUs" in out and "pid=" in out  # workers' lines reach the driver
    ray_runs, local_runs = cells_of(services.tracking_uri, "smoke"), cells_of(local_uri, "smoke")
    ray_acc, local_acc = accuracies(ray_runs), accuracies(local_runs)
    assert len(local_acc) == 38 and ray_acc == local_acc  # same keys, bitwise the same test accuracies
    parent = {r.data.tags.get("mlflow.parentRunId") for r in ray_runs}
    assert len(parent) == 1 and None not in parent  # nested under the driver's parent run
    pre = [r for r in ray_runs if r.data.tags["kind"] == "pretrain"]
    client = MlflowClient(services.tracking_uri)
    for r in pre:  # per-epoch metrics and the checkpoint, through the server's artifact proxy
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [1, 2]
        assert r.data.tags["ray_worker_pid"] != str(os.getpid())
        assert any(a.path.endswith(".pt") for a in client.list_artifacts(r.info.run_id))
    assert (services.folder / "artifacts").is_dir()

    # no shared file system: another results folder (an empty checkpoint cache) evaluates a new budget from
    # the checkpoints in the artifact store; the finished cells are reused from the server
    elsewhere = tmp_path / "elsewhere"
    extra = on_server(services, elsewhere, *whole, "budgets=[8, 32, 64, 'full']", "seeds=[0]")
    assert main(["run", str(SMOKE), *extra]) == 0
    out = capfd.readouterr().out
    assert "0 pretraining" in out
    assert sorted(p.name for p in (elsewhere / "results" / "cache" / "checkpoints").glob("*.pt"))
    by_budget = [r for r in cells_of(services.tracking_uri, "smoke") if r.data.tags.get("budget") == "64"]
    assert {r.info.status for r in by_budget} == {"FINISHED"} and len(by_budget) == 6  # rotation 3, random 2, scratch 1


@netns
def test_a_worker_killed_mid_pretraining_is_retried_and_resumes(services, ray_instance, tmp_path, capfd):
    extra = ["pretrain.epochs=4", "pretrain.checkpoint_every_s=0", "seeds=[0]", "execution.threads=2"]
    extra += ["tasks={rotation={head_hidden=64}}", "protocols=['knn']", "budgets=['full']", "name='killed'"]
    killed: list[int] = []

    def kill_after_two_epochs():
        client = MlflowClient(services.tracking_uri)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            exp = client.get_experiment_by_name("killed")
            runs = client.search_runs([exp.experiment_id], "tags.kind = 'pretrain'") if exp else []
            for r in runs:
                if r.info.status == "RUNNING" and len(client.get_metric_history(r.info.run_id, "train_loss")) >= 2:
                    pid = int(r.data.tags["ray_worker_pid"])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_two_epochs)
    killer.start()
    assert main(["run", str(SMOKE), *on_server(services, tmp_path, *extra)]) == 0
    killer.join()
    out = capfd.readouterr().out
    assert killed, "the pretraining was never seen running"
    assert re.search(r"resuming at epoch \d+/\d+ from the state saved by suite 'killed' \(interrupted\)", out), out
    runs = cells_of(services.tracking_uri, "killed")
    pre = [r for r in runs if r.data.tags["kind"] == "pretrain"]
    assert sorted(r.info.status for r in pre) == ["FINISHED", "KILLED"]
    assert {r.data.tags["ray_worker_pid"] for r in pre if r.info.status == "KILLED"} == {str(killed[0])}
    assert len(accuracies(runs)) == 2  # the pretraining and the evaluation, once each

    # the resumed pretraining gives the weights of an uninterrupted one: the same test accuracy as a fresh run
    fresh = tmp_path / "fresh"
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    keep = [e for e in extra if not e.startswith("execution")]
    assert main(["run", str(SMOKE), f"--set=results_dir={str(fresh)!r}", f"--set=tracking_uri={uri!r}",
                 *(f"--set={e}" for e in keep)]) == 0  # fmt: skip
    assert accuracies(cells_of(uri, "killed")) == accuracies(runs)


@netns
def test_two_drivers_on_one_suite_one_runs_it_the_other_refuses(services, ray_instance, tmp_path, capfd):
    extra = on_server(services, tmp_path, "name='drivers'", "execution.address=auto", "seeds=[0]")
    cmd = [sys.executable, "-m", "bench", "run", str(SMOKE), *extra]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(services.tracking_uri)
    deadline = time.monotonic() + 120
    while client.get_experiment_by_name("lease:drivers") is None and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert main(["run", str(SMOKE), *extra]) == 3
    assert "suite 'drivers' is being run by process" in capfd.readouterr().out
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    assert "ray: 1 node(s)" in output  # joined the running instance (address auto)
    counts: dict[str, int] = {}
    for r in cells_of(services.tracking_uri, "drivers"):
        if r.info.status == "FINISHED":
            counts[r.data.tags["cell_key"]] = counts.get(r.data.tags["cell_key"], 0) + 1
    assert len(counts) == 19 and set(counts.values()) == {1}


@netns
def test_trials_of_a_study_spread_over_two_workers_with_exact_counts(services, ray_instance, tmp_path):
    import optuna

    extra = ["name='tuned'", "seeds=[0]", "budgets=[32]", "protocols=['finetune']", "tasks={scratch={}}"]
    extra += ["tuning.enabled=true", "tuning.trials=5", "tuning.prune=false", "execution.tuning_workers=2"]
    extra += [f"tuning.storage={services.optuna_url!r}", "execution.threads=1"]
    # trials of a few seconds each: a worker that starts a little later still finds trials left to run
    extra += ["finetune.min_steps=300", "finetune.patience=1000", "finetune.check_steps=100"]
    assert main(["run", str(SMOKE), *on_server(services, tmp_path, *extra)]) == 0
    storage = services.optuna_url
    (summary,) = [s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith("tuned:")]
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 5  # exactly the configured count, though two workers ran at once
    assert len({t.user_attrs["worker_pid"] for t in done}) == 2  # both workers ran trials
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    suite = load_suite(SMOKE)
    assert study.trials[0].params["lr"] == pytest.approx(
        suite.protocol("finetune").lr
    )  # trial 0: the configured values
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in done)
    runs = cells_of(services.tracking_uri, "tuned")
    (cell,) = [r for r in runs if r.info.status == "FINISHED"]
    assert cell.data.tags["hp_source"] == "tuned" and "tuned (5 trials" in cell.data.params["hp_source"]


@netns
def test_a_worker_whose_data_differs_refuses_naming_the_node_and_the_path(services, ray_instance, tmp_path):
    from bench.cluster.worker import run_cells
    from bench.run.identity import plan_environment

    suite = load_suite(SMOKE, [f"results_dir={str(tmp_path)!r}", f"tracking_uri={services.tracking_uri!r}"])
    job = {"id": "x", "suite": suite, "suite_path": str(SMOKE), "identity": "0123456789abcdef", "keys": []}
    job["environment"] = plan_environment(suite)
    with pytest.raises(ray_instance.exceptions.RayTaskError) as caught:
        ray_instance.get(ray_instance.remote(run_cells).remote(job, "scratch", 0, []))
    cause = caught.value.cause
    assert isinstance(cause, ServiceError)
    assert "node 127.0.0.1" in str(cause) and "is not the driver's" in str(cause) and "BENCH_DATA" in str(cause)
    # a worker whose libraries differ from what the driver planned with refuses too, naming what differs
    job = job | {"id": "y", "environment": job["environment"] | {"libraries": {"torch": "0.1"}}}
    with pytest.raises(ray_instance.exceptions.RayTaskError) as caught:
        ray_instance.get(ray_instance.remote(run_cells).remote(job, "scratch", 0, []))
    cause = caught.value.cause
    assert isinstance(cause, ServiceError) and "another environment than the driver planned" in str(cause)
    assert "libraries" in str(cause) and "install the driver's library versions" in str(cause)
