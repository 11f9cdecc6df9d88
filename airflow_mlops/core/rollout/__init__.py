"""Progressive rollout core: strategy specs, analysis conditions and the engine (pure: no Airflow, no I/O)."""

from airflow_mlops.core.rollout.conditions import Condition, MissingValue
from airflow_mlops.core.rollout.engine import (
    Abort,
    Action,
    Analyse,
    AwaitApproval,
    Done,
    Measurement,
    Pause,
    Promote,
    RolloutState,
    SetWeight,
    analysis_verdict,
    applied,
    decide,
    judge,
    metric_verdict,
    strategy_of,
)
from airflow_mlops.core.rollout.spec import (
    AnalysisSpec,
    BlueGreenStrategy,
    CanaryStrategy,
    MetricCheck,
    PlanStep,
    Strategy,
    strategy_from_dict,
)

__all__ = [
    "Abort", "Action", "Analyse", "AnalysisSpec", "AwaitApproval", "BlueGreenStrategy", "CanaryStrategy",
    "Condition", "Done", "Measurement", "MetricCheck", "MissingValue", "Pause", "PlanStep", "Promote",
    "RolloutState", "SetWeight", "Strategy", "analysis_verdict", "applied", "decide", "judge", "metric_verdict",
    "strategy_from_dict", "strategy_of",
]
