"""The model: the trainable projector, the frozen LLM, the two joined (VideoQAModel), checkpoints, scoring,
and `Mark1`, the one-pass Python API."""
