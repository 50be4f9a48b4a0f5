"""recgym."""
