"""bench: which self-supervised pretext task gives the best encoder at each label budget, with evidence."""

__version__ = "0.1.0"
