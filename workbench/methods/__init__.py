"""One module per method, each with the same scikit-learn-style surface."""
