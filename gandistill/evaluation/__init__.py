"""Evaluation metrics: classification, calibration, cost, GAN quality, privacy audit, reports."""
