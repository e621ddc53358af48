"""Storage adapters: the lake (partitioned Parquet on a local folder or S3), the S3 client and key builders.

Only :mod:`capacity_forecaster.storage.object_store` and :mod:`~capacity_forecaster.storage.s3_store` know
whether the lake is local or on S3; everything else goes through :class:`~capacity_forecaster.storage.lake.Lake`.
"""
