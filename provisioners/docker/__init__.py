"""Mode ``docker``: Ray nodes as containers of one Docker engine, and the node image they use."""

from provisioners.docker.image import ensure_node_image
from provisioners.docker.provisioner import DockerProvisioner

__all__ = ["DockerProvisioner", "ensure_node_image"]
