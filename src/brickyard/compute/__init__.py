"""Compute: runtimes, node types, cluster processes on real Apache Spark."""
