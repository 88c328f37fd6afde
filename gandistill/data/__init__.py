"""Dataset sources, the IDX reader, splits and batching."""
