"""Mode ``docker``: the ``ray start`` deployer on containers of one Docker engine.

``RayStartMode(ContainerHosts())``: :mod:`provisioners.docker.provisioner` declares it,
:mod:`provisioners.docker.hosts` is the node source.
"""

from provisioners.docker.provisioner import DockerProvisioner

__all__ = ["DockerProvisioner"]
