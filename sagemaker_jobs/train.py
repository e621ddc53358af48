"""SageMaker training entry point: run the training container contract under /opt/ml.

SageMaker starts the container as ``docker run <image> train``; the image's ENTRYPOINT runs this file, so the
``train`` argument lands in ``sys.argv`` and is ignored. ``SM_CONTRACT_ROOT`` moves the contract root (tests,
local runs); everything else lives in ``capacity_forecaster.forecasting.job``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from capacity_forecaster.forecasting.job import run_training_job
from capacity_forecaster.redact import install_log_redaction

if __name__ == "__main__":
    install_log_redaction()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run_training_job(Path(os.environ.get("SM_CONTRACT_ROOT", "/opt/ml"))))
