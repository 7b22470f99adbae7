"""How Ray gets onto the nodes: ``ray start`` (raystart), Ray's cluster launcher (launcher) and
KubeRay (operator, kuberay, ingress). Each defines the Protocol of the node source it is given.
"""
