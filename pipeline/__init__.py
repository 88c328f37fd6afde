"""The gandistill DAG: build, compile, run locally (kfp.local), submit to a cluster."""
