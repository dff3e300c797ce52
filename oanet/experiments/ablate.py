"""``oanet ablate``: the paper's ablation tables (1-5) reproduced on the synthetic occlusion benchmark.

For each seed, every network the selected tables need is trained at CPU scale
(``synthetic_cpu_ablation.yaml`` plus the row's one change) and evaluated in three fusion orders
from one forward pass per image (score, SRM, oracle: :mod:`oanet.experiments.oracle`); the SRM variants
(Table 5's kernels, the SRM trained on predicted masks) are trained alone on the base network's
batches (:mod:`oanet.train.srm_training`) and evaluated with its detections. The tables are
rewritten after every step (``ablations.md``, ``ablations.json``). docs/ablations.md explains each
shortcut and how to read the tables.

Layout of ``out_dir``::

    data/                                the benchmark (unless --data names another folder)
    plan.json                            the preset, iterations per network, seeds' schedule
    runs/<network>/seed<k>/train/        the trainer's folder (model_final.pth; last.pth until done)
    runs/<network>/seed<k>/eval/         predictions of the three orders, results.json
    runs/<network>/seed<k>/result.json   the evaluation's PQ per order: the run is finished
    runs/base/seed<k>/srms/              SRMs trained alone; srm_<variant>/eval, result_srm_<variant>.json
    ablations.md, ablations.json

Resuming: a step whose result file exists is skipped; a network whose training was killed continues
from its ``last.pth`` (the trainer resumes bit-exactly on the CPU); SRMs trained alone are redone
(seconds to minutes). A network whose loss became NaN is recorded as diverged, not retried.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from oanet.config import Config, load_config
from oanet.errors import ConfigError, make_dir
from oanet.experiments import tables as tables_mod
from oanet.fileio import read_json, write_json_atomic, write_text_atomic

PRESET = "synthetic_cpu_ablation.yaml"
# --quick: the demo's tiny network and benchmark, and every detection pasted (a 2-iteration network
# scores below 0.5), so that the SRM and oracle orders have something to order.
QUICK_EXTRA = ["model.fusion.score_thresh=0.0"]
CALIBRATION_ITERS = 10
PLAN = "plan.json"


@dataclass(frozen=True)
class Network:
    """A trained network of the ablation: the preset plus ``overrides``; ``coco_preset`` is the
    shipped COCO preset (configs/ablations/) of the same row, which changes the same keys."""

    name: str
    overrides: tuple[str, ...] = ()
    coco_preset: Optional[str] = None


NETWORKS: tuple[Network, ...] = (
    Network("base", (), "srm_gcn7.yaml"),
    Network("lambda_0.2", ("model.stuff_head.loss_weight=0.2",), "lambda_0.2.yaml"),
    Network("lambda_0.33", ("model.stuff_head.loss_weight=0.33",), "lambda_0.33.yaml"),
    Network("lambda_0.5", ("model.stuff_head.loss_weight=0.5",), "lambda_0.5.yaml"),
    Network("lambda_0.75", ("model.stuff_head.loss_weight=0.75",), "lambda_0.75.yaml"),
    Network("lambda_1.0", ("model.stuff_head.loss_weight=1.0",)),  # the paper has no preset: it diverged
    Network("stuff_classes_stuff", ("model.stuff_head.classes=stuff",), "stuff_classes_stuff.yaml"),
    Network("pano_instance_gt", ("data.instance_source=panoptic",), "pano_instance_gt.yaml"),
    Network("sharing_none", ("model.sharing=none",), "sharing_none.yaml"),
    Network("sharing_backbone", ("model.sharing=backbone",), "sharing_backbone.yaml"),
)
NETWORK_BY_NAME = {n.name: n for n in NETWORKS}


def srm_variants():
    """The SRMs trained alone on the base network's batches (name -> SRMVariant)."""
    from oanet.train.srm_training import SRMVariant

    return {v.name: v for v in (SRMVariant("1x1", "1x1"), SRMVariant("3x3", "3x3"), SRMVariant("gcn7", "gcn7"),
                                SRMVariant("gcn7_predicted", "gcn7", "predicted"))}


# --------------------------------------------------------------------------------------------
# what to run (pure)


@dataclass(frozen=True)
class Step:
    """One unit of work: ``train`` a network (and evaluate it), ``srms`` (train the SRM variants alone
    on the base network's run) or ``eval_srm`` (the base network ranking with one variant)."""

    kind: str
    seed: int
    network: str = "base"
    srm: Optional[str] = None

    @property
    def title(self) -> str:
        if self.kind == "train":
            return f"seed {self.seed}: train + evaluate {self.network}"
        if self.kind == "srms":
            return f"seed {self.seed}: train the SRM variants alone"
        return f"seed {self.seed}: evaluate {self.network} with SRM {self.srm}"


def parse_tables(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``; ConfigError for anything but table numbers 1-5."""
    try:
        numbers = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"--tables: expected comma-separated table numbers such as 1,3,5, got {text!r}") from None
    unknown = [n for n in numbers if n not in tables_mod.TABLE_NUMBERS]
    if not numbers or unknown:
        raise ConfigError(f"--tables: the paper's ablation tables are {list(tables_mod.TABLE_NUMBERS)}, got {text!r}")
    return numbers


def plan_steps(table_numbers: Sequence[int], seeds: int) -> list[Step]:
    """Seed by seed (a full table with one seed exists half-way): the base network, its SRM variants,
    then the other networks in table order."""
    rows = [row for table in tables_mod.tables(table_numbers) for row in table.rows]
    networks = ["base"] + [n for n in dict.fromkeys(row.network for row in rows) if n != "base"]
    variants = list(dict.fromkeys(row.srm for row in rows if row.srm is not None))
    steps = []
    for seed in range(seeds):
        steps.append(Step("train", seed, "base"))
        if variants:
            steps.append(Step("srms", seed))
            steps += [Step("eval_srm", seed, "base", v) for v in variants]
        steps += [Step("train", seed, n) for n in networks if n != "base"]
    return steps


# --------------------------------------------------------------------------------------------
# configuration


def network_config(preset: Path, network: Network, seed: int, data_dir: Path, run_dir: Path, quick: bool,
                   max_iter: Optional[int]) -> Config:
    """The config of one network and seed, its data and output folder filled in."""
    from oanet.experiments.benchmark import QUICK_OVERRIDES, benchmark_split, scale_schedule

    overrides = (QUICK_OVERRIDES + QUICK_EXTRA if quick else []) + list(network.overrides)
    cfg = load_config(preset, overrides)
    data = dataclasses.replace(cfg.data, train=benchmark_split(data_dir, "train"), val=benchmark_split(data_dir, "val"))
    cfg = dataclasses.replace(cfg, data=data, seed=seed, output_dir=str(run_dir / "train"))
    return scale_schedule(cfg, max_iter) if max_iter is not None else cfg


def load_or_make_plan(out_dir: Path, preset: Path, data_dir: Path, minutes: Optional[float], quick: bool,
                      log: Callable[[str], None]) -> dict:
    """``plan.json``: the iterations every network trains (the same for all rows and seeds, so rows are
    compared at equal training, not equal time). With ``minutes``, measured once on the base network."""
    from oanet.experiments.benchmark import read_metrics, training_seconds
    from oanet.train.trainer import train

    path = out_dir / PLAN
    if path.is_file():
        plan = read_json(path, "ablation plan")
        if plan.get("quick") != quick:
            raise ConfigError(f"{path}: this folder holds a {'--quick ' if plan.get('quick') else ''}ablation; "
                              f"use another --out for a {'--quick ' if quick else ''}one")
        if minutes is not None and plan.get("minutes_per_run") != minutes:
            raise ConfigError(f"{path}: planned with --minutes-per-run {plan.get('minutes_per_run')} "
                              f"({plan['max_iter']} iterations per network); continuing with {minutes} would mix "
                              "schedules: drop the option to continue, or use another --out")
        return plan
    cfg = network_config(preset, NETWORK_BY_NAME["base"], 0, data_dir, out_dir / "calibration", quick, None)
    plan = {"preset": preset.name, "quick": quick, "minutes_per_run": minutes, "max_iter": cfg.solver.max_iter,
            "seconds_per_iter": None, "data_dir": str(data_dir.resolve())}
    if minutes is not None:
        if minutes <= 0:
            raise ConfigError(f"--minutes-per-run must be positive, got {minutes}")
        calibration = min(CALIBRATION_ITERS, cfg.solver.max_iter)
        log(f"timing {calibration} iterations of the base network to fit {minutes:g} min per network")
        probe = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, max_iter=calibration))
        started = time.perf_counter()
        train(probe, resume=False)
        logged = training_seconds(read_metrics(Path(cfg.output_dir) / "metrics.jsonl"))
        seconds = (logged if logged > 0 else time.perf_counter() - started) / calibration
        shutil.rmtree(out_dir / "calibration", ignore_errors=True)
        plan.update(max_iter=max(calibration, int(minutes * 60 / seconds)), seconds_per_iter=seconds)
        log(f"{seconds:.2f} s/iteration -> {plan['max_iter']} iterations per network")
    write_json_atomic(path, plan, indent=2)
    return plan


def planned_data_dir(out_dir: Path, data_dir: Optional[str | Path]) -> Path:
    """The benchmark folder: the one the folder's plan was made on (a continued ablation needs no --data
    and refuses another), else ``data_dir``, else ``OUT/data``."""
    plan = _read(out_dir / PLAN) or {}
    if plan.get("data_dir"):
        planned = Path(plan["data_dir"])
        if data_dir is not None and Path(data_dir).resolve() != planned:
            raise ConfigError(f"{out_dir / PLAN}: this ablation runs on the benchmark in {planned}, not {data_dir}; "
                              "drop --data to continue it, or use another --out")
        return planned
    return Path(data_dir) if data_dir is not None else out_dir / "data"


# --------------------------------------------------------------------------------------------
# the steps


class Ablation:
    """Runs the steps of one ablation folder (see the module doc)."""

    def __init__(self, out_dir: Path, data_dir: Path, preset: Path, plan: dict, quick: bool,
                 log: Callable[[str], None]) -> None:
        self.out_dir = out_dir
        self.data_dir = data_dir
        self.preset = preset
        self.plan = plan
        self.quick = quick
        self.log = log
        self._truth = None

    def run_dir(self, network: str, seed: int) -> Path:
        return self.out_dir / "runs" / network / f"seed{seed}"

    def result_path(self, step: Step) -> Path:
        run = self.run_dir(step.network, step.seed)
        if step.kind == "train":
            return run / "result.json"
        if step.kind == "srms":
            return run / "srms" / "summary.json"
        return run / f"result_srm_{step.srm}.json"

    def config(self, network: str, seed: int) -> Config:
        return network_config(self.preset, NETWORK_BY_NAME[network], seed, self.data_dir,
                              self.run_dir(network, seed), self.quick, self.plan["max_iter"])

    def truth(self):
        from oanet.experiments.oracle import DepthTruth
        from oanet.experiments.benchmark import benchmark_split

        if self._truth is None:
            self._truth = DepthTruth(benchmark_split(self.data_dir, "val").instances_json
                                     or self.data_dir / "annotations" / "instances_val.json")
        return self._truth

    def run(self, step: Step) -> None:
        started = time.perf_counter()
        base = _read(self.result_path(Step("train", step.seed, "base")))
        if step.kind != "train" and base is not None and base.get("diverged"):
            record = {"network": "base", "seed": step.seed, "srm": step.srm, "diverged": "the base network diverged"}
        elif step.kind == "train":
            record = self.train_and_evaluate(step)
        elif step.kind == "srms":
            record = self.train_srms(step)
        else:
            record = self.evaluate_srm(step)
        record["minutes"] = (time.perf_counter() - started) / 60
        write_json_atomic(self.result_path(step), record, indent=2)
        if step.kind == "train":
            # Finished (the result is written): the training state, twice the model's size, is not needed.
            (self.run_dir(step.network, step.seed) / "train" / "last.pth").unlink(missing_ok=True)

    def evaluate(self, checkpoint: Path, eval_dir: Path, srm_file: Optional[Path] = None) -> dict:
        """PQ of the three orders of one network (ranking with ``srm_file`` when given)."""
        from oanet.experiments.benchmark import benchmark_split
        from oanet.inference.evaluate import evaluate
        from oanet.experiments.oracle import OraclePredictor
        from oanet.inference.torch_predictor import Predictor
        from oanet.train.srm_training import load_srm, with_srm

        predictor = Predictor.from_checkpoint(checkpoint, order="both")
        if srm_file is not None:
            with_srm(predictor.model, load_srm(srm_file))
        oracle = OraclePredictor(predictor, self.truth())
        # The benchmark as found now (not the paths in the checkpoint: the folder may have moved).
        split = benchmark_split(self.data_dir, "val")
        evaluation = evaluate(oracle, split, eval_dir, workers=0 if self.quick else None, orders=oracle.orders,
                              progress=not self.quick)
        return {order: {g: evaluation.results[order][g] for g in ("All", "Things", "Stuff")}
                for order in evaluation.results}

    def train_and_evaluate(self, step: Step) -> dict:
        from oanet.experiments.benchmark import read_metrics, training_seconds
        from oanet.train.trainer import train
        from oanet.train.step import NonFiniteLossError

        cfg = self.config(step.network, step.seed)
        record: dict[str, Any] = {"network": step.network, "seed": step.seed, "srm": None,
                                  "overrides": list(NETWORK_BY_NAME[step.network].overrides)}
        try:
            summary = train(cfg, resume=True)
        except NonFiniteLossError as exc:
            self.log(f"  {step.network} seed {step.seed} diverged: {exc}")
            return {**record, "diverged": str(exc)}
        train_dir = Path(cfg.output_dir)
        record.update(iterations=int(summary["iteration"]), resumed_from=int(summary["start_iteration"]),
                      train_minutes=training_seconds(read_metrics(train_dir / "metrics.jsonl")) / 60,
                      final_loss=summary["metrics"].get("loss"))
        record["results"] = self.evaluate(Path(summary["final_model"]), self.run_dir(step.network, step.seed) / "eval")
        return record

    def train_srms(self, step: Step) -> dict:
        import torch

        from oanet.model.checkpoint import load_checkpoint_file
        from oanet.train.srm_training import load_srm, train_srms

        variants = list(srm_variants().values())
        run = self.run_dir("base", step.seed)
        checkpoint = run / "train" / "model_final.pth"
        summary = train_srms(self.config("base", step.seed), variants, run / "srms", network_checkpoint=checkpoint,
                             progress=not self.quick, log=lambda m: self.log("  " + m))
        # The check of the shortcut on this very run: the gcn7 SRM trained alone vs the jointly trained one.
        joint = {k[len("srm."):]: v for k, v in load_checkpoint_file(checkpoint)["model"].items() if k.startswith("srm.")}
        alone = load_srm(srm_path_of(run, "gcn7")).state_dict()
        difference = max(float((joint[k] - v).abs().max()) for k, v in alone.items())
        identical = all(torch.equal(joint[k], v) for k, v in alone.items())
        self.log(f"  gcn7 SRM alone vs joint: {'bit-identical' if identical else f'max |difference| {difference:.3g}'}")
        return {"seed": step.seed, "variants": summary, "gcn7_alone_vs_joint": {"identical": identical,
                                                                               "max_abs_difference": difference}}

    def evaluate_srm(self, step: Step) -> dict:
        run = self.run_dir("base", step.seed)
        results = self.evaluate(run / "train" / "model_final.pth", run / f"srm_{step.srm}" / "eval",
                                srm_path_of(run, step.srm))
        return {"network": "base", "seed": step.seed, "srm": step.srm, "results": results}

    def records(self) -> dict:
        """``{(network, srm, seed): record}`` of every finished evaluation in the folder."""
        out = {}
        runs = self.out_dir / "runs"
        for path in sorted(runs.glob("*/seed*/result*.json")) if runs.is_dir() else []:
            record = read_json(path, "run result")
            out[(record["network"], record.get("srm"), int(record["seed"]))] = record
        return out


def srm_path_of(run: Path, variant: str) -> Path:
    from oanet.train.srm_training import srm_path

    return srm_path(run / "srms", variant)


# --------------------------------------------------------------------------------------------
# the report


def machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, Python {platform.python_version()}, " \
           f"torch {torch.__version__} ({torch.get_num_threads()} thread(s))"


def write_report(ablation: Ablation, table_numbers: Sequence[int], seeds: int, command: str) -> tuple[Path, Path]:
    """ablations.md and ablations.json from the results so far."""
    records = ablation.records()
    selected = tables_mod.tables(table_numbers)
    markdown, data = tables_mod.format_tables(selected, records)
    plan = ablation.plan
    srm_checks = {str(seed): rec.get("gcn7_alone_vs_joint")
                  for seed in range(seeds)
                  if (rec := _read(ablation.result_path(Step("srms", seed)))) is not None}
    done = sum(1 for key in records if key[2] < seeds)
    minutes = sum(float(r.get("minutes", 0.0)) for r in records.values()) + \
        sum(float(r.get("minutes", 0.0)) for r in map(_read, (ablation.out_dir / "runs").glob("*/seed*/srms/summary.json")))
    header = [
        "# Ablations on the synthetic occlusion benchmark",
        "",
        f"`{command}`: preset `{plan['preset']}`, {plan['max_iter']} iterations per network, "
        f"{seeds} seed(s), benchmark `{ablation.data_dir}`; {done} evaluation(s) done in {minutes:.0f} min of steps. "
        f"Machine: {machine()}.",
        "",
    ]
    if plan.get("quick"):
        header += ["**--quick run: a smoke test with tiny networks; the numbers mean nothing.**", ""]
    header += [
        "PQ, PQ_th and PQ_st in % on the benchmark's val split: mean ± half the range over the seeds "
        "(every seed lies within it). The last column is the paper's number for the same row on COCO val "
        "(ResNet-50): compare the direction of each effect, not the values. docs/ablations.md explains the "
        "rows and the shortcuts.",
        "",
        "",
    ]
    md_path = write_text_atomic(ablation.out_dir / "ablations.md", "\n".join(header) + markdown + "\n")
    json_path = write_json_atomic(ablation.out_dir / "ablations.json", {
        "command": command, "plan": plan, "seeds": list(range(seeds)), "machine": machine(),
        "tables": data, "srm_alone_vs_joint": srm_checks,
    }, indent=2)
    return md_path, json_path


def _read(path: Path) -> Optional[dict]:
    return read_json(path) if path.is_file() else None


# --------------------------------------------------------------------------------------------
# the job


def run_ablation(
    out_dir: str | Path,
    tables: Optional[Sequence[int]] = None,
    seeds: Optional[int] = None,
    minutes_per_run: Optional[float] = None,
    data_dir: Optional[str | Path] = None,
    quick: bool = False,
    log: Optional[Callable[[str], None]] = None,
    command: str = "oanet ablate",
) -> dict:
    """Run (or continue) an ablation in ``out_dir``; returns ``{"md", "json", "steps", "skipped"}``.

    ``tables`` and ``seeds`` default to what the folder was last run with, else all tables and 1 seed
    (1 with ``quick``).
    """
    from oanet.experiments.benchmark import ensure_benchmark
    from oanet.presets import find_preset
    from oanet.progress import Progress

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if seeds is not None and int(seeds) < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if minutes_per_run is not None and minutes_per_run <= 0:
        raise ConfigError(f"--minutes-per-run must be positive, got {minutes_per_run}")
    if tables is not None:
        tables = parse_tables(",".join(str(t) for t in tables))
    out_dir = make_dir(out_dir)
    data_dir = planned_data_dir(out_dir, data_dir)
    ensure_benchmark(data_dir, quick, log, step="")
    preset = find_preset(PRESET)
    plan = load_or_make_plan(out_dir, preset, data_dir, minutes_per_run, quick, log)
    tables = list(tables if tables is not None else plan.get("tables", tables_mod.TABLE_NUMBERS))
    seeds = int(seeds if seeds is not None else plan.get("seeds", 1))
    if (plan.get("tables"), plan.get("seeds")) != (tables, seeds):
        plan.update(tables=tables, seeds=seeds)
        write_json_atomic(out_dir / PLAN, plan, indent=2)
    ablation = Ablation(out_dir, data_dir, preset, plan, quick, log)
    steps = plan_steps(tables, seeds)
    skipped = 0
    with Progress(total=len(steps), desc="ablate", unit="step") as bar:
        for number, step in enumerate(steps, 1):
            if ablation.result_path(step).is_file():
                skipped += 1
            else:
                log(f"[ablate {number}/{len(steps)}] {step.title}")
                ablation.run(step)
                write_report(ablation, tables, seeds, command)
            bar.update(1)
    md_path, json_path = write_report(ablation, tables, seeds, command)
    log(f"wrote {md_path} and {json_path} ({len(steps) - skipped} step(s) run, {skipped} already done)")
    return {"md": str(md_path), "json": str(json_path), "steps": len(steps), "skipped": skipped}
