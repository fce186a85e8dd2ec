"""Data layer: manifests, data root, embedded datasets, loaders, episodes and GZSL splits."""
