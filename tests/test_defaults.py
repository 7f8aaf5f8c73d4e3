"""One set of defaults per script: the CLI (parse_opt with no flags) gives exactly what run() uses when called
without keywords, key by key, for train, val, detect and export."""

from __future__ import annotations

import inspect
from dataclasses import asdict

import pytest

import detect
import export
import train
import val
from utils.core import args as A
from utils.core.files import ROOT
from utils.training.train_options import RUN_STATE, TrainOptions, flag_defaults


class Reached(Exception):
    """run() got as far as checking its options: the options it would use are captured."""


def _train_run_options(monkeypatch: pytest.MonkeyPatch, **kwargs) -> dict:
    """The options train.run(**kwargs) goes on to check (and then train with)."""
    seen = {}

    def capture(o: TrainOptions) -> dict:
        seen.update(asdict(o))
        raise Reached

    monkeypatch.setattr(train, "check_opts", capture)
    with pytest.raises(Reached):
        train.run(**kwargs)
    return seen


def test_train_cli_defaults_are_run_defaults(monkeypatch):
    cli = vars(train.parse_opt([]))
    used = _train_run_options(monkeypatch)
    assert set(cli) == set(used) - set(RUN_STATE)  # every run() keyword is a flag and every flag a keyword
    for k, v in cli.items():
        assert used[k] == v, k
    assert cli == flag_defaults()


def test_train_cli_values_reach_run(monkeypatch):
    """What main() hands to run() is the options train trains with (no second table in between)."""
    cli = train.parse_opt(["--epochs", "3", "--freeze", "2", "--resume"])
    used = _train_run_options(monkeypatch, **vars(cli))
    assert (used["epochs"], used["freeze"], used["resume"], used["batch_size"]) == (3, [2], True, 16)


def test_train_defaults_chosen():
    """Where run() and the CLI used to disagree, the value kept (the quick start was measured with 35 epochs)."""
    opt = TrainOptions()
    assert opt.epochs == 35 and opt.project == str(ROOT / "runs" / "train")


def _run_defaults(module) -> dict:
    return A.signature_defaults(module.run)


@pytest.mark.parametrize(
    "module,argv", [(val, []), (detect, []), (export, ["--weights", "w.pt"])], ids=["val", "detect", "export"]
)
def test_cli_defaults_are_run_defaults(module, argv):
    cli = vars(module.parse_opt(argv))
    run = _run_defaults(module)
    flags = set(cli) - {"weights"} if module is export else set(cli)  # export's --weights is required
    assert flags <= set(run), set(cli) - set(run)  # every flag is a run() keyword
    for k in flags:
        assert cli[k] == run[k], k


def test_val_defaults_chosen():
    run = _run_defaults(val)
    assert run["half"] is False and run["project"] == str(ROOT / "runs" / "val")
    assert set(run) - set(vars(val.parse_opt([]))) == {"model", "dataloader", "save_dir", "plots", "compute_loss"}


def test_detect_and_export_have_a_flag_for_every_keyword():
    for module, argv in ((detect, []), (export, ["--weights", "w.pt"])):
        assert set(vars(module.parse_opt(argv))) == set(inspect.signature(module.run).parameters), module.__name__


def test_parser_refuses_a_second_default():
    p = A.ArgParser(defaults={"epochs": 35})
    with pytest.raises(ValueError, match="--epochs: its default comes from run"):
        p.add_argument("--epochs", type=int, default=30)
    p = A.ArgParser(defaults={"epochs": 35})
    p.add_argument("--epochs", type=int)
    p.add_argument("--other", type=int, default=1)  # a flag run() does not know keeps its own default
    assert vars(p.parse_args([])) == {"epochs": 35, "other": 1}
