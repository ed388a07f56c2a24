"""`make evaluate`: how a run does on its validation split, as PNGs and one Markdown page.

The split is rebuilt from the run's saved config (same seed, NUM_IMAGES and
VAL_FRACTION), so these are the photos the run chose its epochs and temperature on.
Probabilities come from predict.predict_paths: the same cached features, TTA and
calibrated head as a submission. Everything goes to runs/<run>/report/, each file
written to a temporary name first; a new `evaluate` rewrites the report.
"""
import textwrap

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, top_k_accuracy_score

from . import UserError, data
from .fileio import atomic_path, write_json, write_text
from .plots import plot_history, plt, save
from .predict import find_run, load_run, predict_paths

TOP_K = 5  # the usual "top-5 accuracy"; fewer when a run has fewer breeds
NUM_WORST = 12  # photos in the worst-predictions grid
NUM_PAIRS = 15  # most-confused (true, predicted) pairs shown
NUM_BREEDS_PLOTTED = 30  # lowest per-breed accuracies in the chart (the page lists all)
THUMBNAIL = 160  # pixels, longest side, of the photos in the worst-predictions grid
PALETTE = 128  # colours of the grid PNG: photos in full colour would weigh megabytes


def evaluate(cfg):
    """The `evaluate` command. Returns the report folder."""
    run = load_run(find_run(cfg), cfg)
    labels, breeds = data.load_labeled(run.config)
    if breeds != run.breeds:
        raise UserError(f"Run {run.name} was trained on other breeds than {run.config.data_dir}/labels.csv "
                        "has now; evaluate it on the data it was trained on (DATA_DIR=...).")
    _, val = data.split(labels, run.config)
    print(f"Evaluating run {run.name} on its {len(val)} validation photos ({len(breeds)} breeds)")
    probs = predict_paths(run, list(val["path"]))
    y = val["label"].to_numpy()
    metrics = score(probs, y, len(breeds))
    per_breed = per_breed_accuracy(probs, y, breeds)
    pairs = confused_pairs(probs, y, breeds)

    out = run.dir / "report"
    pictures = {"curves.png": plot_history(run.dir / "history.csv", out / "curves.png"),
                "per_breed.png": plot_per_breed(per_breed, out / "per_breed.png"),
                "confused.png": plot_confused(pairs, out / "confused.png"),
                "worst.png": plot_worst(val, probs, breeds, out / "worst.png")}
    write_json(out / "metrics.json", metrics)
    with_csv(per_breed, out / "per_breed.csv")
    page = report_page(run, metrics, per_breed, pairs, [n for n, p in pictures.items() if p])
    write_text(out / "index.md", page)
    print(summary(run, metrics, per_breed, pairs))
    print(f"Report: {out}/index.md (and {', '.join(n for n, p in pictures.items() if p)})")
    return out


# ---------------------------------------------------------------- numbers

def score(probs, y, num_classes):
    k = min(TOP_K, num_classes)
    classes = np.arange(num_classes)
    return {"photos": int(len(y)), "breeds": int(num_classes), "top_k": k,
            "accuracy": float(accuracy_score(y, probs.argmax(1))),
            "top_k_accuracy": float(top_k_accuracy_score(y, probs, k=k, labels=classes)) if k < num_classes else 1.0,
            "log_loss": float(log_loss(y, probs, labels=classes))}


def per_breed_accuracy(probs, y, breeds):
    """One row per breed with validation photos, worst first (ties: fewer photos first)."""
    frame = pd.DataFrame({"breed": np.asarray(breeds)[y], "correct": probs.argmax(1) == y})
    table = frame.groupby("breed")["correct"].agg(photos="size", accuracy="mean").reset_index()
    return table.sort_values(["accuracy", "photos", "breed"]).reset_index(drop=True)


def confused_pairs(probs, y, breeds, limit=NUM_PAIRS):
    """The (true breed, predicted breed) mistakes that happen most often."""
    matrix = confusion_matrix(y, probs.argmax(1), labels=np.arange(len(breeds)))
    np.fill_diagonal(matrix, 0)
    rows, cols = np.nonzero(matrix)
    pairs = pd.DataFrame({"true": np.asarray(breeds)[rows], "predicted": np.asarray(breeds)[cols],
                          "count": matrix[rows, cols]})
    return pairs.sort_values(["count", "true", "predicted"], ascending=[False, True, True]).head(limit)


def with_csv(frame, path):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# ---------------------------------------------------------------- pictures

def pretty(breed):
    return breed.replace("_", " ")


def plot_per_breed(table, path, limit=NUM_BREEDS_PLOTTED):
    """The breeds the run gets wrong most (bars), with how many photos each score is from."""
    worst = table.head(limit)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(worst) + 1.2))
    bars = ax.barh([pretty(b) for b in worst["breed"]], worst["accuracy"], color="tab:orange")
    right = [f"{round(a * n)}/{n}" for a, n in zip(worst["accuracy"], worst["photos"])]
    ax.bar_label(bars, labels=right, padding=3, fontsize=8)  # shows the 0/1 breeds too
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("validation accuracy (labels: right/photos)")
    ax.set_title(f"Per-breed accuracy: the {len(worst)} lowest of {len(table)} breeds")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def plot_confused(pairs, path):
    """Bars of the most frequent true -> predicted mistakes (a note when there are none)."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(pairs), 2) + 1.2))
    if pairs.empty:
        ax.text(0.5, 0.5, "No mistakes on the validation split", ha="center", va="center")
        ax.axis("off")
        return save(fig, path)
    rows = pairs[::-1]
    ax.barh([f"{pretty(t)} → {pretty(p)}" for t, p in zip(rows["true"], rows["predicted"])], rows["count"],
            color="tab:red")
    ax.set_xlabel("validation photos (true breed → predicted breed)")
    ax.set_title("Most-confused breed pairs")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.tick_params(axis="y", labelsize=8)
    return save(fig, path)


def plot_worst(val, probs, breeds, path, limit=NUM_WORST, cols=4):
    """The photos whose true breed got the lowest probability, with what the run said instead."""
    order = np.argsort(probs[np.arange(len(val)), val["label"].to_numpy()])[:limit]
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.8 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        true, pred = val["label"].iloc[i], int(probs[i].argmax())
        ax.imshow(thumbnail(val["path"].iloc[i]))
        title = (f"true: {pretty(breeds[true])} ({probs[i, true]:.2f})\n"
                 f"predicted: {pretty(breeds[pred])} ({probs[i, pred]:.2f})")
        ax.set_title("\n".join(textwrap.fill(line, 32) for line in title.split("\n")), fontsize=7.5,
                     color="tab:red" if pred != true else "black")
    fig.suptitle("Worst predictions: the lowest probability for the true breed (probabilities in brackets)",
                 fontsize=10)
    return save_palette(fig, path)


def save_palette(fig, path):
    """A PNG of PALETTE colours: photos in full colour PNG would weigh megabytes."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    with atomic_path(path) as tmp:
        Image.open(buf).convert("RGB").quantize(PALETTE).save(tmp, format="PNG", optimize=True)
    return path


def thumbnail(path, size=THUMBNAIL):
    """A small copy of a photo: the grid stays a few hundred KB whatever the photos' size."""
    from PIL import Image
    image = Image.fromarray(data.read_image(path))
    image.thumbnail((size, size))
    return image


# ---------------------------------------------------------------- text

def report_page(run, metrics, per_breed, pairs, pictures):
    cfg, m = run.config, metrics
    lines = [f"# Evaluation of run `{run.name}`", "",
             f"Validation split: {m['photos']} photos of {m['breeds']} breeds (seed {cfg.seed}, "
             f"VAL_FRACTION={cfg.val_fraction}), predicted like a submission "
             f"(TTA {'on' if run.metrics.get('tta') else 'off'}, temperature {run.metrics.get('temperature', 1):.2f}).",
             ""]
    if cfg.full:
        lines += ["**FULL run:** the head was refit on every labeled photo, these validation photos "
                  "included, so the numbers below are optimistic. Evaluate a run without FULL=1 for "
                  "an honest estimate.", ""]
    lines += ["| metric | value |", "|---|---|",
              f"| accuracy | {m['accuracy']:.3f} |",
              f"| top-{m['top_k']} accuracy | {m['top_k_accuracy']:.3f} |",
              f"| log loss (the competition's metric) | {m['log_loss']:.4f} |", ""]
    titles = {"curves.png": "Training curves", "per_breed.png": "Per-breed accuracy",
              "confused.png": "Most-confused breeds", "worst.png": "Worst predictions"}
    for name in pictures:
        lines += [f"## {titles[name]}", "", f"![{titles[name]}]({name})", ""]
        if name == "confused.png" and not pairs.empty:
            lines += ["| true breed | predicted | photos |", "|---|---|---|"]
            lines += [f"| {t} | {p} | {c} |" for t, p, c in pairs.itertuples(index=False)] + [""]
    lines += ["## Every breed", "", "Worst first; with few validation photos per breed, one photo "
              "moves a breed's accuracy a lot.", "", "| breed | photos | accuracy |", "|---|---|---|"]
    lines += [f"| {b} | {n} | {a:.2f} |" for b, n, a in per_breed.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary(run, m, per_breed, pairs):
    worst = ", ".join(f"{b} {a:.2f}" for b, _, a in per_breed.head(5).itertuples(index=False))
    confused = ", ".join(f"{t} -> {p} ({c})" for t, p, c in pairs.head(5).itertuples(index=False)) or "none"
    note = "\n  (FULL run: refit on these photos, so optimistic)" if run.config.full else ""
    return (f"Run {run.name}, {m['photos']} validation photos: accuracy {m['accuracy']:.3f}, "
            f"top-{m['top_k']} accuracy {m['top_k_accuracy']:.3f}, log loss {m['log_loss']:.4f}{note}\n"
            f"  lowest per-breed accuracy: {worst}\n"
            f"  most confused (true -> predicted): {confused}")
