"""Load test of the iris classifier: locust users, an L4 balancer in front of replicas, faults.

`locustfile.py` is what locust runs against any host; `run.py` builds the local stage (replicas,
HAProxy) around it and injects the fault scenarios.
"""
