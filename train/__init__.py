"""Training: datasets, audit and splits, training, evaluation and reports (needs torch)."""
