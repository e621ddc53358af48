"""AWS Capacity Forecaster: the domain package shared by the CLI, the Lambdas and the training job."""

__version__ = "0.1.0"
