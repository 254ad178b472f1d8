"""Training loops: the architecture search and (later) final-network training."""
