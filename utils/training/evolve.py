"""Hyperparameter evolution (train.py --evolve N), YOLOv5's method.

Generation 1 trains with the given hyperparameters. Every later generation picks a parent among the five fittest
finished generations (weighted by fitness), multiplies each evolvable value by a random factor near 1 and clips it to
its bounds (GENES), then trains a full run with it. evolve.csv is the whole state: one row per finished generation,
rewritten atomically after each one, so a crash or Ctrl-C keeps every finished generation and rerunning the same
command on the same folder continues until N rows exist. The loop gets the training as a callable
(`train_fn(hyp) -> results dict`, train.py passes train.run): utils never import the scripts.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from utils.core.errors import UserError, first_line
from utils.core.files import ROOT, atomic_target, atomic_write_text, increment_path, user_writes
from utils.core.log import LOGGER, colorstr
from utils.evaluation.metrics import fitness as model_fitness
from utils.training.train_options import TrainOptions, flag_defaults
from utils.training.train_outputs import METRIC_COLUMNS, METRIC_KEYS

CSV_NAME, YAML_NAME, PLOT_NAME = "evolve.csv", "hyp_evolve.yaml", "evolve.png"
WORK_NAME = "last_generation"  # the folder each generation trains in (emptied first: one run's files at a time)
TOP_PARENTS = 5  # parents are drawn from this many fittest generations
MUTATION_PROB, SIGMA = 0.8, 0.2  # chance that a key mutates; spread of the random factor
FACTOR_RANGE = (0.3, 3.0)  # a single mutation never shrinks a value below 0.3x or grows it beyond 3x
LEAD_COLUMNS = ("generation", "status", "error")
PREFIX = colorstr("evolve: ")


@dataclass(frozen=True)
class Gene:
    """How one hyperparameter evolves: gain scales its mutation (0 = kept fixed), low/high clip the result."""

    gain: float
    low: float
    high: float

    def clip(self, value: float) -> float:
        """value within [low, high], to 5 significant digits (the csv and yaml stay readable)."""
        return float(f"{min(max(value, self.low), self.high):.5g}")


# Gains and bounds are YOLOv5's, except weight_decay's upper bound: YOLOv5's 0.001 suits SGD's L2 decay, while our
# AdamW hyps (hyp.shapes, hyp.convnext) use a decoupled 0.05 that the old bound would clip to nothing.
GENES: dict[str, Gene] = {
    "lr0": Gene(1.0, 1e-5, 1e-1),
    "lrf": Gene(1.0, 0.01, 1.0),
    "momentum": Gene(0.3, 0.6, 0.98),
    "weight_decay": Gene(1.0, 0.0, 0.1),
    "warmup_epochs": Gene(1.0, 0.0, 5.0),
    "warmup_momentum": Gene(1.0, 0.0, 0.95),
    "warmup_bias_lr": Gene(1.0, 0.0, 0.2),
    "box": Gene(1.0, 0.02, 0.2),
    "cls": Gene(1.0, 0.2, 4.0),
    "cls_pw": Gene(1.0, 0.5, 2.0),
    "obj": Gene(1.0, 0.2, 4.0),
    "obj_pw": Gene(1.0, 0.5, 2.0),
    "iou_t": Gene(0.0, 0.1, 0.7),
    "anchor_t": Gene(1.0, 2.0, 8.0),
    "fl_gamma": Gene(0.0, 0.0, 2.0),
    "hsv_h": Gene(1.0, 0.0, 0.1),
    "hsv_s": Gene(1.0, 0.0, 0.9),
    "hsv_v": Gene(1.0, 0.0, 0.9),
    "degrees": Gene(1.0, 0.0, 45.0),
    "translate": Gene(1.0, 0.0, 0.9),
    "scale": Gene(1.0, 0.0, 0.9),
    "shear": Gene(1.0, 0.0, 10.0),
    "perspective": Gene(0.0, 0.0, 0.001),
    "flipud": Gene(1.0, 0.0, 1.0),
    "fliplr": Gene(0.0, 0.0, 1.0),
    "mosaic": Gene(1.0, 0.0, 1.0),
    "mixup": Gene(1.0, 0.0, 1.0),
    "copy_paste": Gene(1.0, 0.0, 1.0),
}


@dataclass
class Generation:
    """One finished generation: a row of evolve.csv."""

    index: int  # 1-based; generation 1 trained the given hyperparameters
    hyp: dict[str, float]
    metrics: tuple[float, ...] = (0.0,) * len(METRIC_KEYS)  # METRIC_KEYS order
    fitness: float = 0.0
    status: str = "ok"  # "ok" or "failed" (an exception in training; fitness 0)
    error: str = ""  # why it failed, one line

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class EvolveResult:
    """What run_generations returns (train.run(evolve=N) returns it as a dict)."""

    save_dir: Path
    generations: int  # rows in evolve.csv
    failed: int
    best_generation: int | None
    best_fitness: float
    best_hyp: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = self.save_dir
        return {
            "save_dir": str(d),
            "evolve_csv": str(d / CSV_NAME),
            "hyp_evolve": str(d / YAML_NAME),
            "generations": self.generations,
            "failed": self.failed,
            "best_generation": self.best_generation,
            "best_fitness": self.best_fitness,
            "best_hyp": dict(self.best_hyp),
        }


# ---------------------------------------------------------------------------------------------- mutation
def evolvable(hyp: Mapping[str, Any], genes: Mapping[str, Gene] = GENES) -> list[str]:
    """The keys of hyp that mutate (in the table with a gain > 0), in hyp's order."""
    return [k for k in hyp if k in genes and genes[k].gain > 0]


def select_parent(
    parents: Sequence[Mapping[str, float]], fitness: Sequence[float], rng: np.random.Generator, top: int = TOP_PARENTS
) -> dict[str, float]:
    """One of the `top` fittest parents, drawn with weight fitness - (worst of them) + 1e-6, as YOLOv5 does."""
    if not parents or len(parents) != len(fitness):
        raise ValueError(f"need one fitness per parent, got {len(parents)} parents and {len(fitness)} values")
    f = np.asarray(fitness, dtype=float)
    best = np.argsort(-f, kind="stable")[:top]
    w = f[best] - f[best].min() + 1e-6  # the tiny floor keeps every weight positive when all are equal
    return dict(parents[int(best[rng.choice(len(best), p=w / w.sum())])])


def mutate(
    parents: Sequence[Mapping[str, float]],
    fitness: Sequence[float],
    rng: np.random.Generator,
    genes: Mapping[str, Gene] = GENES,
    prob: float = MUTATION_PROB,
    sigma: float = SIGMA,
) -> dict[str, float]:
    """A child of a parent drawn by select_parent: each evolvable value times 1 + gain * N(0,1) * u * sigma (with
    probability prob per key, u one uniform draw per child), the factor clipped to FACTOR_RANGE, the value to its
    Gene bounds. Keys not in genes (or with gain 0) are copied unchanged."""
    parent = select_parent(parents, fitness, rng)
    keys = evolvable(parent, genes)
    if not keys:
        raise UserError(f"no hyperparameter to evolve — the hyp needs some of {', '.join(genes)}")
    gains = np.array([genes[k].gain for k in keys])
    factors = np.ones(len(keys))
    while np.all(factors == 1.0):  # redraw until something changes: an unchanged child would waste a generation
        hit = rng.random(len(keys)) < prob
        step = gains * hit * rng.standard_normal(len(keys)) * rng.random() * sigma
        factors = np.clip(1.0 + step, *FACTOR_RANGE)
    child = dict(parent)
    for k, factor in zip(keys, factors):
        child[k] = genes[k].clip(float(parent[k]) * float(factor))
    return child


def next_hyp(rows: Sequence[Generation], base: Mapping[str, float], seed: int = 0) -> dict[str, float]:
    """The hyperparameters of generation len(rows) + 1: base for the first, else a mutated child of the finished
    ones. The random draws depend only on (seed, generation), so a continued evolution makes the same children as
    one that was never interrupted."""
    if not rows:
        return dict(base)
    good = [r for r in rows if r.ok]
    parents, fits = ([r.hyp for r in good], [r.fitness for r in good]) if good else ([dict(base)], [0.0])
    return mutate(parents, fits, np.random.default_rng([int(seed), len(rows) + 1]))


def check_hyp_values(hyp: Mapping[str, Any]) -> None:
    """Every value must be a number: evolve.csv holds numbers, and mutation multiplies them."""
    bad = [k for k, v in hyp.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise UserError(f"--evolve: hyperparameters {bad} are not numbers — fix the --hyp file")


# ---------------------------------------------------------------------------------------------- evolve.csv
def csv_header(hyp_keys: Sequence[str]) -> list[str]:
    return [*LEAD_COLUMNS, *METRIC_COLUMNS, "fitness", *hyp_keys]


def _number(text: str) -> float:
    """A csv cell as int when it is written as one (nbs: 16 must stay an int), else float."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def write_csv(path: str | Path, rows: Sequence[Generation]) -> None:
    """All rows, written to a temp file and moved into place: a crash mid-write leaves the previous file whole."""
    keys = list(rows[0].hyp) if rows else []
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(csv_header(keys))
    for r in rows:
        # repr-exact numbers (str of a float round-trips), so a continued run sees exactly the values trained
        out.writerow(
            [
                r.index,
                r.status,
                r.error,
                *map(repr, map(float, r.metrics)),
                repr(float(r.fitness)),
                *(r.hyp[k] for k in keys),
            ]
        )
    atomic_write_text(path, buf.getvalue())


def _parse_row(cells: list[str], header: list[str], where: str) -> Generation:
    if len(cells) != len(header):
        raise UserError(
            f"{where}: {len(cells)} values for {len(header)} columns — fix or delete the row, or start "
            f"a new evolution (another --name)"
        )
    n_lead, n_metrics = len(LEAD_COLUMNS), len(METRIC_COLUMNS)
    try:
        values = [_number(c) for c in cells[n_lead:]]
        index = int(cells[0])
    except ValueError as e:
        raise UserError(
            f"{where}: {first_line(e)} — fix or delete the row, or start a new evolution (another --name)"
        ) from None
    status = cells[1].strip()
    if status not in ("ok", "failed"):
        raise UserError(f"{where}: status {status!r} is not ok or failed — fix or delete the row")
    hyp = dict(zip(header[n_lead + n_metrics + 1 :], values[n_metrics + 1 :]))
    return Generation(
        index, hyp, tuple(float(v) for v in values[:n_metrics]), float(values[n_metrics]), status, cells[2]
    )


def read_csv(path: str | Path) -> list[Generation]:
    """The rows of an evolve.csv written by write_csv; a file that is not one is a UserError naming the line."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            lines = [row for row in csv.reader(f) if row]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read {path}: {first_line(e)} — fix or delete it, or start a new evolution (another --name)"
        ) from None
    if not lines:
        return []
    header = [h.strip() for h in lines[0]]
    lead = csv_header([])
    if header[: len(lead)] != lead or len(header) == len(lead):
        raise UserError(
            f"{path}: not an evolve.csv of this code (header {header[:4]}...) — start a new evolution (another --name)"
        )
    return [_parse_row(cells, header, f"{path} line {i + 2}") for i, cells in enumerate(lines[1:])]


def check_same_keys(rows: Sequence[Generation], hyp: Mapping[str, Any], path: Path) -> None:
    """A continued evolution must evolve the same hyperparameters the csv holds."""
    if not rows:
        return
    have, want = set(rows[0].hyp), set(hyp)
    if have != want:
        raise UserError(
            f"{path} holds other hyperparameters than --hyp (only in the csv: {sorted(have - want)}, "
            f"only in --hyp: {sorted(want - have)}) — continue with the same --hyp, or start a new "
            f"evolution (another --name)"
        )


# ---------------------------------------------------------------------------------------------- best, yaml, plot
def best_generation(rows: Sequence[Generation]) -> Generation | None:
    """The fittest finished generation (the earliest of equals), None when none finished."""
    good = [r for r in rows if r.ok]
    return max(good, key=lambda r: r.fitness) if good else None  # max keeps the first of equal values


def best_hyp(rows: Sequence[Generation]) -> dict[str, float]:
    best = best_generation(rows)
    return dict(best.hyp) if best is not None else {}


def save_best_yaml(path: str | Path, rows: Sequence[Generation]) -> None:
    """hyp_evolve.yaml: the best generation's hyperparameters, under a comment saying where they come from."""
    best = best_generation(rows)
    if best is None:
        return
    failed = sum(not r.ok for r in rows)
    metrics = ", ".join(f"{k} {v:.5g}" for k, v in zip(METRIC_KEYS[:4], best.metrics))
    head = (
        f"# Hyperparameter evolution: {len(rows)} generations ({failed} failed), best generation "
        f"{best.index} of {len(rows)}: fitness {best.fitness:.5g}\n# {metrics}\n"
        f"# Train with it: python train.py --hyp {path}\n"
    )
    atomic_write_text(path, head + yaml.safe_dump(best.hyp, sort_keys=False))


def plot_evolve(path: str | Path, rows: Sequence[Generation]) -> Path | None:
    """evolve.png: per evolved key, value vs fitness of every generation (colour = generation, failed ones as red
    crosses at 0), the best one marked with a black +. Written atomically; returns the path (None: no rows)."""
    best = best_generation(rows)
    keys = evolvable(rows[0].hyp) if rows else []
    if best is None or not keys:
        return None
    import matplotlib  # heavy: pyplot takes ~0.5 s to import and only this chart needs it here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: see above

    cols = min(5, len(keys))
    n_rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.6 * cols, 2.2 * n_rows), squeeze=False, tight_layout=True)
    fit = np.array([r.fitness for r in rows])
    gen = np.array([r.index for r in rows])
    failed = np.array([not r.ok for r in rows])
    for ax, k in zip(axes.flat, keys):
        v = np.array([float(r.hyp[k]) for r in rows])
        ax.scatter(v[~failed], fit[~failed], c=gen[~failed], cmap="viridis", s=14, alpha=0.8, edgecolors="none")
        ax.scatter(v[failed], fit[failed], c="red", marker="x", s=14)
        ax.plot(float(best.hyp[k]), best.fitness, "k+", markersize=14)
        ax.set_title(f"{k} = {float(best.hyp[k]):.3g}", fontsize=9)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    return _save_figure(fig, Path(path), plt)


def _save_figure(fig: Any, path: Path, plt: Any) -> Path:
    try:
        with user_writes(path), atomic_target(path, keep_suffix=True) as tmp:  # savefig picks the format by suffix
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the loop
def train_generation(
    train_fn: Callable[[dict], Mapping[str, Any]], hyp: dict[str, float], index: int, must_succeed: bool
) -> Generation:
    """Train one generation. A failure (an exception in training, non-finite metrics) becomes a `failed` row with
    fitness 0 — unless must_succeed (generation 1, the given hyp: then the set-up itself is broken)."""
    try:
        results = train_fn(dict(hyp))
        metrics = tuple(float(results[k]) for k in METRIC_KEYS)
        fi = float(model_fitness(np.array(metrics)))
        if not all(math.isfinite(x) for x in (*metrics, fi)):
            raise ValueError(f"non-finite metrics {[round(x, 4) for x in metrics]}")
    except Exception as e:
        if must_succeed:
            raise
        LOGGER.warning(
            f"WARNING ⚠️ {PREFIX}generation {index} failed: {first_line(e)} — recorded with fitness 0, continuing"
        )
        LOGGER.debug("evolve generation failure", exc_info=True)  # the traceback, for --verbose logging set-ups
        return Generation(index, dict(hyp), status="failed", error=first_line(e))
    return Generation(index, dict(hyp), metrics, fi)


def finish(save_dir: Path, rows: Sequence[Generation], plot: bool = True) -> EvolveResult:
    """hyp_evolve.yaml, evolve.png (a plot error is a warning: the csv and yaml are what matter) and the summary."""
    save_best_yaml(save_dir / YAML_NAME, rows)
    if plot:
        try:
            plot_evolve(save_dir / PLOT_NAME, rows)
        except Exception as e:
            LOGGER.warning(f"WARNING ⚠️ {PREFIX}{PLOT_NAME} not written: {first_line(e)}")
    best = best_generation(rows)
    return EvolveResult(
        save_dir,
        len(rows),
        sum(not r.ok for r in rows),
        best.index if best else None,
        best.fitness if best else 0.0,
        dict(best.hyp) if best else {},
    )


def _log_generation(row: Generation, rows: Sequence[Generation], total: int) -> None:
    best = best_generation(rows)
    what = (
        f"fitness {row.fitness:.5g} (mAP50 {row.metrics[2]:.4g}, mAP50-95 {row.metrics[3]:.4g})" if row.ok else "failed"
    )
    LOGGER.info(
        f"{PREFIX}generation {row.index}/{total} {what}; best so far: generation "
        f"{best.index if best else '-'}, fitness {best.fitness if best else 0:.5g}"
    )


def run_generations(
    train_fn: Callable[[dict], Mapping[str, Any]],
    base_hyp: Mapping[str, Any],
    save_dir: str | Path,
    generations: int,
    seed: int = 0,
    plot: bool = True,
) -> EvolveResult:
    """Train generations until save_dir/evolve.csv holds `generations` rows (continuing the rows already there).
    Each generation trains in save_dir/last_generation/ (emptied first). Ctrl-C keeps the finished rows, writes
    hyp_evolve.yaml and evolve.png (plot=False: no png), and re-raises."""
    save_dir = Path(save_dir)
    check_hyp_values(base_hyp)
    csv_path = save_dir / CSV_NAME
    rows = read_csv(csv_path) if csv_path.is_file() else []
    check_same_keys(rows, base_hyp, csv_path)
    with user_writes(save_dir):
        save_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        LOGGER.info(f"{PREFIX}continuing {csv_path}: {len(rows)} of {generations} generations done")
    try:
        while len(rows) < generations:
            hyp = next_hyp(rows, dict(base_hyp), seed)
            shutil.rmtree(save_dir / WORK_NAME, ignore_errors=True)  # results.csv appends: start each run empty
            row = train_generation(train_fn, hyp, len(rows) + 1, must_succeed=not rows)
            rows.append(row)
            write_csv(csv_path, rows)
            save_best_yaml(save_dir / YAML_NAME, rows)  # after every generation: a killed run still has it
            _log_generation(row, rows, generations)
    except KeyboardInterrupt:
        LOGGER.warning(
            f"WARNING ⚠️ {PREFIX}interrupted after {len(rows)} of {generations} generations; {csv_path} "
            f"keeps them — rerun the same command with --exist-ok --name {save_dir.name} to continue"
        )
        finish(save_dir, rows, plot)
        raise
    result = finish(save_dir, rows, plot)
    LOGGER.info(
        f"{PREFIX}{len(rows)} generations in {colorstr('bold', save_dir)}: best generation "
        f"{result.best_generation}, fitness {result.best_fitness:.5g}\n"
        f"Train with it: python train.py --hyp {save_dir / YAML_NAME}"
    )
    return result


# ---------------------------------------------------------------------------------------------- train.py's side
def evolve_dir(project: str, name: str, exist_ok: bool) -> Path:
    """The evolution's folder: runs/evolve/<name> when --project is train's default (as YOLOv5), else
    <project>/<name>; incremented (exp2, ...) unless exist_ok, which is how an evolution is continued."""
    root = ROOT / "runs" / "evolve" if str(project) == str(TrainOptions().project) else Path(project)
    return increment_path(root / name, exist_ok=exist_ok)


def generation_options(opt: TrainOptions, save_dir: Path) -> dict[str, Any]:
    """train.run keywords for every generation: the evolution's own options, validating and saving only the final
    epoch and drawing no plots (YOLOv5's evolve settings), in save_dir/last_generation/. hyp is added per call."""
    kwargs = {k: getattr(opt, k) for k in flag_defaults() if k != "hyp"}
    kwargs.update(evolve=0, noval=True, nosave=True, noplots=True, project=str(save_dir), name=WORK_NAME, exist_ok=True)
    return kwargs
