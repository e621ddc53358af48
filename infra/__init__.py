"""The AWS CDK stack of the Capacity Forecaster: one construct per component, composed in ``stack.py``."""
