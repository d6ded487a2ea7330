"""CompareOptions: what ``sisa.compare.run`` compares, as one value the CLI builds."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sisa.compare import CompareOptions, run
from sisa.compare.cli import main as compare_main
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings

LOCAL = ExecutionSettings(backend="local")


def test_run_takes_one_options_value_and_where_it_runs_and_writes():
    params = inspect.signature(run).parameters
    assert list(params) == ["options", "settings", "out", "figures"]


def test_options_are_frozen_and_keep_sequences_as_tuples():
    opts = CompareOptions(n_models=8, scenarios=["random", "mislabeled"], fractions=[0.5])
    assert opts.scenarios == ("random", "mislabeled") and opts.fractions == (0.5,)
    assert opts.baselines == {"tune_models": None, "curve_models": None,
                              "curve_scenarios": None}
    assert opts.replace(n_models=16).n_models == 16 and opts.n_models == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.n_models = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="n_model"):  # a misspelt option is no silent default
        CompareOptions(n_model=8)  # type: ignore[call-arg]


@pytest.mark.parametrize("options, words", [
    ({"n_models": 8}, "options must be a CompareOptions, got dict"),
    (CompareOptions(n_models=3), "n_models must be an integer >= 4"),
    (CompareOptions(n_boot=0), "n_boot must be a positive integer"),
    (CompareOptions(scenarios=("outliers",)), "forget sets must be among"),
    (CompareOptions(fractions=(1.5,)), r"fractions must be in \(0, 1\)"),
    (CompareOptions(tune_models=2), "tune_models must be 0 \\(off\\) or an integer >= 4"),
])
def test_bad_options_are_one_line_before_anything_runs_or_is_written(tmp_path, options, words):
    with pytest.raises(InputError, match=words) as exc:
        run(options, settings=LOCAL, out=tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_the_cli_builds_the_options_from_its_flags(monkeypatch, tmp_path):
    seen = {}

    def spy(options, *, settings, out, figures=True):
        seen.update(options=options, settings=settings, out=out)
        raise InputError("stop here")  # the CLI's flags are what is under test

    monkeypatch.setattr("sisa.compare.head2head.run", spy)
    code = compare_main(["compare", "--models", "8", "--forget-sets", "random,mislabeled",
                         "--shards", "3", "--tune-models", "0", "--local", "--quiet",
                         "--out", str(tmp_path / "o")])
    assert code == 2
    opts = seen["options"]
    assert isinstance(opts, CompareOptions)
    assert (opts.n_models, opts.scenarios, opts.n_shards, opts.tune_models) == (
        8, ("random", "mislabeled"), 3, 0)
    assert seen["settings"] == ExecutionSettings(backend="local", progress=False)
    assert seen["out"] == tmp_path / "o"
