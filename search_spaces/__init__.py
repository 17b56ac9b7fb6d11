"""robustnas."""
