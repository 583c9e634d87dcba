"""How `serve` lays out a slide's review for a microscopist: the cells grouped by why they are shown, in the order that
finds parasites soonest, each captioned and answered in a microscopist's words.

The decisions stay the app's ("confirm": its call is right; "reject": it
is wrong, edge_app.review), but a person should never have to work out
which of the two means "parasite" for a given cell: the buttons say it.
"""

from __future__ import annotations

from edge_app.review import ReviewCell

#: The groups, in the order shown: the flagged cells hold most parasites, then the borderline ones; the spot checks,
#: a random sample of the rest, the fewest.
GROUPS = ("flagged", "near", "enlarged", "white", "spot")
NAMES = {"flagged": "Flagged", "near": "Borderline", "enlarged": "Enlarged", "white": "White cells", "spot": "Spot checks"}
HELP = {"flagged": "the app counts these as infected",
        "near": "not counted, but the app was unsure",
        "enlarged": "not counted, but larger than their neighbours (P. vivax enlarges the cells it infects)",
        "white": "left out of the count as white cells",
        "spot": "a random sample of the other cells"}


def grouped(cells: list[ReviewCell]) -> list[tuple[str, list[ReviewCell]]]:
    """The cells by group (GROUPS order, empty groups left out), the likeliest parasites first within each: by the
    app's score, white cells in field order."""
    out = []
    for kind in GROUPS:
        members = [c for c in cells if c.kind == kind]
        if kind != "white":
            members.sort(key=lambda c: -c.probability)
        if members:
            out.append((kind, members))
    return out


def caption(cell: ReviewCell, threshold: float) -> str:
    """Why the cell is shown, with the app's score (its P(Parasitized)) and, where it matters, the score it counts from."""
    score = f"app's score {cell.probability:.2f}"
    return {"flagged": f"Flagged as infected ({score})",
            "near": f"Borderline: {score}, under the {threshold:.2f} it counts from",
            "enlarged": f"Enlarged for its field ({score})",
            "white": "Set apart as a white cell, not counted",
            "spot": f"Spot check ({score})"}[cell.kind]


def answer(cell: ReviewCell, decision: str) -> str:
    """What a decision on this cell says about it, as its button and its decided state read."""
    parasite = (decision == "confirm") == (cell.kind == "flagged")
    if cell.kind == "white":
        return "Infected red cell" if parasite else "White cell"
    return "Parasite" if parasite else "No parasite"
