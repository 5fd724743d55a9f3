"""``inspectd evaluate --report DIR``: the evaluation as pictures a line engineer can check.

Writes ``scores.png`` (normal vs abnormal score histograms with the threshold), ``roc.png``,
``confusion.csv`` (at the model's threshold), ``false_accept_N.png`` / ``false_reject_N.png``
(the worst mistakes: the image beside its anomaly-map overlay) and ``index.html`` tying them
together. Matplotlib is driven through its object API on the Agg canvas: no pyplot state, no
display needed.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from training.evaluate import Scored, teacher_warning
from training.images import readable
from training.metrics import Evaluation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Fixed colours, so that a test can find each element in the PNG's pixels.
NORMAL_COLOUR = "#1f77b4"
ABNORMAL_COLOUR = "#d62728"
THRESHOLD_COLOUR = "#ff7f0e"
WORST_SHOWN = 6
THUMB_PX = 192
OVERLAY_ALPHA = 0.45

MapFn = Callable[[Path, Sequence[Path]], list[NDArray[np.float32]]]


@dataclass(frozen=True)
class Mistake:
    kind: str  # "false_accept" | "false_reject"
    path: Path
    score: float
    png: str


def write_report(
    out: Path,
    scored: Scored,
    *,
    maps: MapFn | None = None,
    worst: int = WORST_SHOWN,
    warnings: Sequence[str] = (),
) -> Path:
    """Write every file of the report into ``out`` (created if needed); returns ``index.html``.

    ``warnings`` (e.g. evaluation images that were trained on) are shown beside the teacher's."""
    out.mkdir(parents=True, exist_ok=True)
    result = scored.evaluation()
    normal = [s for _, s in scored.normal]
    abnormal = [s for _, s in scored.abnormal]
    _plot_scores(out / "scores.png", normal, abnormal, result.threshold)
    _plot_roc(out / "roc.png", normal, abnormal, result)
    confusion = _confusion(scored, result.threshold)
    _write_confusion(out / "confusion.csv", confusion)
    mistakes = _worst_mistakes(scored, worst)
    if mistakes:
        if maps is None:
            from training.scoring import anomaly_maps

            maps = anomaly_maps
        for mistake, heat in zip(mistakes, maps(scored.xml, [m.path for m in mistakes]), strict=True):
            _overlay(mistake.path, heat).save(out / mistake.png)
    index = out / "index.html"
    index.write_text(_html(scored, result, confusion, mistakes, warnings), encoding="utf-8")
    return index


def _figure(width: float, height: float, rows: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _plot_scores(path: Path, normal: list[float], abnormal: list[float], threshold: float) -> None:
    """One panel per class on a shared axis: overlapping translucent bars hide which class is where."""
    fig, axes = _figure(7, 4.5, rows=2)
    values = np.asarray([*normal, *abnormal, threshold], float)
    low, high = float(values.min()), float(values.max())
    pad = max((high - low) * 0.05, 1e-3)
    edges = np.linspace(low - pad, high + pad, 31)
    for ax, scores, colour, label in (
        (axes[0], normal, NORMAL_COLOUR, f"normal ({len(normal)})"),
        (axes[1], abnormal, ABNORMAL_COLOUR, f"abnormal ({len(abnormal)})"),
    ):
        ax.hist(scores, bins=edges.tolist(), color=colour, label=label)
        ax.axvline(threshold, color=THRESHOLD_COLOUR, linewidth=2.5, label=f"threshold {threshold:.3f}")
        ax.set_ylabel("images")
        ax.legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("anomaly score (rejected when score >= threshold)")
    axes[0].set_title("Score distributions")
    fig.tight_layout()
    fig.savefig(path)


def _plot_roc(path: Path, normal: list[float], abnormal: list[float], result: Evaluation) -> None:
    from sklearn.metrics import roc_curve

    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(abnormal))])
    frr, tpr, _ = roc_curve(labels, np.asarray([*normal, *abnormal], float), drop_intermediate=False)
    fig, (ax,) = _figure(5, 5)
    ax.plot(frr, tpr, color=ABNORMAL_COLOUR, linewidth=2, label=f"AUROC {result.auroc:.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")
    ax.plot([0, 1], [1, 0], color="0.8", linestyle="--", linewidth=1)  # FAR == FRR
    ax.plot(
        [result.frr],
        [1 - result.far],
        "o",
        color=THRESHOLD_COLOUR,
        markersize=9,
        label=f"threshold {result.threshold:.3f}: FAR {result.far:.3f}, FRR {result.frr:.3f}",
    )
    ax.plot([result.eer], [1 - result.eer], "s", color="k", label=f"EER {result.eer:.3f}")
    ax.set_xlabel("FRR: normal images rejected")
    ax.set_ylabel("1 - FAR: abnormal images rejected")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _confusion(scored: Scored, threshold: float) -> dict[str, dict[str, int]]:
    def split(items: list[tuple[Path, float]]) -> dict[str, int]:
        rejected = sum(score >= threshold for _, score in items)
        return {"accepted": len(items) - rejected, "rejected": rejected}

    return {"normal": split(scored.normal), "abnormal": split(scored.abnormal)}


def _write_confusion(path: Path, confusion: dict[str, dict[str, int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "accepted", "rejected"])
        for actual, counts in confusion.items():
            writer.writerow([actual, counts["accepted"], counts["rejected"]])


def _worst_mistakes(scored: Scored, worst: int) -> list[Mistake]:
    """Accepted abnormals lowest score first, rejected normals highest first: the clearest misses."""
    threshold = scored.card.threshold
    accepts = sorted((item for item in scored.abnormal if item[1] < threshold), key=lambda i: i[1])
    rejects = sorted((item for item in scored.normal if item[1] >= threshold), key=lambda i: -i[1])
    return [
        Mistake(kind, path, score, f"{kind}_{rank}.png")
        for kind, items in (("false_accept", accepts), ("false_reject", rejects))
        for rank, (path, score) in enumerate(items[:worst], start=1)
    ]


def _overlay(path: Path, heat: NDArray[np.float32]) -> Image.Image:
    """The image and, beside it, the image under its anomaly map (jet, 0..1 as exported)."""
    from matplotlib import colormaps

    from inspectd.imaging import decode_rgb  # the daemon's reader: 16-bit, CMYK, palette alike

    pixels = (decode_rgb(readable(path)) * 255).round().astype(np.uint8)
    rgb = Image.fromarray(pixels).resize((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR)
    heat_img = Image.fromarray(np.clip(heat, 0.0, 1.0).astype(np.float32), mode="F")
    heat_small = np.asarray(heat_img.resize((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR))
    coloured = colormaps["jet"](np.clip(heat_small, 0.0, 1.0))[..., :3] * 255
    base = np.asarray(rgb, float)
    blend = (1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * coloured
    sheet = Image.new("RGB", (2 * THUMB_PX + 6, THUMB_PX), "white")
    sheet.paste(rgb, (0, 0))
    sheet.paste(Image.fromarray(blend.clip(0, 255).astype(np.uint8)), (THUMB_PX + 6, 0))
    return sheet


def _html(
    scored: Scored,
    result: Evaluation,
    confusion: dict[str, dict[str, int]],
    mistakes: list[Mistake],
    warnings: Sequence[str],
) -> str:
    card = scored.card
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>inspectd evaluation</title>',
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em;text-align:right}"
        ".warn{background:#fdd;border:3px solid #c00;padding:.6em;font-weight:bold}"
        "figure{display:inline-block;margin:.4em}</style></head><body>",
        "<h1>inspectd evaluation</h1>",
    ]
    for warning in [teacher_warning(card), *warnings]:
        if warning:
            parts.append(f'<p class="warn">WARNING: {esc(warning)}</p>')
    parts += [
        "<table>",
        f"<tr><th>model</th><td>{esc(str(scored.xml))} (id {esc(card.model_id)})</td></tr>",
        f"<tr><th>teacher</th><td>{esc(card.teacher)}</td></tr>",
        f"<tr><th>training</th><td>{card.steps} steps on {card.train_images} images</td></tr>",
        f"<tr><th>images</th><td>{result.n_normal} normal, {result.n_abnormal} abnormal</td></tr>",
        f"<tr><th>AUROC</th><td>{result.auroc:.3f}</td></tr>",
        f"<tr><th>EER</th><td>{result.eer:.3f}</td></tr>",
        f"<tr><th>threshold</th><td>{result.threshold:.3f} ({esc(card.threshold_policy)})</td></tr>",
        f"<tr><th>FAR (abnormal accepted)</th><td>{result.far:.3f}</td></tr>",
        f"<tr><th>FRR (normal rejected)</th><td>{result.frr:.3f}</td></tr>",
        "</table>",
        f"<h2>Confusion at threshold {result.threshold:.3f}</h2>",
        "<table><tr><th>actual \\ verdict</th><th>accepted</th><th>rejected</th></tr>",
    ]
    for actual, counts in confusion.items():
        parts.append(f"<tr><th>{actual}</th><td>{counts['accepted']}</td><td>{counts['rejected']}</td></tr>")
    parts += [
        '</table><p><a href="confusion.csv">confusion.csv</a></p>',
        "<h2>Score distributions</h2>",
        '<p><img src="scores.png" alt="normal and abnormal score histograms with the threshold"></p>',
        "<h2>ROC</h2>",
        '<p><img src="roc.png" alt="ROC curve"></p>',
    ]
    for kind, title in (
        ("false_accept", "Worst false accepts (abnormal images accepted, lowest score first)"),
        ("false_reject", "Worst false rejects (normal images rejected, highest score first)"),
    ):
        parts.append(f"<h2>{title}</h2>")
        shown = [m for m in mistakes if m.kind == kind]
        if not shown:
            parts.append("<p>none at this threshold</p>")
        for m in shown:
            parts.append(
                f'<figure><img src="{esc(m.png)}" alt="{esc(m.path.name)}">'
                f"<figcaption>{esc(m.path.name)}: score {m.score:.3f}; "
                "left the image, right its anomaly map (red = anomalous)</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
