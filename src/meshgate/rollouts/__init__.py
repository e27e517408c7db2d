"""Progressive delivery: rollouts judged by live stats, A/B comparison, anomaly detection."""
