"""The HTTP side: one small server with a route table (``/metrics``, ``/healthz``) and the
Prometheus metrics it serves."""
