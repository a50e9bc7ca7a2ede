"""The trainable projector and the model that joins it to the frozen LLM."""
