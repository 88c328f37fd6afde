"""Quality and speed benchmarks (not tests): results tables live in bench/results/."""
