"""Image models: a small CNN on scikit-learn's bundled 8x8 digits."""
