"""Training the residual branch: config, data, the no-edit and cycle paths, losses, teachers, the trainer."""
