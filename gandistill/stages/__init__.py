"""One module per DAG stage. Each exposes `run(params, <input paths>, out_dir, tracker) -> dict`.

Stages take paths and params and return metrics; they do not know they run inside kfp.
"""
