"""Predicting with a trained run, writing the submission CSV, and checking one.

A run folder holds everything needed to predict: config.json (which backbone and
image size), breeds.txt (the class order) and head.keras (calibrated head) or
model.weights.h5 (fine-tuned end-to-end model).
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import UserError, data
from .config import Config
from .fileio import atomic_path, read_json

ROW_SUM_TOLERANCE = 1e-3


@dataclass
class Run:
    dir: Path
    config: Config
    breeds: list
    metrics: dict = field(default_factory=dict)
    _head: object = None
    _model: object = None
    _cache: object = None

    @property
    def name(self):
        return self.dir.name

    @property
    def end_to_end(self):
        return (self.dir / "model.weights.h5").exists()


def find_run(cfg):
    """RUN= if given; else the latest finished run (the latest FULL one when FULL=1)."""
    runs_dir = Path(cfg.runs_dir)
    if cfg.run:
        run_dir = runs_dir / cfg.run
        if not (run_dir / "metrics.json").is_file():
            raise UserError(f"No finished run {run_dir}/ (it needs metrics.json). "
                            f"Runs: {', '.join(list_runs(runs_dir)) or 'none'}.")
        return run_dir
    finished = [r for r in list_runs(runs_dir) if not cfg.full or read_json(runs_dir / r / "config.json")["full"]]
    if not finished:
        raise UserError(f"No finished {'FULL ' if cfg.full else ''}run in {runs_dir}/: train one first "
                        f"(make train{' FULL=1' if cfg.full else ''}).")
    return runs_dir / finished[-1]


def list_runs(runs_dir):
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p.name for p in runs_dir.iterdir() if (p / "metrics.json").is_file()),
                  key=lambda name: ((runs_dir / name / "metrics.json").stat().st_mtime, name))


def load_run(run_dir, cfg=None):
    """A Run whose data/cache folders follow the current cfg (the run's own otherwise)."""
    run_dir = Path(run_dir)
    saved = read_json(run_dir / "config.json")
    saved = {k: v for k, v in saved.items() if k in Config.__dataclass_fields__}
    run_cfg = Config(**saved)
    if cfg is not None:  # where things are on this machine wins over where they were
        for key in ("data_dir", "cache_dir", "runs_dir", "submissions_dir", "backbone_runtime",
                    "backbones_dir"):
            setattr(run_cfg, key, getattr(cfg, key))
    breeds = (run_dir / "breeds.txt").read_text().split()
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
    return Run(run_dir, run_cfg, breeds, metrics)


def predict_paths(run, paths, tta=None, cache=True):
    """Breed probabilities [len(paths), len(breeds)] for photo files, in the run's breed order.

    cache=False computes the backbone features without storing them: `predict` on a
    user's photos should not grow the shared feature cache with one-off files.
    """
    import tensorflow as tf

    from . import model as model_lib
    from .features import FeatureCache, TFEmbedder, extract

    tta = run.metrics.get("tta", False) if tta is None else tta
    views = ("orig", "flip") if tta else ("orig",)
    cfg = run.config
    paths = [str(p) for p in paths]
    if run.end_to_end:
        if run._model is None:
            from .train import build_end_to_end
            run._model = build_end_to_end(cfg, len(run.breeds), tf.distribute.get_strategy())
            run._model.load_weights(str(run.dir / "model.weights.h5"))
        head = run._model.get_layer("head")
        feats = extract(TFEmbedder(run._model.get_layer("backbone")), paths, views, cfg.image_size,
                        cfg.batch_size, desc="Predicting")
    else:
        if run._head is None:
            run._head = model_lib.keras.models.load_model(run.dir / "head.keras", compile=False)
        head = run._head
        if run._cache is None:
            run._cache = FeatureCache(cfg.cache_dir, cfg.model_handle, cfg.image_size, cfg.batch_size,
                                      cfg.backbone_runtime, cfg.backbones_dir)
        if cache:
            feats = run._cache.get(paths, views)
        else:
            feats = extract(run._cache.embedder, paths, views, cfg.image_size, cfg.batch_size,
                            desc="Predicting")
    mean = sum(feats[v] for v in views) / len(views)
    return head.predict(mean, batch_size=1024, verbose=0)


# ---------------------------------------------------------------- submission

def make_submission(cfg):
    """The `submission` command: submissions/<run>.csv, never overwriting one."""
    run_dir = find_run(cfg)
    out = Path(cfg.submissions_dir) / f"{run_dir.name}.csv"
    if out.exists() and not cfg.force:
        print(f"{out} already exists; it is not overwritten (FORCE=1 to write it again).")
        return out
    run = load_run(run_dir, cfg)
    test = data.load_test(cfg)
    sample_columns = list(data.read_sample_submission(cfg.data_dir).columns[1:])
    if sorted(sample_columns) != sorted(run.breeds):
        raise UserError(f"Run {run.name} was trained on other breeds than the columns of "
                        f"{Path(cfg.data_dir) / 'sample_submission.csv'}; train a run on this data.")
    print(f"Predicting {len(test)} test photos with run {run.name} (TTA {'on' if run.metrics.get('tta') else 'off'})")
    probs = predict_paths(run, list(test["path"]))
    frame = pd.concat([pd.DataFrame({"id": test["id"].values}),
                       pd.DataFrame(probs, columns=run.breeds)[sample_columns]], axis=1)
    with atomic_path(out, overwrite=cfg.force) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.7g")
        problems = validate_frame(pd.read_csv(tmp, dtype={"id": str}), data.read_sample_submission(cfg.data_dir))
        if problems:
            raise UserError("The submission failed validation (a bug): " + "; ".join(problems))
    print(f"Wrote {out} ({len(frame)} rows, {len(sample_columns)} breed columns); it passes validation.")
    print(f"Submit: make submit CSV={out}   (or: kaggle competitions submit dog-breed-identification "
          f"-f {out} -m \"{run.name}\")")
    return out


def validate_csv(csv_path, sample_path):
    """Raise UserError naming every problem of a submission file; return its row count."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"{csv_path} does not exist.")
    try:
        frame = pd.read_csv(csv_path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{csv_path} is not a readable CSV: {err}") from err
    sample = data.read_csv(Path(sample_path))
    problems = validate_frame(frame, sample)
    if problems:
        raise UserError(f"{csv_path} is not a valid submission:\n  - " + "\n  - ".join(problems))
    return len(frame)


def validate_frame(frame, sample):
    """Every way a submission can differ from what Kaggle expects, as messages."""
    problems = []
    expected = list(sample.columns)
    columns = list(frame.columns)
    if columns != expected:
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        if missing:
            problems.append(f"missing column(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            problems.append(f"unexpected column(s): {', '.join(map(str, extra[:5]))}")
        if not missing and not extra:
            problems.append("columns are not in sample_submission.csv's order (id, then the breeds)")
        if "id" not in columns:
            return problems
    ids, want = frame["id"].astype(str), sample["id"].astype(str)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        problems.append(f"{len(dup)} duplicated id(s), e.g. {dup[0]}")
    missing_ids = sorted(set(want) - set(ids))
    extra_ids = sorted(set(ids) - set(want))
    if missing_ids:
        problems.append(f"{len(missing_ids)} test id(s) missing, e.g. {missing_ids[0]}")
    if extra_ids:
        problems.append(f"{len(extra_ids)} id(s) that are not test photos, e.g. {extra_ids[0]}")
    if not dup and not missing_ids and not extra_ids and list(ids) != list(want):
        problems.append("rows are not in sample_submission.csv's id order")
    breed_cols = [c for c in expected[1:] if c in columns]
    values = frame[breed_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if values.size:
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            problems.append(f"{int(bad.sum())} value(s) are not finite numbers (empty, NaN, inf or text), "
                            f"e.g. row {row + 2} (id {ids.iloc[row]})")
        out_of_range = np.isfinite(values) & ((values < 0) | (values > 1))
        if out_of_range.any():
            row = int(np.argwhere(out_of_range)[0][0])
            problems.append(f"{int(out_of_range.sum())} value(s) outside [0, 1], e.g. row {row + 2} (id {ids.iloc[row]})")
        if not missing_cols(expected, columns) and not bad.any():
            sums = values.sum(axis=1)
            off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
            if off.any():
                row = int(np.argmax(off))
                problems.append(f"{int(off.sum())} row(s) do not sum to 1 (+-{ROW_SUM_TOLERANCE}), e.g. row "
                                f"{row + 2} (id {ids.iloc[row]}) sums to {sums[row]:.4f}")
    return problems


def missing_cols(expected, columns):
    return [c for c in expected if c not in columns]


def submission_path(cfg, csv=None):
    """The CSV `make submit` sends: CSV= if given, else the latest run's submission."""
    if csv:
        return Path(csv)
    return Path(cfg.submissions_dir) / f"{find_run(cfg).name}.csv"
