"""A real multi-node Ray cluster on this machine, with the store on S3 (moto).

The module starts a Ray head and a worker node with ``ray start --block`` (each in
its own session and temp dir, token auth on, 1 CPU each) and a moto S3 server
on 127.0.0.1, then runs ``examples/cluster_job.py`` (train → forget → verify on an
``s3://`` store) as a separate driver process, as a ``ray job submit`` job, and with a
third node killed mid-training. The pytest process never joins the cluster (a process
can be connected to one Ray cluster only, and the session fixture may own one).

Which node ran which shard task comes from Ray's state API (task events carry the
node id), read by the job itself; the node ids of our ``ray start`` processes are read
off their raylets' command lines. Teardown SIGKILLs, by pid, every process of each
node's session and any process whose command line names the node's temp dir
(``ray stop`` would kill every Ray on the machine, other users' included).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sisa import SISAClassifier, Store
from sisa.store.io import uris as suris
from sisa.unlearn import repair, verify
from tests.helpers import LOCAL
from tests.store.test_s3 import S3_ENV_KEYS, moto_s3, s3_keys

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the local multi-node cluster reads Linux /proc")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
BUCKET = "sisa-cluster"
READY = "This command will now block forever"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> list[tuple[int, int, str, str]]:
    """``(pid, session id, state, cmdline)`` of every process we can see (``/proc``)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((pid, int(fields[3]), fields[0], cmd))
        except (OSError, IndexError, ValueError):
            continue
    return out


class RayNode:
    """One ``ray start --block`` and everything it spawns, in a session of its own.

    Ray puts each worker process in a process group of its own, but none leaves the
    session, so the session id (the ``ray start`` pid) names every process of the node.

    Parameters
    ----------
    name : str
        Short label; also the node's temp dir under the cluster root.
    args : list of str
        ``ray start`` arguments (``--block`` and ``--temp-dir`` are added).
    env : dict
        Environment of every process of the node (its Ray workers inherit it).
    root : Path
        Cluster root; the node's temp dir is ``root / name``.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.temp_dir = root / name
        self.temp_dir.mkdir()
        self.log = root / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*RAY, "start", "--block", "--temp-dir", str(self.temp_dir), *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=root)
        self.node_id: str | None = None

    @property
    def sid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until ``ray start`` reports the node up; then read its node id."""
        deadline = time.monotonic() + timeout
        while READY not in self.tail(100_000):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start ({self.name}) exited with "
                                   f"{self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ray start ({self.name}) not up after {timeout:.0f} s:\n"
                                   f"{self.tail()}")
            time.sleep(0.2)
        for _pid, sid, _state, cmd in _proc_table():
            if sid == self.sid and "/raylet/raylet " in cmd:
                self.node_id = cmd.split("--node_id=", 1)[1].split()[0]
        assert self.node_id, f"no raylet found for node {self.name}"

    def processes(self) -> list[tuple[int, str]]:
        """Live (non-zombie) processes of this node: its session, or naming its temp dir."""
        tag = str(self.temp_dir)
        return [(pid, cmd) for pid, sid, state, cmd in _proc_table()
                if state != "Z" and (sid == self.sid or tag in cmd)]

    def running(self, title: str) -> list[int]:
        """Pids of this node's Ray workers whose process title is ``title``."""
        return [pid for pid, cmd in self.processes() if cmd.startswith(title)]

    def kill(self) -> None:
        """SIGKILL every process of the node by pid (all at once, so none respawns
        another), reap ``ray start``, and repeat (bounded) until none is left."""
        deadline = time.monotonic() + 15
        while True:
            for pid, _cmd in self.processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.5)
            if not self.processes() or time.monotonic() > deadline:
                return
            time.sleep(0.2)


class LocalCluster:
    """A head (with dashboard, for the Jobs and state APIs) plus worker nodes, 1 CPU each."""

    def __init__(self, env: dict[str, str]) -> None:
        # Short root: Ray's AF_UNIX sockets live at <temp>/session_<date>_<pid>/sockets/...
        # and must stay under 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="sisa-rc-", dir="/tmp"))
        longest = self.root / "w9" / ("session_" + "x" * 37) / "sockets" / "plasma_store"
        assert len(str(longest)) < 100, longest
        self.env = env
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.nodes: list[RayNode] = []
        self.setup_seconds = 0.0

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def worker(self) -> RayNode:
        return self.nodes[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _common(self) -> list[str]:
        # Every port pinned to a free one: other Ray instances on this machine (tests of
        # other modules, other users) keep theirs. Ray resolves 127.0.0.1 to the
        # machine's own address for the node IP; everything stays on this host.
        return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--object-store-memory", str(100 * 2**20), "--disable-usage-stats",
                "--node-manager-port", str(free_port()),
                "--object-manager-port", str(free_port()),
                "--metrics-export-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port())]

    def start_head(self) -> RayNode:
        node = RayNode("h", ["--head", "--port", str(self.gcs_port), *self._common(),
                             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port),
                             "--ray-client-server-port", str(free_port())],
                       self.env, self.root)
        self.nodes.append(node)
        node.wait_ready()
        return node

    def add_worker(self) -> RayNode:
        node = RayNode(f"w{len(self.nodes)}", ["--address", self.address, *self._common()],
                       self.env, self.root)
        self.nodes.append(node)
        node.wait_ready()
        return node

    def teardown(self) -> None:
        for node in reversed(self.nodes):  # workers first, then the head
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    t0 = time.monotonic()
    with moto_s3(BUCKET) as s3env, pytest.MonkeyPatch.context() as mp:
        for k in S3_ENV_KEYS:
            mp.delenv(k, raising=False)
        for k, v in s3env.items():  # this process reads the stores too (local backend)
            mp.setenv(k, v)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_", "SISA_CRASH"))}
        env.update(s3env)
        env.update({
            # token auth, as on a real cluster; nothing is written to $HOME
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            # notice a dead node in ~2 s instead of ~15 s
            "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3",
        })
        c = LocalCluster(env)
        try:
            c.start_head()
            c.add_worker()
            c.setup_seconds = time.monotonic() - t0
            yield c
        finally:
            c.teardown()
    for uri in [u for u in suris._RESOLVED if u.startswith(f"s3://{BUCKET}")]:
        del suris._RESOLVED[uri]


def summary_of(stdout: str) -> dict:
    """The JSON summary: the last output line that parses as a JSON object."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON summary in the output:\n{stdout[-3000:]}")


def example(*args: str) -> list[str]:
    """``examples/cluster_job.py`` as a driver process of its own."""
    return [sys.executable, str(EXAMPLES / "cluster_job.py"), *args]


@pytest.mark.slow
@linux_only
def test_train_forget_verify_on_s3_runs_shard_tasks_on_both_nodes(cluster):
    store = f"s3://{BUCKET}/multinode"
    t0 = time.monotonic()
    proc = subprocess.run(
        example("--store", store, "--shards", "4", "--slices", "3", "--rows", "6000",
                "--wait-nodes", "2"),
        env={**cluster.env, "RAY_ADDRESS": cluster.address}, capture_output=True, text=True,
        timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = summary_of(proc.stdout)
    assert out["verify_ok"], out["verify_problems"]
    per_node = out["train_tasks_per_node"]
    # the proof: task events of this job's train_shard tasks name both nodes
    assert set(per_node) == {cluster.head.node_id, cluster.worker.node_id}, per_node
    assert all(set(states) == {"FINISHED"} for states in per_node.values()), (
        per_node, out["failed_attempts"])
    assert sum(s["FINISHED"] for s in per_node.values()) == 8 + len(out["receipt"]["affected"])
    # the store is complete on S3 and usable from another process without Ray
    st = Store.open(store)
    assert not st.unreferenced_files()
    keys = s3_keys(cluster.env, BUCKET, "multinode")
    assert sum(k.startswith("checkpoints/") for k in keys) == 4 * 3
    model = SISAClassifier.load(store)
    assert model.store_.fingerprint == out["receipt"]["fingerprint_after"]
    print(f"\nsetup {cluster.setup_seconds:.1f} s, driver {wall:.1f} s, "
          f"job times {out['seconds']}, tasks per node {per_node}")


@pytest.mark.slow
@linux_only
def test_ray_job_submit_walkthrough(cluster):
    """The README's ``ray job submit`` form, against the local head's Jobs API."""
    store = f"s3://{BUCKET}/job"
    # The README says `python cluster_job.py`; here the interpreter running the tests,
    # so a PATH that resolves `python` elsewhere cannot make the job miss sisa.
    cmd = [*RAY, "job", "submit", "--address", cluster.dashboard,
           "--submission-id", f"sisa-test-{uuid.uuid4().hex[:8]}",
           "--working-dir", str(EXAMPLES), "--",
           sys.executable, "cluster_job.py", "--store", store, "--shards", "2", "--slices", "2",
           "--rows", "2000", "--forget", "10"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    out = summary_of(proc.stdout)
    assert out["verify_ok"], out["verify_problems"]
    assert out["ray_address"]  # set by the Jobs API for the entrypoint
    assert out["driver_node"] == cluster.head.node_id  # job drivers run on the head
    assert set(out["train_tasks_per_node"]) <= {cluster.head.node_id, cluster.worker.node_id}
    assert SISAClassifier.load(store).store_.fingerprint == out["receipt"]["fingerprint_after"]
    print(f"\njob submit {wall:.1f} s, job times {out['seconds']}, "
          f"tasks per node {out['train_tasks_per_node']}")


@pytest.mark.slow
@linux_only
def test_ray_job_submit_sisa_cli(cluster, tmp_path):
    """The README's CLI form: ``ray job submit -- bash -c 'sisa train ... && sisa forget
    ...'``, the data file travelling in the job's working dir; verified from here."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sisa_cli = Path(sys.executable).with_name("sisa")
    if not sisa_cli.exists():
        pytest.skip("the sisa console script is not installed next to this Python")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    table = pa.table({**{f"f{i}": X[:, i] for i in range(4)},
                      "label": (X[:, 0] + X[:, 1] > 0).astype(np.int64)})
    (tmp_path / "job").mkdir()
    pq.write_table(table, tmp_path / "job" / "data.parquet")
    store = f"s3://{BUCKET}/cli"
    entry = (f"{sisa_cli} train data.parquet --label label --model sgd --shards 2 --slices 2 "
             f"--store {store} --quiet && {sisa_cli} forget {store} --id 3 --id 700 --quiet")
    # `ray job submit` shell-quotes the words after `--`: a chain needs its own shell
    cmd = [*RAY, "job", "submit", "--address", cluster.dashboard,
           "--working-dir", str(tmp_path / "job"), "--", "bash", "-c", entry]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0 and "succeeded" in proc.stdout + proc.stderr, \
        (proc.stdout + proc.stderr)[-4000:]
    st = Store.open(store)
    assert st.n_rows == 1498 and len(st.manifest.checkpoints) == 4
    report = verify(st, settings=LOCAL)  # retrains both shards here: same bytes
    assert report.ok, report.table()
    # and the auditor's form: `sisa verify` on the S3 store, from another process
    cli = subprocess.run([str(sisa_cli), "verify", store, "--backend", "local", "--json"],
                         env=cluster.env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout)["ok"] is True
    print(f"\nsisa CLI job {wall:.1f} s")


@pytest.mark.slow
@linux_only
def test_node_killed_mid_training_leaves_an_intact_store(cluster):
    """SIGKILL a whole worker node while it runs a shard task. Either Ray retries the
    task elsewhere and the job passes ``verify``, or the job fails with a clear message;
    either way the store opens, and ``verify`` passes (after ``repair`` if needed)."""
    victim = cluster.add_worker()
    store = f"s3://{BUCKET}/nodeloss"
    out_path, err_path = cluster.root / "nodeloss.out", cluster.root / "nodeloss.err"
    t0 = time.monotonic()
    with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:  # no pipe to fill
        job = subprocess.Popen(
            example("--store", store, "--model", "mlp", "--shards", "4", "--slices", "3",
                    "--rows", "16000", "--wait-nodes", "3"),
            env={**cluster.env, "RAY_ADDRESS": cluster.address}, stdout=out_f, stderr=err_f)
    try:
        deadline = time.monotonic() + 90
        while not victim.running("ray::train_shard"):
            assert job.poll() is None, "the job ended before the victim node ran a shard task"
            assert time.monotonic() < deadline, "the victim node never ran a shard task"
            time.sleep(0.05)
        killed_at = time.monotonic() - t0
        victim.kill()
        job.wait(timeout=150)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    wall = time.monotonic() - t0
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if job.returncode == 0:
        out = summary_of(stdout)
        assert out["verify_ok"], out["verify_problems"]
        states = out["train_tasks_per_node"].get(victim.node_id, {})
        assert set(states) - {"FINISHED"}, f"no attempt was lost on the victim: {states}"
        outcome = f"completed through retries; victim node attempts {states}"
    else:
        assert "Error" in stderr and ("shard" in stderr or "node" in stderr.lower()), \
            stderr[-4000:]
        outcome = f"failed with: {stderr.strip().splitlines()[-1]}"
    st = Store.open(store)  # manifest and every file it names are there
    report = verify(st, settings=LOCAL)  # an MLP retrained here: the same bytes as on Ray
    if not report.ok:
        repair(st, settings=LOCAL)
        report = verify(Store.open(store), settings=LOCAL)
    assert report.ok, report.table()
    print(f"\nnode killed at {killed_at:.1f} s, job {wall:.1f} s: {outcome}")


# ---------------------------------------------------------------------- configs, offline
CLUSTER = ROOT / "cluster"


def _load_yaml(path: Path) -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _ray_version_of_dockerfile() -> str:
    line = next(ln for ln in (CLUSTER / "Dockerfile").read_text().splitlines()
                if ln.startswith("FROM "))
    image = line.split()[1]
    assert image.startswith("rayproject/ray:") and image.endswith("-py311"), image
    return image.split(":", 1)[1].removesuffix("-py311")


@pytest.mark.parametrize("name", ["aws.yaml", "onprem.yaml"])
def test_launcher_configs_pass_rays_own_validation(name):
    """``ray up``'s own checks, offline: fill in the provider's defaults, then validate
    against Ray's JSON schema (private API, hence the guard)."""
    import copy

    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:  # moved or renamed in another Ray release
        pytest.skip(f"Ray's launcher validation API is not available: {exc}")
    (cfg,) = _load_yaml(CLUSTER / name)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    # a broken copy is rejected, so the check above is not vacuous
    broken = copy.deepcopy(cfg)
    broken["head_start_ray_command"] = broken.pop("head_start_ray_commands")  # a typo
    with pytest.raises(Exception, match="head_start_ray_command"):
        validate_config(prepare_config(broken))
    # sisa is installed on every node (image or pip), token auth is on, the token file
    # reaches the nodes, and the Ray version matches the image's
    version = _ray_version_of_dockerfile()
    if "docker" in cfg:
        assert cfg["docker"]["image"].split("/")[-1].startswith("sisa:")
        assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    else:
        assert any("$HOME/sisa[cluster]" in c and f"ray[default]=={version}" in c
                   for c in cfg["setup_commands"])
        assert all("RAY_AUTH_MODE=token" in cmd for cmd in
                   cfg["head_start_ray_commands"][1:] + cfg["worker_start_ray_commands"][1:])
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_kuberay_manifests_enable_token_auth_and_run_the_sisa_image():
    version = _ray_version_of_dockerfile()
    (cluster,) = _load_yaml(CLUSTER / "kuberay" / "raycluster.yaml")
    (job,) = _load_yaml(CLUSTER / "kuberay" / "rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["rayVersion"] == version
        assert tuple(int(v) for v in version.split(".")[:2]) >= (2, 52)  # authOptions needs it
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            (container,) = group["template"]["spec"]["containers"]
            assert container["image"].split("/")[-1].startswith("sisa:")
            assert container["resources"]["requests"] == container["resources"]["limits"]
            assert "rayStartParams" in group
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for worker in spec["workerGroupSpecs"]:
            assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    entry = job["spec"]["entrypoint"]
    assert "cluster_job.py" in entry and "--store s3://" in entry
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_dockerfile_and_readme_cover_the_walkthrough():
    docker = (CLUSTER / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-py311" in docker
    assert "RUN pip install '.[cluster]'" in docker
    assert "COPY --chown=ray:users sisa ./sisa" in docker
    readme = (CLUSTER / "README.md").read_text()
    for needle in ("ray up cluster/aws.yaml", "ray job submit", "-- sisa train",
                   "cluster_job.py", "sisa plan", "s3://", "ray get-auth-token --generate",
                   "kubectl apply -f cluster/kuberay/rayjob.yaml", "AWS_ENDPOINT_URL"):
        assert needle in readme, needle
