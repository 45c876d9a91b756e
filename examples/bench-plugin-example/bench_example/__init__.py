"""A worked example of a bench plug-in package: one pretext task, one encoder and one dataset of its own."""
