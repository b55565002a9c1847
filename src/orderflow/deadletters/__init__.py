"""Dead letters: work that needs a person. Inspect, group by cause, redrive, or discard."""
