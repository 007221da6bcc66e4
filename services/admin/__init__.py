"""Admin monitoring: queue depth, workers online, job counts and throughput (read-only)."""
