"""Small shared networks (probe ResNets, 4-layer CNN, encoder-decoder, MLPs)."""
