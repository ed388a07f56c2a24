"""Pictures a user looks at: a batch of training photos, training curves, predictions.

matplotlib's Agg backend writes PNGs without a screen (servers, CI, Kaggle).
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_batch(images, titles, path, rows=5, cols=5):
    """A rows x cols grid of photos with their breed names (the course's show_25_images)."""
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title.replace("_", " "), fontsize=9)
    return save(fig, path)


def plot_history(history_csv, path):
    """Loss and accuracy per epoch, train and validation, from Keras' CSVLogger file."""
    try:
        history = pd.read_csv(history_csv)
    except (OSError, pd.errors.EmptyDataError):
        return None
    if history.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + metric in history:
                ax.plot(epochs, history[prefix + metric], style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def plot_prediction(image, title, breeds, probs, path):
    """The photo beside a bar chart of its top breeds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.3]},
                                      layout="constrained")  # long breed names must not cover the photo
    left.imshow(image)
    left.set_title(title, fontsize=9)
    left.axis("off")
    names = [b.replace("_", " ") for b in breeds][::-1]
    right.barh(names, list(probs)[::-1], color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    return save(fig, path)


def show_batch(cfg, path):
    """The `show` command: 25 shuffled training photos as the pipeline feeds them."""
    import numpy as np

    from . import data

    labels, breeds = data.load_labeled(cfg)
    train, _ = data.split(labels, cfg)
    dataset = data.make_dataset(train["path"], train["label"].values, len(breeds), cfg.image_size,
                                batch_size=25, shuffle=True, seed=cfg.seed)
    images, onehot = next(iter(dataset))
    titles = [breeds[i] for i in np.argmax(onehot.numpy(), axis=1)]
    return plot_batch(images.numpy(), titles, path)
