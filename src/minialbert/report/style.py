"""How every figure looks: the Okabe-Ito palette, one colour per model in a fixed order, markers
per fine-tuning mode, PNG + SVG output, and the placeholder drawn when a figure has no data.

Colours follow the model, never the figure, so "distilled" is the same blue everywhere: the
teacher is black, students take the palette in config order, floors are grey.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import staged_file

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Yellow is last: it is faint on white.
OKABE_ITO = {
    "black": "#000000", "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73",
    "vermillion": "#D55E00", "purple": "#CC79A7", "sky_blue": "#56B4E9", "yellow": "#F0E442",
}
STUDENT_COLOURS = [v for k, v in OKABE_ITO.items() if k != "black"]
FLOOR_COLOUR = "#7F7F7F"
FLOORS = ("majority", "tfidf-logreg")

MODE_ORDER = ("full", "adapter", "lora", "floor")
MODE_MARKERS = {"full": "o", "adapter": "^", "lora": "s"}
MODE_LINES = {"full": "-", "adapter": "--", "lora": ":"}
MODE_NAMES = {"full": "full fine-tuning", "adapter": "adapters only", "lora": "LoRA"}


class ModelStyle:
    """Order, colour and labels of the models: the teacher, then the students in config order,
    then anything else seen (floors last)."""

    def __init__(self, students: list[str], frozen_random: set[str] = frozenset()):
        self.order = ["teacher", *[s for s in students if s != "teacher"]]
        # students whose adapter arm trains adapters on top of a frozen *random* encoder
        self.frozen_random = set(frozen_random)

    def add(self, names) -> None:
        for name in names:
            if name not in self.order and name not in FLOORS:
                self.order.append(name)

    def sort_key(self, model: str) -> tuple[int, int]:
        if model in FLOORS:
            return (1, FLOORS.index(model))
        self.add([model])
        return (0, self.order.index(model))

    def sorted(self, models) -> list[str]:
        return sorted(dict.fromkeys(models), key=self.sort_key)

    def arm_key(self, model: str, mode: str) -> tuple:
        """(model, mode) in reading order: models as above, full before adapter before LoRA."""
        return (*self.sort_key(model), MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)

    def colour(self, model: str) -> str:
        if model == "teacher":
            return OKABE_ITO["black"]
        if model in FLOORS:
            return FLOOR_COLOUR
        self.add([model])
        students = [m for m in self.order if m != "teacher"]
        return STUDENT_COLOURS[students.index(model) % len(STUDENT_COLOURS)]

    def label(self, model: str, mode: str | None = None, show_mode: bool = False) -> str:
        """The model's name (`model / mode` with show_mode); the adapter arm of a never-distilled
        random student says what it is."""
        if mode == "adapter" and model in self.frozen_random:
            return f"{model} (frozen random encoder)"
        return f"{model} / {mode}" if show_mode and mode else model


def pyplot():
    """matplotlib without a display, with the house style (readable sizes, light grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.color": "#DDDDDD", "grid.linewidth": 0.6, "axes.axisbelow": True,
        "svg.fonttype": "path", "figure.dpi": 100, "savefig.dpi": 150,
        # fixed ids and no timestamp: the same data gives the same SVG bytes
        "svg.hashsalt": "minialbert", "path.simplify": True,
    })
    return plt


def legend_below(fig, *groups: list[tuple], max_cols: int = 5) -> None:
    """One legend for the whole figure, under the axes (never over the data). Each group is a list
    of (handle, label) and starts its own row (models, then line or marker meanings)."""
    groups = [g for g in groups if g]
    if not groups:
        return
    from matplotlib.lines import Line2D

    ncol = min(max_cols, max(len(g) for g in groups))
    blank = (Line2D([], [], alpha=0), "")
    grid = []  # row-major, each group padded to whole rows
    for g in groups:
        grid += list(g) + [blank] * (-len(g) % ncol)
    nrows = len(grid) // ncol
    # matplotlib fills a legend column by column: hand it the grid transposed
    cells = [grid[r * ncol + c] for c in range(ncol) for r in range(nrows)]
    fig.legend([h for h, _ in cells], [lab for _, lab in cells], loc="outside lower center", frameon=False, ncol=ncol)


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """`<stem>.png` and `<stem>.svg`, each written atomically."""
    plt = pyplot()
    paths = []
    for ext in ("png", "svg"):
        path = Path(out_dir) / f"{stem}.{ext}"
        with staged_file(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def placeholder(title: str, note: str):
    """A figure that says why it is empty, so a partial run still has every file of the report."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.2), layout="constrained")
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.5, 0.45, note, ha="center", va="center", wrap=True, color="#444444", fontsize=10,
            transform=ax.transAxes)
    return fig


def compact(n) -> str:
    """Parameter counts as a reader says them: 5.9M, 110M, 850k."""
    if n is None or n != n:
        return "–"
    n = float(n)
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n:.0f}"
