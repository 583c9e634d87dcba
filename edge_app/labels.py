"""Class names, as in the NIH dataset's folder names; index 1 is the positive class."""

LABELS: tuple[str, str] = ("Uninfected", "Parasitized")
POSITIVE = LABELS[1]
