"""The runtime: informers, the work queue, workers, leader election, events, metrics, logs, wiring."""
