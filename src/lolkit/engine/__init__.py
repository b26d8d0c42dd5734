"""Training engine components."""
