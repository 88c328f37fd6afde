"""gandistill: compress image classifiers with GAN-based knowledge distillation.

The library (plain PyTorch + thin I/O; it never imports kfp). The pipeline layer lives in
gandistill_components / gandistill_pipeline (the folders components/ and pipeline/).
"""
