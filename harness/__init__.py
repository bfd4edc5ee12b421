"""Process, port and HTTP helpers shared by the tests, the load-test runner and the benchmarks."""
