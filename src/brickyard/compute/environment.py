"""The environment handed to user-code processes (drivers, workers, kernels, job tasks)."""
from __future__ import annotations

import os
from collections.abc import Mapping

# The workspace's own configuration and credentials (master key, bootstrap token, database URL,
# Key Vault client secret, the CLI credentials of whoever started it) never reach user code.
PRIVATE_PREFIXES = ("BRICKYARD_", "DATABRICKS_", "MLFLOW_", "AZURE_CLIENT_SECRET", "PYSPARK_GATEWAY_")


def user_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without the workspace's private variables."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.startswith(PRIVATE_PREFIXES)}
