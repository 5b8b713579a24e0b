"""jobs: the one queue shared by the UI, the Gradio API and REST, on one machine or many. Job store
(store/: interface, SQLite and PostgreSQL backends over shared SQL), file storage (storage/: local folders or
an S3 bucket), JobService (submit, look up, cancel, position, ETA), the Worker (one generation at a
time, a lease kept by its heartbeat), the workers directory (what API nodes plan with) and the
clean-up sweeper.

May import: core, generate, model (the Engine the worker drives), media, psycopg/psycopg_pool, boto3
(lazily, in their backends). Not web or rest.
"""
