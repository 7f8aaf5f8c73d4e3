"""train.py --evolve: mutation (bounds, fixed keys, determinism, parent selection), evolve.csv (round trip, atomic
writes, bad files), continuing an evolution, failed and interrupted generations, hyp_evolve.yaml, the flag checks,
and one real two-generation evolution of the micro model."""

from __future__ import annotations

import csv
import errno
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import train
from tests.fixtures_train import train_hyp
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.training import evolve as E
from utils.training.train_options import TrainOptions

BASE = {
    "lr0": 0.01,
    "lrf": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.05,
    "nbs": 16,
    "box": 0.05,
    "iou_t": 0.2,
    "fl_gamma": 0.0,
    "hsv_h": 0.015,
    "mosaic": 1.0,
    "label_smoothing": 0.0,
    "warmup_min_iters": 10,
}
FIXED = ("nbs", "iou_t", "fl_gamma", "label_smoothing", "warmup_min_iters")  # not in GENES, or gain 0


def fake_train(calls: list, fail_on: dict | None = None):
    """A train_fn: fitness peaks at lr0 = 0.02 (so evolution has something to find); call k raises fail_on[k]."""

    def fn(hyp: dict) -> dict:
        calls.append(dict(hyp))
        err = (fail_on or {}).get(len(calls))
        if err is not None:
            raise err
        m = max(0.0, 1.0 - abs(hyp["lr0"] - 0.02) * 20)
        return {
            "precision": 0.5,
            "recall": 0.4,
            "mAP50": m,
            "mAP50-95": m / 2,
            "val_box_loss": 0.1,
            "val_obj_loss": 0.2,
            "val_cls_loss": 0.3,
            "save_dir": "ignored",
        }

    return fn


# ---------------------------------------------------------------------------------------------- mutation
def test_mutate_respects_bounds_and_keeps_fixed_keys():
    parent = {**BASE, "lr0": 0.09, "momentum": 0.61, "mosaic": 0.95}  # near bounds: clipping must happen
    rng = np.random.default_rng(0)
    children = [E.mutate([parent], [0.5], rng) for _ in range(300)]
    for c in children:
        assert set(c) == set(parent)
        assert all(c[k] == parent[k] for k in FIXED)
        assert any(c[k] != parent[k] for k in E.evolvable(parent))  # never an unchanged copy
        for k in E.evolvable(parent):
            g = E.GENES[k]
            assert g.low <= c[k] <= g.high, (k, c[k])
            if parent[k] > 0 and g.low < c[k] < g.high:  # an unclipped value moved by a factor in 0.3..3
                assert 0.3 - 1e-4 <= c[k] / parent[k] <= 3.0 + 1e-4
    lr0 = [c["lr0"] for c in children]
    assert max(lr0) == 0.1 and min([c["momentum"] for c in children]) == 0.6  # clipped to the bounds exactly
    assert max(c["mosaic"] for c in children) == 1.0
    changed = np.mean([c["lr0"] != parent["lr0"] for c in children])
    assert 0.6 < changed < 0.95  # mutation probability 0.8 per key (a few draws clip to the parent's own value)
    assert all(c["fl_gamma"] == 0.0 for c in children)  # gain 0: fixed even though it is in the table


def test_mutate_deterministic_with_seeded_rng():
    a = E.mutate([BASE], [0.3], np.random.default_rng(7))
    b = E.mutate([BASE], [0.3], np.random.default_rng(7))
    c = E.mutate([BASE], [0.3], np.random.default_rng(8))
    assert a == b and a != c
    assert all(v == float(f"{v:.5g}") for k, v in a.items() if k in E.evolvable(a))  # 5 significant digits


def test_parent_selection_picks_from_the_best_rows():
    parents = [{"lr0": float(i)} for i in range(8)]
    fit = [0.0, 0.7, 0.1, 0.6, 0.2, 0.5, 0.4, 0.3]  # parent i has fitness fit[i]
    rng = np.random.default_rng(0)
    picks = [E.select_parent(parents, fit, rng)["lr0"] for _ in range(4000)]
    freq = {i: picks.count(float(i)) / len(picks) for i in range(8)}
    # the top 5 are parents 1, 3, 5, 6, 7 (0.7 .. 0.3); weight = fitness - 0.3 (+1e-6): 0.4, 0.3, 0.2, 0.1, ~0
    assert freq[0] == freq[2] == freq[4] == 0
    for i, want in ((1, 0.4), (3, 0.3), (5, 0.2), (6, 0.1)):
        assert abs(freq[i] - want) < 0.03, (i, freq[i])
    assert freq[7] < 0.002
    with pytest.raises(ValueError, match="one fitness per parent"):
        E.select_parent(parents, fit[:3], rng)


def test_next_hyp_first_generation_is_base_and_failed_rows_are_no_parents():
    assert E.next_hyp([], BASE) == BASE
    good = E.Generation(1, {**BASE, "lr0": 0.003}, fitness=0.4)
    bad = E.Generation(2, {**BASE, "lr0": 0.09, "momentum": 0.97}, status="failed", error="NaN")
    for seed in range(20):  # each child comes from the good row: its untouched keys equal that row's
        child = E.next_hyp([good, bad], BASE, seed)
        assert 0.003 * 0.3 - 1e-9 <= child["lr0"] <= 0.003 * 3 + 1e-9
    assert E.next_hyp([good, bad], BASE, 5) == E.next_hyp([good, bad], BASE, 5)


# ---------------------------------------------------------------------------------------------- evolve.csv
def _rows() -> list[E.Generation]:
    return [
        E.Generation(1, dict(BASE), (0.5, 0.4, 0.3, 0.2, 0.1, 0.2, 0.3), 0.21),
        E.Generation(2, {**BASE, "lr0": 0.0123}, status="failed", error='loss, "NaN" at epoch 1'),
        E.Generation(3, {**BASE, "lr0": 0.00456789}, (0.6, 0.5, 0.4, 1 / 3, 0.1, 0.2, 0.3), 0.34),
    ]


def test_csv_round_trip_and_columns(tmp_path):
    path = tmp_path / "evolve.csv"
    rows = _rows()
    E.write_csv(path, rows)
    back = E.read_csv(path)
    assert back == rows  # exact numbers, statuses, the error text with its comma and quotes
    assert isinstance(back[0].hyp["nbs"], int) and isinstance(back[0].hyp["lr0"], float)
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header[:10] == [
        "generation",
        "status",
        "error",
        "metrics/precision",
        "metrics/recall",
        "metrics/mAP_0.5",
        "metrics/mAP_0.5:0.95",
        "val/box_loss",
        "val/obj_loss",
        "val/cls_loss",
    ]
    assert header[10:] == ["fitness", *BASE]


def test_csv_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "evolve.csv"
    E.write_csv(path, _rows()[:1])
    before = path.read_bytes()

    def disk_full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("utils.core.files.os.replace", disk_full)
    with pytest.raises(UserError, match="no space left"):
        E.write_csv(path, _rows())
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["evolve.csv"]  # no temp left


@pytest.mark.parametrize(
    "text,message",
    [
        ("a,b,c\n1,2,3\n", "not an evolve.csv"),
        (
            ",".join(E.csv_header(["lr0"])) + "\n1,ok,,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1\n",
            "line 2: 11 values for 12 columns",
        ),
        (",".join(E.csv_header(["lr0"])) + "\n1,ok,,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,x\n", "line 2"),
        (",".join(E.csv_header(["lr0"])) + "\n1,maybe,,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1\n", "not ok or failed"),
    ],
)
def test_bad_csv_is_one_line_user_error(tmp_path, text, message):
    path = tmp_path / "evolve.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as e:
        E.read_csv(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- the loop
def test_continue_runs_only_the_missing_generations(tmp_path):
    calls: list = []
    r1 = E.run_generations(fake_train(calls), BASE, tmp_path / "a", 1, seed=3, plot=False)
    assert r1.generations == 1 and calls == [BASE]  # generation 1 trains the given hyp unchanged
    first = (tmp_path / "a" / "evolve.csv").read_text().splitlines()[1]
    calls.clear()
    r2 = E.run_generations(fake_train(calls), BASE, tmp_path / "a", 2, seed=3, plot=False)
    assert len(calls) == 1 and r2.generations == 2
    rows = E.read_csv(tmp_path / "a" / "evolve.csv")
    assert [r.index for r in rows] == [1, 2] and rows[1].hyp == calls[0] != BASE
    assert (tmp_path / "a" / "evolve.csv").read_text().splitlines()[1] == first  # the old row untouched
    calls.clear()
    E.run_generations(fake_train(calls), BASE, tmp_path / "a", 2, seed=3, plot=False)
    assert calls == []  # already complete: nothing trains
    straight: list = []  # an evolution never interrupted makes the same child
    E.run_generations(fake_train(straight), BASE, tmp_path / "b", 2, seed=3, plot=False)
    assert straight[1] == rows[1].hyp


def test_failed_generation_is_recorded_and_the_loop_continues(tmp_path, caplog):
    calls: list = []
    crash = {2: RuntimeError("non-finite loss\ntraceback text")}
    r = E.run_generations(fake_train(calls, crash), BASE, tmp_path, 4, plot=False)
    rows = E.read_csv(tmp_path / "evolve.csv")
    assert [x.status for x in rows] == ["ok", "failed", "ok", "ok"] and len(calls) == 4
    assert rows[1].fitness == 0.0 and rows[1].error == "non-finite loss" and rows[1].metrics == (0.0,) * 7
    assert r.failed == 1 and r.generations == 4
    warn = [line for line in caplog.text.splitlines() if "generation 2 failed" in line]
    assert len(warn) == 1 and "non-finite loss" in warn[0] and "traceback text" not in caplog.text


def test_non_finite_metrics_fail_the_generation(tmp_path):
    calls: list = []
    good = fake_train(calls)

    def nan_second(hyp):
        res = good(hyp)
        return {**res, "mAP50": float("nan")} if len(calls) == 2 else res

    E.run_generations(nan_second, BASE, tmp_path, 2, plot=False)
    row = E.read_csv(tmp_path / "evolve.csv")[1]
    assert row.status == "failed" and "non-finite metrics" in row.error


def test_first_generation_failure_raises_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="bad data"):
        E.run_generations(fake_train([], {1: UserError("bad data")}), BASE, tmp_path, 3, plot=False)
    assert not (tmp_path / "evolve.csv").exists()


def test_keyboard_interrupt_keeps_the_csv(tmp_path, caplog):
    with pytest.raises(KeyboardInterrupt):
        E.run_generations(fake_train([], {3: KeyboardInterrupt()}), BASE, tmp_path, 5, plot=False)
    assert len(E.read_csv(tmp_path / "evolve.csv")) == 2
    assert (tmp_path / "hyp_evolve.yaml").is_file()
    assert f"--exist-ok --name {tmp_path.name} to continue" in caplog.text


def test_hyp_evolve_yaml_is_the_best_row_and_plot(tmp_path):
    rows = _rows()
    E.write_csv(tmp_path / "evolve.csv", rows)
    r = E.finish(tmp_path, E.read_csv(tmp_path / "evolve.csv"))
    text = (tmp_path / "hyp_evolve.yaml").read_text()
    assert yaml.safe_load(text) == rows[2].hyp == r.best_hyp == E.best_hyp(rows)
    assert text.startswith("# Hyperparameter evolution: 3 generations (1 failed), best generation 3 of 3: fitness 0.34")
    assert r.best_generation == 3 and r.best_fitness == 0.34 and r.failed == 1
    assert (tmp_path / "evolve.png").stat().st_size > 10_000
    assert E.best_generation([rows[1]]) is None and E.best_hyp([rows[1]]) == {}


def test_other_hyp_keys_than_the_csv_are_refused(tmp_path):
    E.write_csv(tmp_path / "evolve.csv", _rows())
    with pytest.raises(UserError, match=r"only in --hyp: \['extra'\]"):
        E.run_generations(fake_train([]), {**BASE, "extra": 1.0}, tmp_path, 5, plot=False)
    with pytest.raises(UserError, match="not numbers"):
        E.run_generations(fake_train([]), {**BASE, "lr0": "fast"}, tmp_path / "x", 1, plot=False)


# ---------------------------------------------------------------------------------------------- train.py
def test_evolve_flag_and_checks(monkeypatch):
    assert train.parse_opt([]).evolve == 0 and train.parse_opt(["--evolve", "4"]).evolve == 4
    assert train.parse_opt(["--evolve"]).evolve == 300  # bare --evolve, as YOLOv5
    with pytest.raises(UserError, match="--evolve -1: must be >= 0"):
        train.check_opts(TrainOptions(evolve=-1))
    with pytest.raises(UserError, match="cannot be combined with --resume — to continue an evolution") as e:
        train.check_opts(TrainOptions(evolve=3, resume=True))
    assert "--exist-ok --name" in str(e.value) and "\n" not in str(e.value)  # cli_main prints it as one line
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="torchrun"):
        train.check_opts(TrainOptions(evolve=3))
    train.check_opts(TrainOptions(evolve=0))  # a plain DDP run is still fine
    assert E.evolve_dir(TrainOptions().project, "exp", True) == ROOT / "runs" / "evolve" / "exp"
    kw = E.generation_options(TrainOptions(evolve=5, epochs=3, project="/p"), Path("/p/exp"))
    assert (kw["evolve"], kw["noval"], kw["nosave"], kw["noplots"], kw["epochs"]) == (0, True, True, True, 3)
    assert (kw["project"], kw["name"], kw["exist_ok"]) == ("/p/exp", "last_generation", True) and "hyp" not in kw


@pytest.mark.slow  # 20-30 s measured on the shared 2-core machine (two full runs + the plot)
def test_two_real_generations(shapes_yaml, micro_cfg_file, tmp_path):
    r = train.run(
        evolve=2,
        cfg=str(micro_cfg_file),
        data=str(shapes_yaml),
        hyp=train_hyp(),
        epochs=1,
        batch_size=32,
        imgsz=64,
        project=str(tmp_path),
        name="e",
        workers=0,
        device="cpu",
        noautoanchor=True,
    )
    d = tmp_path / "e"
    assert r["save_dir"] == str(d) and r["generations"] == 2 and r["failed"] == 0
    rows = E.read_csv(d / "evolve.csv")
    assert len(rows) == 2 and all(x.ok and math.isfinite(x.fitness) for x in rows)
    assert rows[0].hyp == {**train_hyp(), "label_smoothing": 0.0} and rows[1].hyp != rows[0].hyp
    assert yaml.safe_load((d / "hyp_evolve.yaml").read_text()) == r["best_hyp"]
    assert (d / "evolve.png").is_file()
    results = (d / "last_generation" / "results.csv").read_text().strip().splitlines()
    assert len(results) == 2  # header + the last generation's single epoch: each generation starts empty
    assert sorted(p.name for p in (d / "last_generation" / "weights").iterdir()) == ["best.pt", "last.pt"]
