"""Tabular benchmarks: reference tables as arrays, and benchmarks of search strategies against them."""
