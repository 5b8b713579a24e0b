"""jobs: the one queue shared by the UI, the Gradio API and REST, on one machine or many. Job store
(store/: interface, SQLite and PostgreSQL backends over shared SQL), file storage (storage/: local folders or
an S3 bucket), JobService (submit, look up, cancel, position, ETA), the Worker (one generation at a
time, a lease kept by its heartbeat), the workers directory (what API nodes plan with) and the
clean-up sweeper. Operations: metrics.py (Prometheus), health.py (readiness, graceful drain),
probes.py (/metrics, /healthz, /readyz without a web framework: a worker's own port), logs.py (text or
JSON lines with request id, job id, owner hash).

May import: core, generate, model (the Engine the worker drives), media, psycopg/psycopg_pool, boto3
(lazily, in their backends), prometheus_client, python-json-logger (pythonjsonlogger). Not web or rest.
"""
