"""Why a run is good or bad: the data audit (more diagnoses to come: overfitting, a training
monitor, forgetting, error analysis)."""
