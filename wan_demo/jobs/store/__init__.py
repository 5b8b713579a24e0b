"""jobs.store: the job store, the queue and state of record for every request.

base.py (the JobStore interface and make_store), sql.py / sql_reads.py / sql_events.py / sql_ops.py
(the SQL both backends share; sql_ops: health, figures, the shared rate limit, wake-ups), sqlite.py
(the embedded default) and postgres.py (several processes on several machines) with listener.py (its
LISTEN connection), records.py (rows <-> Job, JSON columns).

May import: core, jobs.common, sqlite3, psycopg/psycopg_pool (lazily, in postgres.py and listener.py).
"""
