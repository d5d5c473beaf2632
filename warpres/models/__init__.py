"""PyTorch networks: the reference every exported graph is checked against."""
