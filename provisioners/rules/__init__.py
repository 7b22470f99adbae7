"""A platform's rules, applied to any source of its kind: OpenShift's SCC grants and non-root pods
on a Kubernetes cluster.
"""
