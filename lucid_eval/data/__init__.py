"""Data that ships with lucid-eval: the built-in English corpus and the demo checkpoint."""
