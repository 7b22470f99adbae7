"""A stand-in for the IBM Cloud endpoints the Gen2 connector calls: IAM's token exchange and
the VPC API's instances, floating IPs, keys, volumes and security-group rules.

It answers in the shapes of the VPC API version the ``ibm-vpc`` SDK sends (an instance's
``primary_ip`` is a reserved-IP reference object, not a string), refuses a wrong API key as
IAM does, and wants ``version`` and ``generation=2`` on every VPC call. In the probe and the
tests it listens on loopback and nothing dials the addresses it hands out; in the ``ibm``
rehearsal (:mod:`provisioners.rehearsals.ibm`) it runs as a script in a container on the run's
internal network, and every address it hands out is backed by a container there: private IPs
from the subnet's CIDR, floating IPs from the run's floating network.

Standard library only: the rehearsal runs this file as it is, with the nodes' Python.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import json
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SUBNET_CIDR = "10.240.0.0/24"  # IBM's default first subnet of a zone
FLOATING_CIDR = "10.241.0.0/24"
ZONE = "us-south-1"
PAGE_LIMIT = 50
DELETING_S = 2.0  # an instance stays "deleting" this long after DELETE


def _jwt(lifetime: int = 3600) -> str:
    """An unsigned JWT with exp/iat: the SDK core reads them, never checks a signature."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'iat': now, 'exp': now + lifetime, 'sub': 'standin'})}.sig"


@dataclass
class Cloud:
    """The stand-in's account: one VPC, subnet and security group the user made beforehand."""

    api_key: str
    subnet_cidr: str = SUBNET_CIDR
    floating_cidr: str = FLOATING_CIDR
    vpc_id: str = "r006-vpc-standin"
    subnet_id: str = "0717-subnet-standin"
    security_group_id: str = "r006-sg-standin"
    resource_group_id: str = "rg-standin"
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    floating_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)  # "METHOD /path" of every request
    lock: threading.RLock = field(default_factory=threading.RLock)
    _private: Iterator[ipaddress.IPv4Address] = field(init=False)
    _public: Iterator[ipaddress.IPv4Address] = field(init=False)

    def __post_init__(self) -> None:
        # As the VPC: the first addresses of a subnet are reserved; instances get .4 onwards.
        self._private = itertools.islice(ipaddress.IPv4Network(self.subnet_cidr).hosts(), 3, None)
        self._public = ipaddress.IPv4Network(self.floating_cidr).hosts()
        self.rules["r006-rule-ssh"] = {
            "id": "r006-rule-ssh",
            "direction": "inbound",
            "protocol": "tcp",
            "port_min": 22,
            "port_max": 22,
            "remote": {"cidr_block": "0.0.0.0/0"},
        }

    # --- Objects, in the API's shapes ---------------------------------------------------------

    def create_instance(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        iid = f"0717_{uuid.uuid4()}"
        nic = f"0717-{uuid.uuid4()}"
        ip = str(next(self._private))
        name = body["name"]
        if any(i["name"] == name for i in self.instances.values()):
            raise ApiError(400, "validation_unique_failed", f"Instance name {name} already exists")
        boot = (body.get("boot_volume_attachment") or {}).get("volume") or {}
        vol_id = f"r006-{uuid.uuid4()}"
        self.volumes[vol_id] = {
            "id": vol_id,
            "name": boot.get("name") or f"{name}-boot",
            "status": "available",
            "capacity": boot.get("capacity", 100),
            "href": f"{base}/v1/volumes/{vol_id}",
            "profile": boot.get("profile") or {"name": "general-purpose"},
            "volume_attachments": [{"instance": {"id": iid, "name": name}, "type": "boot"}],
            "_delete_with": (body.get("boot_volume_attachment") or {}).get(
                "delete_volume_on_instance_delete", True
            ),
        }
        primary = {
            "id": nic,
            "name": "eth0",
            "href": f"{base}/v1/instances/{iid}/network_interfaces/{nic}",
            "resource_type": "network_interface",
            "primary_ip": {
                "address": ip,
                "id": f"0717-rip-{uuid.uuid4()}",
                "name": f"rip-{ip}",
                "href": f"{base}/v1/subnets/{self.subnet_id}/reserved_ips/{ip}",
                "resource_type": "subnet_reserved_ip",
            },
            "subnet": {"id": self.subnet_id},
        }
        inst = {
            "id": iid,
            "name": name,
            "href": f"{base}/v1/instances/{iid}",
            "crn": f"crn:v1:standin:public:is:{ZONE}:a/standin::instance:{iid}",
            "status": "pending",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "profile": body.get("profile") or {},
            "vpc": body.get("vpc") or {},
            "zone": body.get("zone") or {"name": ZONE},
            "image": body.get("image") or {},
            "resource_group": body.get("resource_group") or {},
            "keys": body.get("keys") or [],
            "primary_network_interface": primary,
            "network_interfaces": [primary],
            "boot_volume_attachment": {
                "volume": {"id": vol_id, "name": self.volumes[vol_id]["name"]}
            },
            "vcpu": {"architecture": "amd64", "count": 2},
            "memory": 8,
            "_running_at": time.monotonic() + 1.0,
        }
        self.instances[iid] = inst
        return inst

    def instance(self, iid: str) -> dict[str, Any]:
        inst = self.instances.get(iid)
        if inst is None:
            raise ApiError(404, "not_found", "Instance not found")
        if inst["status"] in ("pending", "starting") and time.monotonic() >= inst["_running_at"]:
            inst["status"] = "running"
        return inst

    def delete_instance(self, iid: str) -> None:
        """As the API: ``deleting`` for a moment (its NIC still answers), then gone."""
        inst = self.instance(iid)
        if inst["status"] != "deleting":
            inst["status"] = "deleting"
            inst["_gone_at"] = time.monotonic() + DELETING_S

    def reap(self) -> None:
        """Finish the deletions whose moment has passed (called before every request)."""
        now = time.monotonic()
        for iid, inst in list(self.instances.items()):
            if inst.get("_gone_at", now + 1) <= now:
                self._remove(iid, inst)

    def _remove(self, iid: str, inst: dict[str, Any]) -> None:
        del self.instances[iid]
        nic = inst["primary_network_interface"]["id"]
        for fip in self.floating_ips.values():
            if (fip.get("target") or {}).get("id") == nic:
                fip.pop("target")
        for vid, vol in list(self.volumes.items()):
            attached = [a for a in vol["volume_attachments"] if a["instance"]["id"] == iid]
            if attached and vol["_delete_with"]:
                del self.volumes[vid]
            elif attached:
                vol["volume_attachments"] = []

    def create_floating_ip(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        fid = f"r006-{uuid.uuid4()}"
        fip = {
            "id": fid,
            "name": body.get("name") or f"fip-{fid[-6:]}",
            "address": str(next(self._public)),
            "status": "available",
            "href": f"{base}/v1/floating_ips/{fid}",
            "zone": body.get("zone") or {"name": ZONE},
            "resource_group": body.get("resource_group") or {},
        }
        self.floating_ips[fid] = fip
        return fip

    def floating_ip(self, fid: str) -> dict[str, Any]:
        if fid not in self.floating_ips:
            raise ApiError(404, "not_found", "Floating IP not found")
        return self.floating_ips[fid]

    def create_key(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        kid = f"r006-{uuid.uuid4()}"
        if any(k["name"] == body.get("name") for k in self.keys.values()):
            raise ApiError(409, "key_name_conflict", f"Key name {body.get('name')} already exists")
        key = {
            "id": kid,
            "name": body.get("name"),
            "public_key": body.get("public_key", ""),
            "type": body.get("type", "rsa"),
            "href": f"{base}/v1/keys/{kid}",
            "fingerprint": "SHA256:standin",
            "resource_group": body.get("resource_group") or {},
        }
        self.keys[kid] = key
        return key


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"errors": [{"code": self.code, "message": self.message}], "trace": "standin"}


def public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _page(
    kind: str, items: list[dict[str, Any]], query: dict[str, str], url: str
) -> dict[str, Any]:
    """One page of a collection, with ``next.href`` carrying ``start=`` as the API's does."""
    limit = int(query.get("limit", PAGE_LIMIT))
    start = int(query.get("start", 0))
    chunk = items[start : start + limit]
    out: dict[str, Any] = {
        kind: [public(i) for i in chunk],
        "limit": limit,
        "total_count": len(items),
        "first": {"href": f"{url}?limit={limit}"},
    }
    if start + limit < len(items):
        out["next"] = {"href": f"{url}?limit={limit}&start={start + limit}"}
    return out


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:  # quiet: calls are recorded
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _send(self, status: int, body: dict[str, Any] | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        cloud = self.server.cloud
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with cloud.lock:
            cloud.reap()
            cloud.calls.append(f"{method} {url.path}")
            try:
                if url.path == "/healthz":
                    self._send(200, {"ok": True})
                    return
                if url.path == "/identity/token" and method == "POST":
                    self._send(200, self._token(raw))
                    return
                status, body = self._vpc(method, url.path, query, raw)
            except ApiError as exc:
                self._send(exc.status, exc.body())
                return
        self._send(status, body)

    def _token(self, raw: bytes) -> dict[str, Any]:
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        if form.get("apikey") != self.server.cloud.api_key:
            raise ApiError(400, "BXNIM0415E", "Provided API key could not be found.")
        token = _jwt()
        self.server.cloud.tokens.add(token)
        return {
            "access_token": token,
            "refresh_token": "not-used",
            "token_type": "Bearer",
            "expires_in": 3600,
            "expiration": int(time.time()) + 3600,
        }

    def _vpc(
        self, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        cloud = self.server.cloud
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in cloud.tokens:
            raise ApiError(401, "not_authorized", "The request is not authorized")
        if not query.get("version") or query.get("generation") != "2":
            raise ApiError(400, "bad_request", "version and generation=2 are required")
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            raise ApiError(404, "not_found", f"no route {path}")
        parts = parts[1:]
        base = self.server.base
        body = json.loads(raw) if raw else {}
        url = f"{base}{path}"
        match (method, parts):
            case ("GET", ["instances"]):
                found = [cloud.instance(i) for i in list(cloud.instances)]
                if "name" in query:
                    found = [i for i in found if i["name"] == query["name"]]
                return 200, _page("instances", found, query, url)
            case ("POST", ["instances"]):
                return 201, public(cloud.create_instance(body, base))
            case ("GET", ["instances", iid]):
                return 200, public(cloud.instance(iid))
            case ("DELETE", ["instances", iid]):
                cloud.delete_instance(iid)
                return 204, None
            case ("POST", ["instances", iid, "actions"]):
                inst = cloud.instance(iid)
                inst["status"] = {"stop": "stopped", "start": "running", "reboot": "running"}[
                    body["type"]
                ]
                return 201, {
                    "id": f"action-{uuid.uuid4()}",
                    "type": body["type"],
                    "status": "completed",
                }
            case ("GET", ["instances", iid, "network_interfaces", nic, "floating_ips"]):
                cloud.instance(iid)
                fips = [
                    f
                    for f in cloud.floating_ips.values()
                    if (f.get("target") or {}).get("id") == nic
                ]
                return 200, {"floating_ips": [public(f) for f in fips]}
            case ("PUT", ["instances", iid, "network_interfaces", nic, "floating_ips", fid]):
                cloud.instance(iid)
                fip = cloud.floating_ip(fid)
                fip["target"] = {"id": nic, "name": "eth0", "resource_type": "network_interface"}
                return 201, public(fip)
            case ("GET", ["floating_ips"]):
                return 200, _page("floating_ips", list(cloud.floating_ips.values()), query, url)
            case ("POST", ["floating_ips"]):
                return 201, public(cloud.create_floating_ip(body, base))
            case ("GET", ["floating_ips", fid]):
                return 200, public(cloud.floating_ip(fid))
            case ("DELETE", ["floating_ips", fid]):
                cloud.floating_ip(fid)
                del cloud.floating_ips[fid]
                return 204, None
            case ("GET", ["keys"]):
                return 200, _page("keys", list(cloud.keys.values()), query, url)
            case ("POST", ["keys"]):
                return 201, public(cloud.create_key(body, base))
            case ("DELETE", ["keys", kid]):
                if cloud.keys.pop(kid, None) is None:
                    raise ApiError(404, "not_found", "Key not found")
                return 204, None
            case ("GET", ["volumes"]):
                return 200, _page("volumes", list(cloud.volumes.values()), query, url)
            case ("GET", ["security_groups", sg, "rules"]):
                if sg != cloud.security_group_id:
                    raise ApiError(404, "not_found", "Security group not found")
                return 200, {"rules": list(cloud.rules.values())}
            case ("POST", ["security_groups", sg, "rules"]):
                if sg != cloud.security_group_id:
                    raise ApiError(404, "not_found", "Security group not found")
                rule = {**body, "id": f"r006-rule-{uuid.uuid4()}"}
                cloud.rules[rule["id"]] = rule
                return 201, rule
            case ("DELETE", ["security_groups", sg, "rules", rid]):
                if sg != cloud.security_group_id or cloud.rules.pop(rid, None) is None:
                    raise ApiError(404, "not_found", "Security group rule not found")
                return 204, None
        raise ApiError(404, "not_found", f"the stand-in has no {method} {path}")


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cloud: Cloud, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.cloud = cloud
        self.base = f"http://{host}:{self.server_address[1]}"


@contextlib.contextmanager
def serve(api_key: str) -> Iterator[StandIn]:
    """The stand-in on a free loopback port, in a thread, for as long as the block runs."""
    server = StandIn(Cloud(api_key))
    thread = threading.Thread(target=server.serve_forever, name="ibm-standin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


#: What the stand-in prints once its socket is bound.
READY_LINE = "ibm-standin: serving on"


def main() -> None:
    """``python ibm_standin.py --port P --api-key K --subnet CIDR --floating CIDR`` (in a container)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--subnet", default=SUBNET_CIDR)
    parser.add_argument("--floating", default=FLOATING_CIDR)
    args = parser.parse_args()
    server = StandIn(Cloud(args.api_key, args.subnet, args.floating), args.host, args.port)
    sys.stdout.write(f"{READY_LINE} {server.base}\n")  # bound: the rehearsal waits for it
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
