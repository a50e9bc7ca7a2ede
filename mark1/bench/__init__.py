"""`mark1 bench`: each stage measured on this machine, side by side in one run, as ratios where a ratio is the
honest figure. One module per stage; `run` assembles them. The stages' own code runs, never a copy."""

STAGES = ("decode", "extract", "precision", "cache", "train", "answer", "infer")
