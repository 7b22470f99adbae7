"""Where the nodes come from: each source implements the Protocol of the deployer it serves
(NodeHosts for ``ray start``, the launcher's machines for ``ray up``, KubeSource for KubeRay).
"""
