"""Training internals: aligned inputs and splits, the torch recipe, per-family trainers."""
