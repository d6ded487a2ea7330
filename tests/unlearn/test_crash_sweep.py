"""Crash sweep (issue "Trust", "What it must show"): ``kill -9`` at random moments of a
real ``sisa forget`` process, and of its recovery, then prove the store exact.

Each trial copies a trained template store, starts ``sisa forget`` in a new process and
sends it SIGKILL after a random delay drawn (seeded) over the measured duration of an
uninterrupted run, not at named crash points. It then recovers the way a user would,
alternating between rerunning the same forget and ``sisa repair`` (after a repair that
found nothing to finish, the request is resubmitted, as a client retries it); a good
share of the recoveries are themselves killed at random and recovered from with the
other method. Afterwards ``sisa verify`` must pass (exit 0), the audit log must hold
exactly one receipt, for the request, and every checkpoint must be byte-identical
(manifest sha256 per (shard, slice)) to a fresh fit on the data without the rows.

Processes: most trials run the CLI through a small runner that imports sisa, prints
``ready`` and then calls ``sisa.cli.main(argv)``, so the random delay is drawn over the
*work* (ready to exit) and not mostly over Python's imports; every fourth trial runs
``python -m sisa.cli`` itself, with the delay over its whole measured run.

``SISA_CRASH_KILLS`` (default 10) sets the number of trials, ``SISA_CRASH_SEED`` the seed,
``SISA_CRASH_REPORT`` a JSON file for the tally (docs/trust.md, "Crash sweep"). The
environment is keyless (no ``SISA_*``, ``HOME`` in a temp dir); every third trial runs on
a store signed with a key made by ``sisa keygen --out`` and passed as ``SISA_KEY_FILE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier, Store
from sisa.store.format import keys
from sisa.store.format.layout import INTENT
from sisa.unlearn import history
from tests.helpers import make_classification, tree_digest
from tests.helpers import run_cli as cli_in_process

KILLS = int(os.environ.get("SISA_CRASH_KILLS", "10"))
SEED = int(os.environ.get("SISA_CRASH_SEED", "20261201"))
N_ROWS, N_SHARDS, N_SLICES = 12_000, 3, 3
REQUESTS = (  # what each trial forgets (cycled): one row; rows in every shard; a batch
    [5],
    [3, 4000, 7777, 11_999],
    sorted(np.random.default_rng(7).choice(N_ROWS, 40, replace=False).tolist()),
)
RUNNER = ("import sys\n"
          "import sisa.cli, sisa.store, sisa.unlearn, sisa.estimators, sisa.engine.driver\n"
          "sys.stdout.write('ready\\n')\n"
          "sys.stdout.flush()\n"
          "sys.exit(sisa.cli.main(sys.argv[1:]))\n")
TIMEOUT = 600


# ---------------------------------------------------------------------------- helpers
def checkpoints(store: Path) -> dict[str, str]:
    m = Store.open(store, check_files=False).manifest
    return {k: v.sha256 for k, v in m.checkpoints.items()}


def fit(X: np.ndarray, y: np.ndarray, ids: np.ndarray, path: Path) -> SISAClassifier:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=N_SHARDS,
                              n_slices=N_SLICES, backend="local", store=str(path)).fit(
            X, y, sample_ids=ids)


def forget_argv(store: Path, ids: list[int]) -> list[str]:
    return ["forget", str(store), *[f"--id={i}" for i in ids], "--backend", "local", "--quiet"]


def repair_argv(store: Path) -> list[str]:
    return ["repair", str(store), "--backend", "local", "--quiet"]


@dataclass
class Run:
    """One process of the CLI: killed after ``delay`` seconds unless it finished first."""

    argv: list[str]
    env: dict[str, str]
    cold: bool = False
    delay: float | None = None  # None: run to completion
    killed: bool = False
    returncode: int | None = None
    stderr: str = ""
    work_s: float = 0.0  # ready (or start, when cold) to exit
    ready_s: float = 0.0  # start to ready: Python and sisa's imports

    def go(self) -> Run:
        cmd = ([sys.executable, "-m", "sisa.cli", *self.argv] if self.cold
               else [sys.executable, "-c", RUNNER, *self.argv])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            if not self.cold:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line == "ready\n", (line, proc.stderr.read() if proc.stderr else "")
                self.ready_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            if self.delay is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.delay)
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)  # only the process this trial started
                    self.killed = True
            _, err = proc.communicate(timeout=TIMEOUT)
            self.work_s = time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self.returncode, self.stderr = proc.returncode, err
        if self.killed and self.returncode != -signal.SIGKILL:
            # it exited between the last poll and the signal: the kill hit a finished run
            assert self.returncode == 0, (self.returncode, err[-2000:])
            self.killed = False
        return self


def store_state(store: Path, pristine: str) -> str:
    """Where a kill left the store: untouched, an intent, a pending forget, or done."""
    if tree_digest(store) == pristine:
        return "untouched"
    m = json.loads((store / "manifest.json").read_text())["manifest"]
    if m.get("pending"):
        return "pending"
    if (store / INTENT).exists():
        return "intent"
    return "committed" if m["audit"]["receipts"] else "other"


# ---------------------------------------------------------------------------- fixtures
@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    signed_env: dict[str, str]
    X: np.ndarray
    y: np.ndarray
    templates: dict[bool, Path]  # signed? -> trained store
    pristine: dict[bool, str]
    reference: dict[int, dict[str, str]]  # request index -> checkpoints of a fresh fit
    # measured durations of uninterrupted runs, newest last: per request the work of a
    # forget (ready to exit), and the start-up (start to ready) of any run; a trial draws
    # its delay over the median of the last few, so the scale follows the machine's load
    warm_s: dict[int, list[float]]
    import_s: list[float]
    results: list[dict] = field(default_factory=list)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("crash-sweep")
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SISA_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("SISA_")]:
            mp.delenv(k)
        mp.setenv("HOME", str(home))
        X, y = make_classification(N_ROWS, 8)
        ids = np.arange(N_ROWS)
        key_file = root / "owner.key"
        code, _, err = cli_in_process("keygen", "--out", str(key_file), "--quiet")
        assert code == 0, err
        templates = {False: root / "template", True: root / "template-signed"}
        fit(X, y, ids, templates[False])
        mp.setenv(keys.KEY_FILE_ENV, str(key_file))
        fit(X, y, ids, templates[True])
        mp.delenv(keys.KEY_FILE_ENV)
        assert Store.open(templates[True]).audit.signer == keys.load(key_file).public_hex
        assert Store.open(templates[False]).audit.signer is None
        # signing changes the manifest, not the models: one reference serves both
        assert checkpoints(templates[True]) == checkpoints(templates[False])
        reference = {}
        for i, U in enumerate(REQUESTS):
            keep = ~np.isin(ids, U)
            fit(X[keep], y[keep], ids[keep], root / f"ref{i}")
            reference[i] = checkpoints(root / f"ref{i}")
        # the duration of an uninterrupted run of each request (on copies)
        warm: dict[int, list[float]] = {}
        started: list[float] = []
        for i, U in enumerate(REQUESTS):
            shutil.copytree(templates[False], root / f"measure-{i}")
            r = Run(forget_argv(root / f"measure-{i}", U), env).go()
            assert r.returncode == 0 and checkpoints(root / f"measure-{i}") == reference[i]
            warm[i], started = [r.work_s], [*started, r.ready_s]
        s = Setup(root, env, {**env, keys.KEY_FILE_ENV: str(key_file)}, X, y, templates,
                  {k: tree_digest(v) for k, v in templates.items()}, reference, warm, started)
        yield s
    summary = summarize(s.results, s)
    print("\n" + json.dumps(summary, indent=1))
    if os.environ.get("SISA_CRASH_REPORT"):
        Path(os.environ["SISA_CRASH_REPORT"]).write_text(
            json.dumps({"summary": summary, "trials": s.results}, indent=1))


def summarize(results: list[dict], s: Setup) -> dict:
    primary = Counter(r["landed"] for r in results)
    return {
        "trials": len(results), "seed": SEED, "kills_sent": sum(r["kills"] for r in results),
        "forget_kills_landed_mid_run": sum(r["forget_killed"] for r in results),
        "forget_finished_before_kill": sum(not r["forget_killed"] for r in results),
        "where_forget_kills_left_the_store": dict(primary),
        "recoveries_killed": sum(r["recovery_killed"] for r in results),
        "recovery_kill_attempts_that_finished_first": sum(
            r["recovery_kill_attempted"] and not r["recovery_killed"] for r in results),
        "recovered_by": dict(Counter(r["recovery"] for r in results)),
        "resubmitted_after_repair": sum(r["resubmitted"] for r in results),
        "signed_trials": sum(r["signed"] for r in results),
        "cold_trials": sum(r["cold"] for r in results),
        "failures": [r for r in results if r.get("failure")],
        "measured_forget_work_s_median": {i: round(float(np.median(v)), 2)
                                          for i, v in s.warm_s.items()},
        "measured_startup_s_median": round(float(np.median(s.import_s)), 2),
        "delays_s": [r.get("delay_s") for r in results],
    }


# ---------------------------------------------------------------------------- the sweep
def recent(durations: list[float]) -> float:
    """The median of the last five measurements."""
    return float(np.median(durations[-5:]))


def receipt_count(store: Path) -> int:
    return len(history(Store.open(store, check_files=False)))


@pytest.mark.parametrize("trial", range(KILLS))
def test_kill_9_at_a_random_moment_then_recover_exactly(setup: Setup, trial: int) -> None:
    rng = np.random.default_rng([SEED, trial])
    signed = trial % 3 == 2
    cold = trial % 4 == 0
    method = ("rerun", "repair")[trial % 2]
    other = "repair" if method == "rerun" else "rerun"
    req = trial % len(REQUESTS)
    U = REQUESTS[req]
    env = setup.signed_env if signed else setup.env
    store = setup.root / f"trial-{trial:03d}"
    shutil.copytree(setup.templates[signed], store)
    pristine = setup.pristine[signed]
    record = {"trial": trial, "signed": signed, "cold": cold, "request": trial % len(REQUESTS),
              "started": time.strftime("%H:%M:%S"), "recovery": method, "kills": 0,
              "forget_killed": False, "landed": "not run", "resubmitted": False,
              "recovery_kill_attempted": False, "recovery_killed": False}
    setup.results.append(record)

    def run(argv: list[str], delay: float | None = None, cold_: bool = False) -> Run:
        r = Run(argv, env, cold=cold_, delay=delay).go()
        record["kills"] += r.killed
        if not cold_:
            setup.import_s.append(r.ready_s)
        if not r.killed and not cold_ and argv[0] == "forget" and record["landed"] == "not run":
            setup.warm_s[req].append(r.work_s)  # the whole forget ran, uninterrupted
        if not r.killed:
            assert r.returncode == 0, f"{argv[0]} exited {r.returncode}: {r.stderr[-2000:]}"
        return r

    def recover(how: str, delay: float | None = None) -> Run:
        if how == "rerun":
            return run(forget_argv(store, U), delay)
        r = run(repair_argv(store), delay)
        if not r.killed and receipt_count(store) == 0:
            # nothing durable to finish (killed before its intent): the client retries
            record["resubmitted"] = True
            again = run(forget_argv(store, U), None)
            setup.warm_s[req].append(again.work_s)  # a whole forget, uninterrupted
            return again
        return r

    try:
        # 1. the forget, killed at a random moment of its measured duration
        scale = recent(setup.warm_s[req]) + (recent(setup.import_s) if cold else 0.0)
        record["delay_s"] = round(float(rng.uniform(0, scale)), 3)
        first = run(forget_argv(store, U), record["delay_s"], cold_=cold)
        record["forget_killed"] = first.killed
        record["landed"] = store_state(store, pristine) if first.killed else "after-completion"
        # 2. recovery, itself killed at random in 40% of the trials, then the other method
        if first.killed:
            if rng.random() < 0.4:
                record["recovery_kill_attempted"] = True
                again = recover(method, float(rng.uniform(0, recent(setup.warm_s[req]))))
                record["recovery_killed"] = again.killed
                if again.killed:
                    record["recovery_left"] = store_state(store, pristine)
                    record["recovery"] = f"{method}, killed, then {other}"
                    recover(other)
            else:
                recover(method)
        else:
            record["recovery"] = "none needed"
        # 3. the proof: verify passes, one receipt, checkpoints of a fresh fit without U
        code, out, err = cli_in_process("verify", str(store), "--backend", "local", "--quiet")
        assert code == 0, f"verify failed after {record}: {out}{err}"
        receipts = history(Store.open(store))
        assert len(receipts) == 1, [r["request_id"] for r in receipts]
        assert receipts[0]["n_ids"] == len(U)
        assert checkpoints(store) == setup.reference[req]
        assert not Store.open(store).rows.locate(U)[0].any()
    except BaseException as exc:
        record["failure"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        raise
    shutil.rmtree(store)


def test_the_sweep_killed_what_it_claims(setup: Setup) -> None:
    """Runs last: the tally is consistent, and at least one forget was killed mid-run."""
    results = setup.results
    assert len(results) == KILLS
    assert sum(r["kills"] for r in results) == sum(r["forget_killed"] + r["recovery_killed"]
                                                   for r in results)
    if KILLS >= 6:
        assert sum(r["forget_killed"] for r in results) >= 1
        assert any(r["signed"] for r in results) and any(r["recovery"] == "repair"
                                                         for r in results)
