"""The trainers of the world's models, one module a stage, and ``retrain``, which runs them from scratch in order."""
