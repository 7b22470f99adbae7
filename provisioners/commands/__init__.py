"""Commands of ``python -m provisioners`` (and ``ray-conformance``), one module each."""
