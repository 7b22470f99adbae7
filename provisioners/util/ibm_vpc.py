"""The IBM VPC API as the connector calls it: the SDK's client, paging, an instance's address.

Shared by the mode (``provisioners.sources.ibm``) and its rehearsal stand-in, which reads its instances
through the same client a real account's would be read with.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from provisioners.contract.base import ProvisionError


def vpc_client(endpoint: str, api_key: str, iam_endpoint: str | None = None) -> Any:
    """The ibm-vpc SDK's client, as the connector builds it (IAM token, ``<endpoint>/v1``)."""
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    from ibm_vpc import VpcV1

    client = VpcV1(authenticator=IAMAuthenticator(api_key, url=iam_endpoint))
    client.set_service_url(endpoint.rstrip("/") + "/v1")
    client.set_http_config({"timeout": 60})
    return client


def collect(call: Callable[..., Any], kind: str) -> list[dict[str, Any]]:
    """Every page of a VPC collection (``next.href`` carries the ``start`` token)."""
    out: list[dict[str, Any]] = []
    start: str | None = None
    for _ in range(1000):  # bounded: 1000 pages of 50
        result = call(start=start).get_result()
        out += result[kind]
        nxt = (result.get("next") or {}).get("href")
        if not nxt:
            return out
        start = urllib.parse.parse_qs(urllib.parse.urlsplit(nxt).query)["start"][0]
    raise ProvisionError(f"more than 1000 pages of {kind}")


def primary_address(instance: Mapping[str, Any]) -> str:
    ip = instance["primary_network_interface"]["primary_ip"]
    return str(ip["address"] if isinstance(ip, Mapping) else ip)
