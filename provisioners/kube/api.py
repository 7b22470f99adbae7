"""One Kubernetes cluster as the kube modes reach it: the API (python client) and ``kubectl``.

Objects are created, read, listed and deleted through the ``kubernetes`` client's dynamic
client (structured errors, no parsing of kubectl output); ``kubectl`` is used only where it
is the tool: rendering kustomize bases, ``exec`` with an exit status, and ``port-forward``.
The client is imported on first use: it costs over a second, and the plugin imports every
mode's module to read its options.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioners.contract.base import ProvisionError
from provisioners.util.runner import run
from provisioners.util.waits import WaitTimeout, wait_for

FIELD_MANAGER = "ray-conformance"


def one_line(exc: BaseException) -> str:
    """An API error's own message (its JSON ``message``), else the exception text, on one line."""
    body = getattr(exc, "body", None)
    if body:
        try:
            text = json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            text = str(body)
    else:
        text = str(getattr(exc, "reason", None) or exc)
    return " ".join(str(text).split())[:400]


def ref(obj: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` (or ``Kind/name``) for messages and inventories."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


@dataclass
class Kube:
    """A cluster reached through ``kubeconfig`` (and ``context``, else its current one)."""

    kubeconfig: Path
    #: The dynamic client's discovery cache, in the run's workdir: by default the client writes
    #: one into /tmp, shared by every run against the same address (stale across kind clusters
    #: that reuse a port, and left behind).
    cache_file: Path
    context: str | None = None
    kubectl_path: str = "kubectl"
    _api: Any = field(default=None, repr=False)
    _dyn: Any = field(default=None, repr=False)

    # -- the two ways in ------------------------------------------------------------------

    def kubectl(
        self, args: Iterable[str], timeout: float, *, stdin: str | None = None, what: str = ""
    ) -> str:
        argv = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        argv += list(args)
        return run(argv, timeout, stdin=stdin, what=what or f"kubectl {' '.join(list(args)[:2])}")

    def kubectl_argv(self, *args: str) -> list[str]:
        """argv of a long-lived kubectl (``port-forward``) for the background helper."""
        argv = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        return [*argv, *args]

    def api(self) -> Any:
        """The python client's ApiClient for this kubeconfig and context (os.environ untouched)."""
        if self._api is None:
            import kubernetes.config

            try:
                self._api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(self.kubeconfig), context=self.context, persist_config=False
                )
            except Exception as exc:  # missing file, unknown context, malformed YAML
                raise ProvisionError(
                    f"kubeconfig {self.kubeconfig}"
                    + (f" context {self.context!r}" if self.context else "")
                    + f": {one_line(exc)}"
                ) from None
        return self._api

    def dyn(self) -> Any:
        if self._dyn is None:
            import kubernetes.dynamic

            self._dyn = kubernetes.dynamic.DynamicClient(  # type: ignore[no-untyped-call]
                self.api(), cache_file=str(self.cache_file)
            )
        return self._dyn

    def core(self) -> Any:
        import kubernetes.client

        return kubernetes.client.CoreV1Api(self.api())

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
        self._api = self._dyn = None

    # -- reachability ---------------------------------------------------------------------

    def where(self) -> str:
        return f"{self.kubeconfig}" + (f" (context {self.context})" if self.context else "")

    def server_version(self, timeout: float) -> str:
        """``v1.34.2``; raises ProvisionError naming the kubeconfig when the API never answers."""
        import kubernetes.client

        version = kubernetes.client.VersionApi(self.api())
        try:
            info = wait_for(
                lambda: version.get_code(_request_timeout=min(5.0, timeout)),
                timeout=timeout,
                what=f"the Kubernetes API of {self.where()} to answer",
                interval=1.0,
            )
        except WaitTimeout as exc:
            raise ProvisionError(str(exc)) from None
        return str(info.git_version)

    # -- objects --------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Any:
        import kubernetes.dynamic.exceptions as dexc

        try:
            return self.dyn().resources.get(api_version=api_version, kind=kind)
        except dexc.ResourceNotFoundError:
            # A CRD installed after discovery ran: look again once before saying "not served".
            self.dyn().resources.invalidate_cache()
            return self.dyn().resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of one object; ProvisionError naming it and the API's reason."""
        try:
            res = self.resource(obj["apiVersion"], obj["kind"])
            meta = obj.get("metadata", {})
            out = res.server_side_apply(
                body=dict(obj),
                name=meta.get("name"),
                namespace=meta.get("namespace") if res.namespaced else None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except Exception as exc:
            raise ProvisionError(f"applying {ref(obj)} failed: {one_line(exc)}") from None
        return dict(out.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        """The object as a dict, or None when it does not exist."""
        import kubernetes.dynamic.exceptions as dexc

        try:
            res = self.resource(api_version, kind)
            return res.get(name=name, namespace=namespace).to_dict()
        except (dexc.NotFoundError, dexc.ResourceNotFoundError):
            return None

    def list_objects(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind (empty when the cluster does not serve the kind at all)."""
        import kubernetes.dynamic.exceptions as dexc

        try:
            res = self.resource(api_version, kind)
        except dexc.ResourceNotFoundError:
            return []
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        if res.namespaced and namespace:
            kwargs["namespace"] = namespace
        try:
            return [i.to_dict() for i in res.get(**kwargs).items]
        except dexc.NotFoundError:
            # Discovery still knew the kind, the server no longer serves it (its CRD was
            # deleted): nothing of it can exist.
            self.dyn().resources.invalidate_cache()
            return []

    def delete(self, obj: Mapping[str, Any], *, foreground: bool = True) -> None:
        """Delete one object if it still exists (cascading to what it owns)."""
        import kubernetes.dynamic.exceptions as dexc

        meta = obj.get("metadata", {})
        try:
            res = self.resource(obj["apiVersion"], obj["kind"])
            res.delete(
                name=meta["name"],
                namespace=meta.get("namespace") if res.namespaced else None,
                body={"propagationPolicy": "Foreground" if foreground else "Background"},
            )
        except (dexc.NotFoundError, dexc.ResourceNotFoundError):
            return

    def wait_gone(self, objs: Sequence[Mapping[str, Any]], timeout: float) -> None:
        """Wait until none of ``objs`` exists; the error names those still there."""

        def left() -> list[str]:
            out = []
            for o in objs:
                meta = o.get("metadata", {})
                if self.get(o["apiVersion"], o["kind"], meta["name"], meta.get("namespace")):
                    out.append(ref(o))
            return out

        seen: list[list[str]] = [[]]

        def gone() -> bool:
            seen[0] = left()
            return not seen[0]

        wait_for(
            gone,
            timeout=timeout,
            what=f"{len(objs)} object(s) to be deleted",
            interval=0.5,
            last_seen=lambda: "still there: " + ", ".join(seen[0]),
        )

    def events(self, namespace: str, name: str | None = None, limit: int = 5) -> list[str]:
        """The newest events in ``namespace`` (about object ``name``), newest last."""
        items = self.list_objects("v1", "Event", namespace=namespace)
        if name:
            items = [e for e in items if (e.get("involvedObject") or {}).get("name") == name]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [
            f"{(e.get('involvedObject') or {}).get('kind')}/{(e.get('involvedObject') or {}).get('name')}: "
            f"{e.get('reason')}: {' '.join(str(e.get('message', '')).split())}"
            for e in items[-limit:]
        ]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.list_objects("v1", "Pod", namespace=namespace, selector=selector)


def pod_state(pod: Mapping[str, Any]) -> str:
    """``name: phase, ready, why`` — what a person needs from a pod that is not ready."""
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    why = []
    for cs in status.get("containerStatuses") or status.get("container_statuses") or []:
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            if state.get(key):
                detail = state[key]
                why.append(
                    f"{cs.get('name')} {key}: {detail.get('reason')} {detail.get('message') or ''}".strip()
                )
    return f"{name}: {status.get('phase')}{', ready' if ready else ', not ready'}" + (
        f" ({'; '.join(why)})" if why else ""
    )


def pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def walk(obj: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside ``obj`` (to find containers in any workload template)."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)
