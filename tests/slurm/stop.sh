#!/usr/bin/env bash
# Stops what tests/slurm/start.sh started.
pkill -x slurmd; pkill -x slurmctld; pkill -x munged
exit 0
