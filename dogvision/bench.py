"""`make bench`: our pipeline against the course's, on the same photos, in one run.

A benchmark, not a test. Labeled photos are split into a held-in part (what
"all labeled photos" is for FULL) and a held-back part with known labels (the
"test photos"), so that test log loss can be measured. Each pipeline runs as its
own process, timed from outside with its peak memory (ru_maxrss):

- floor:  the backbone alone in TensorFlow on random tensors, batch 32: one pass
          over every held-in and held-back photo at that rate;
- ours:   `python -m dogvision train FULL=1` + `submission` (cached features,
          flip TTA, temperature, refit on all) from an empty feature cache, with
          the backbone converted to TFLite beforehand (timed and reported apart:
          it happens once per backbone, like its download);
- course: backbone re-run every epoch (CACHE_FEATURES=0), Adam defaults, no
          regularisation; the 1,000-photo experiment stops on val_accuracy, the
          full-data run on (training) accuracy, as in the course.

Prints a table and writes it as Markdown to runs/bench/bench.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import data
from .config import Config
from .fileio import write_json, write_text

BENCH_DIR = Path("runs/bench")


def make_bench_data(cfg, root, test_fraction=0.25):
    """A Kaggle-layout folder of symlinks: held-in photos as train/, held-back as test/."""
    from sklearn.model_selection import train_test_split

    labels, breeds = data.load_labeled(cfg)
    held_in, held_back = train_test_split(labels, test_size=test_fraction, random_state=cfg.seed,
                                          stratify=labels["label"])
    root.mkdir(parents=True, exist_ok=True)
    for kind, frame in (("train", held_in), ("test", held_back)):
        (root / kind).mkdir(exist_ok=True)
        for photo_id, path in zip(frame["id"], frame["path"]):
            link = root / kind / f"{photo_id}.jpg"
            if not link.exists():
                link.symlink_to(Path(path).resolve())
    held_in[["id", "breed"]].to_csv(root / "labels.csv", index=False)
    sample = pd.DataFrame({"id": held_back["id"].values, **{b: 1 / len(breeds) for b in breeds}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    held_back[["id", "breed"]].to_csv(root.parent / "test_labels.csv", index=False)
    write_json(root / data.MARKER, data.verify(root, cfg.num_breeds, decode=False))
    return held_in, held_back, breeds


def timed(cmd, env=None):
    """Run a command; return (seconds, peak RSS in MB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if any(word in line for word in ("Result:", "Wrote", "Error", "course", "Converting")):
            print("   ", line.rstrip())
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n" + "".join(lines[-30:]))
    return seconds, usage.ru_maxrss / 1024, "".join(lines)


def floor_rate(handle, image_size, batch_size=32, photos=320):
    """Photos/s of the backbone alone in TensorFlow on random tensors (a tf.function, as ours on GPUs)."""
    import tensorflow as tf

    from .features import TFEmbedder
    from .model import load_backbone

    batch = tf.random.uniform([batch_size, image_size, image_size, 3]).numpy()
    return photos_per_second(TFEmbedder(load_backbone(handle)), batch, photos)


def photos_per_second(embedder, batch, photos):
    embedder(batch, ["orig"])  # warm-up: tracing, memory planning
    start = time.perf_counter()
    for _ in range(photos // len(batch)):
        embedder(batch, ["orig"])
    return photos // len(batch) * len(batch) / (time.perf_counter() - start)


def prepare_lite(cfg, backbones_dir, photos=320):
    """Convert the backbone to TFLite once (as a first `make train` does); its time and rate."""
    import numpy as np

    from .features import LiteEmbedder, make_embedder

    start = time.perf_counter()
    embedder = make_embedder(cfg.model_handle, cfg.image_size, "auto", backbones_dir)
    seconds = time.perf_counter() - start
    if not isinstance(embedder, LiteEmbedder):
        return seconds, None
    batch = np.random.default_rng(0).random((32, cfg.image_size, cfg.image_size, 3), np.float32)
    return seconds, photos_per_second(embedder, batch, photos)


def score(probs, frame, breeds):
    from sklearn.metrics import accuracy_score, log_loss

    y = frame["breed"].map({b: i for i, b in enumerate(breeds)}).values
    probs = probs / probs.sum(axis=1, keepdims=True)  # a CSV's rounding leaves sums of 1 +- 1e-7
    return accuracy_score(y, probs.argmax(1)), log_loss(y, probs, labels=range(len(breeds)))


# ---------------------------------------------------------------- the course's pipeline

def course(args):
    """The course: hub layer + Dense softmax, photos through the backbone every epoch."""
    import tensorflow as tf

    from . import model

    cfg = Config(data_dir=args.data_dir, model_handle=args.model_handle, num_images=args.num_images,
                 full=args.full, num_breeds=args.num_breeds, seed=args.seed, l2=0.0, dropout=0.0, learning_rate=1e-3)
    labels, breeds = data.load_labeled(cfg)
    train_df, val_df = data.split(labels, cfg)
    if cfg.full:
        train_df, val_df = labels, None
    tf.keras.utils.set_random_seed(cfg.seed)
    backbone = model.load_backbone(cfg.model_handle)
    head = model.build_head(model.feature_size(backbone, cfg.image_size), len(breeds), cfg)
    net = model.build_model(backbone, head, cfg.image_size)
    model.compile_model(net, cfg.learning_rate)

    def dataset(frame, shuffle=False):
        return data.make_dataset(frame["path"], frame["label"].values, len(breeds), cfg.image_size,
                                 cfg.batch_size, shuffle=shuffle, seed=cfg.seed)

    monitor = "accuracy" if cfg.full else "val_accuracy"
    stop = tf.keras.callbacks.EarlyStopping(monitor=monitor, patience=3)
    history = net.fit(dataset(train_df, True), validation_data=None if cfg.full else dataset(val_df),
                      epochs=cfg.num_epochs, callbacks=[stop], verbose=2)
    result = {"epochs": len(history.history["loss"])}
    if not cfg.full:
        acc, loss = score(net.predict(dataset(val_df), verbose=0), val_df, breeds)
        result.update(val_accuracy=acc, val_log_loss=loss)
    else:
        test = data.load_test(cfg)
        probs = net.predict(data.make_dataset(test["path"], image_size=cfg.image_size,
                                              batch_size=cfg.batch_size), verbose=0)
        np.save(args.out + ".npy", probs)
    print(f"course result: {result}")
    write_json(args.out, result)


# ---------------------------------------------------------------- the benchmark

def run_ours(py, args, runs_dir, full, submissions_dir, held_back, breeds):
    """Our `train` (+ `submission` for FULL) as a user runs them, from an empty feature cache."""
    seconds, mem, _ = timed(py + ["train", *args])
    run = (runs_dir / ("LATEST_FULL" if full else "LATEST")).read_text().strip()
    metrics = json.loads((runs_dir / run / "metrics.json").read_text())
    row = {"seconds": seconds, "mem": mem, "epochs": metrics["best_epoch"],
           "val_accuracy": metrics["val_accuracy"], "val_log_loss": metrics["val_log_loss"]}
    if full:
        t_pred, mem_pred, _ = timed(py + ["submission", *args, "--run", run])
        sub = pd.read_csv(submissions_dir / f"{run}.csv")
        row.update(seconds=seconds + t_pred, mem=max(mem, mem_pred))
        row["test_accuracy"], row["test_log_loss"] = score(sub[breeds].to_numpy(), held_back, breeds)
    return row


def run_course(cfg, root, full, held_back, breeds):
    out = str(BENCH_DIR / f"course-{int(full)}.json")
    seconds, mem, _ = timed([sys.executable, "-m", "dogvision.bench", "course",
                             "--data-dir", str(root), "--model-handle", cfg.model_handle,
                             "--num-images", str(cfg.num_images), "--full", str(int(full)),
                             "--num-breeds", str(cfg.num_breeds), "--seed", str(cfg.seed), "--out", out])
    row = {"seconds": seconds, "mem": mem, **json.loads(Path(out).read_text())}
    if full:
        row["test_accuracy"], row["test_log_loss"] = score(np.load(out + ".npy"), held_back, breeds)
    return row


def bench(cfg):
    import shutil

    if BENCH_DIR.exists():
        shutil.rmtree(BENCH_DIR)  # the bench's own scratch folder, remade every time
    root = BENCH_DIR / "data"
    held_in, held_back, breeds = make_bench_data(cfg, root)
    py = [sys.executable, "-m", "dogvision"]
    common = ["--model-handle", cfg.model_handle, "--num-breeds", str(cfg.num_breeds), "--seed", str(cfg.seed),
              "--image-size", str(cfg.image_size), "--batch-size", str(cfg.batch_size),
              "--data-dir", str(root), "--submissions-dir", str(BENCH_DIR / "submissions")]

    print(f"Bench on {len(held_in)} held-in + {len(held_back)} held-back photos, backbone {cfg.model_handle}")
    # In a child process: this one must stay small, as children start with its memory (ru_maxrss).
    backbones_dir = BENCH_DIR / "backbones"
    out = BENCH_DIR / "floor.json"
    timed([sys.executable, "-m", "dogvision.bench", "floor", "--model-handle", cfg.model_handle,
           "--image-size", str(cfg.image_size), "--backbones-dir", str(backbones_dir), "--out", str(out)])
    measured = json.loads(out.read_text())
    rate, lite = measured["rate"], (measured["lite_seconds"], measured["lite_rate"])
    floor = (len(held_in) + len(held_back)) / rate
    print(f"floor: backbone alone {rate:.1f} photos/s -> {floor:.1f} s for one pass over all photos")
    print(f"TFLite: converted in {lite[0]:.1f} s (once per backbone), "
          f"{lite[1] or 0:.1f} photos/s on random tensors (batch 32)")
    common += ["--backbones-dir", str(backbones_dir)]

    scenarios = [("1,000 photos", False, [("ours", [])]),
                 ("FULL + test", True, [("ours", []), ("ours TTA=0", ["--tta", "0"])])]
    rows = []
    for n, (scenario, full, variants) in enumerate(scenarios):
        mode = ["--full", "1"] if full else ["--num-images", str(cfg.num_images)]
        for m, (name, extra) in enumerate(variants):
            print(f"[{scenario}] {name}")
            runs_dir = BENCH_DIR / f"runs-{n}{m}"
            args = [*common, *mode, *extra, "--runs-dir", str(runs_dir), "--cache-dir", str(BENCH_DIR / f"cache-{n}{m}")]
            row = run_ours(py, args, runs_dir, full, BENCH_DIR / "submissions", held_back, breeds)
            rows.append({"scenario": scenario, "pipeline": name, **row})
        print(f"[{scenario}] course")
        rows.append({"scenario": scenario, "pipeline": "course", **run_course(cfg, root, full, held_back, breeds)})

    table = format_table(rows, rate, floor, len(held_in), len(held_back), lite)
    print(table)
    write_text(BENCH_DIR / "bench.md", table + "\n")
    return table


def format_table(rows, rate, floor, n_in, n_back, lite=(None, None)):
    def f(value, spec=".3f"):
        return "" if value is None else format(value, spec)

    course = {r["scenario"]: r for r in rows if r["pipeline"] == "course"}
    lines = [f"Floor: the backbone alone in TensorFlow runs {rate:.1f} photos/s (random tensors, batch 32), so one pass over "
             f"the {n_in} held-in + {n_back} held-back photos takes {floor:.1f} s.",
             "" if lite[1] is None else
             f"Ours computes features with the backbone converted to TFLite (XNNPACK): {lite[1]:.1f} photos/s "
             f"alone; the conversion ({lite[0]:.1f} s, once per backbone, kept in data/backbones/) is done "
             "before the scenarios, like the model download.", "",
             "| scenario | pipeline | wall s | course / ours | ours / floor | epochs | val acc | val log loss "
             "| test acc | test log loss | ours / course test log loss | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = course[r["scenario"]]
        ours = r["pipeline"] != "course"
        speedup = f(base["seconds"] / r["seconds"], ".1f") if ours else ""
        over_floor = f(r["seconds"] / floor, ".2f") if ours and "test_log_loss" in r else ""
        loss_ratio = f(r["test_log_loss"] / base["test_log_loss"], ".2f") if ours and "test_log_loss" in r else ""
        lines.append(f"| {r['scenario']} | {r['pipeline']} | {r['seconds']:.0f} | {speedup} | {over_floor} "
                     f"| {r.get('epochs', '')} | {f(r.get('val_accuracy'))} | {f(r.get('val_log_loss'))} "
                     f"| {f(r.get('test_accuracy'))} | {f(r.get('test_log_loss'))} | {loss_ratio} | {r['mem']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(prog="python -m dogvision.bench")
    sub = parser.add_subparsers(dest="role", required=True)
    c = sub.add_parser("course", help="run the course's pipeline (used by the bench)")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--model-handle", required=True)
    c.add_argument("--num-images", type=int, default=1000)
    c.add_argument("--full", type=int, default=0)
    c.add_argument("--num-breeds", type=int, default=120)
    c.add_argument("--seed", type=int, default=42)
    c.add_argument("--out", required=True)
    f = sub.add_parser("floor", help="the backbone-only rates and the TFLite conversion (used by the bench)")
    f.add_argument("--model-handle", required=True)
    f.add_argument("--image-size", type=int, default=224)
    f.add_argument("--backbones-dir", required=True)
    f.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.role == "course":
        course(args)
    else:
        cfg = Config(model_handle=args.model_handle, image_size=args.image_size)
        lite_seconds, lite_rate = prepare_lite(cfg, args.backbones_dir)
        write_json(args.out, {"rate": floor_rate(cfg.model_handle, cfg.image_size),
                              "lite_seconds": lite_seconds, "lite_rate": lite_rate})


if __name__ == "__main__":
    main()
