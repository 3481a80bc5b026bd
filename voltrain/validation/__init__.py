"""Validation during training: a fixed set of samples, or every block of the gt ROIs."""
