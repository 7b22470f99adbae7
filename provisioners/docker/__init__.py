"""Mode ``docker``: Ray nodes as containers of one Docker engine."""

from provisioners.docker.provisioner import DockerProvisioner

__all__ = ["DockerProvisioner"]
