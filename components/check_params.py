def check_params(seed: int, gan_steps: int, distill_steps: int):
    """The run's typed knobs against the params schema, before any stage runs (a bad value set in the
    KFP UI fails here, not hours later in the stage that reads it). Its inputs are the knobs alone, so
    it stays cached while they do."""
    knobs = dict(locals())
    from gandistill import stage_params

    stage_params.check_task(knobs)
