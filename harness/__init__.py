"""What the load test, the benchmarks, the image tools and the tests share: process trees, the
hardened container runner, the rendered Deployment and the pod emulation (harness/README.md).
"""
