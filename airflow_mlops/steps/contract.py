"""The environment contract between the orchestrator (operators, runtimes) and a step process.

Both sides import these names, so a renamed variable breaks at import, not in production.
"""

from __future__ import annotations

# Where the step writes its result JSON (a local path or s3:// URI). The orchestrator reads it after exit.
RESULT_URI = "MLOPS_RESULT_URI"
# Where the step keeps checkpoints; unique to (dag, task, logical run) so every retry resumes.
CHECKPOINT_URI = "MLOPS_CHECKPOINT_URI"
# Where the step writes its outputs (predictions, datasets).
OUTPUT_URI = "MLOPS_OUTPUT_URI"
# Input datasets.
TRAIN_DATA_URI = "MLOPS_TRAIN_DATA_URI"
TEST_DATA_URI = "MLOPS_TEST_DATA_URI"
LABEL_COLUMN = "MLOPS_LABEL_COLUMN"
# Hyperparameters as a JSON object.
PARAMS = "MLOPS_PARAMS"
# Lineage: who asked for this run.
DAG_ID = "MLOPS_DAG_ID"
TASK_ID = "MLOPS_TASK_ID"
AIRFLOW_RUN_ID = "MLOPS_AIRFLOW_RUN_ID"
TRY_NUMBER = "MLOPS_TRY_NUMBER"
DATA_VERSION = "MLOPS_DATA_VERSION"
GIT_SHA = "MLOPS_GIT_SHA"
# MLflow's own variables: mlflow.start_run() continues MLFLOW_RUN_ID, so every retry logs into one run.
MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
MLFLOW_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
MLFLOW_RUN_ID = "MLFLOW_RUN_ID"
MLFLOW_EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"
MLFLOW_TRACKING_TOKEN = "MLFLOW_TRACKING_TOKEN"
MLFLOW_TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"
MLFLOW_TRACKING_PASSWORD = "MLFLOW_TRACKING_PASSWORD"
# torchrun rendezvous for distributed workers.
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
WORLD_SIZE = "WORLD_SIZE"
NODE_RANK = "NODE_RANK"

# Exit code a step uses for "bad input" (missing column, unreadable data): user error, never retried.
EXIT_BAD_INPUT = 2

# Root of the artifact store (local path or s3://), given to every step.
ARTIFACT_ROOT = "MLOPS_ARTIFACT_ROOT"
