"""The similarity audit: learned descriptors, their indexes, verdicts and evidence sheets."""
