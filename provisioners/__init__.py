"""Deployment modes, layered (pyproject.toml's import-linter contracts enforce it):

- ``contract``: what a vendor implements and the harness calls (Protocols, options, registry);
- ``util``, ``kube``: plumbing (one way to run, to wait, to name; Kubernetes' API and toolchain);
- ``deployers``: how Ray gets onto nodes (``ray start``, Ray's cluster launcher, KubeRay);
- ``rehearsals``: stand-ins that let a cloud's real code path run on this machine;
- ``sources`` and ``rules``: where the nodes come from, and a platform's rules;
- ``modes``: one small module per built-in mode, composing the parts above;
- ``commands``, ``cli``: ``python -m provisioners`` (prepare, sweep, modes, options).
"""
