"""gen2-connector 1.0.0b67 with its node addresses fixed (``--ray-ibm-compat``).

Since 1.0.0b64 the connector reads ``network_interfaces[0].primary_ip`` and hands it to Ray
as the node's address; the VPC API has answered there with a reserved-IP *object*
(``{"address": "10.240.0.4", ...}``) since at least API version 2022-06-30, so Ray exports it
as ``RAY_HEAD_IP`` and dials it. This subclass returns its ``address``, nothing else.

Standalone on purpose: the head's autoscaler imports it by its module path
(``rc_gen2_compat.IBMGen2NodeProvider``), so the ``ibm`` mode copies this one file to the head
and puts its directory on ``PYTHONPATH`` there and for the ``ray`` CLI here.
"""

from gen2.node_provider import IBMGen2NodeProvider as _Connector


class IBMGen2NodeProvider(_Connector):  # type: ignore[misc]
    def internal_ip(self, node_id):  # type: ignore[no-untyped-def]
        ip = super().internal_ip(node_id)
        return ip.get("address") if isinstance(ip, dict) else ip
