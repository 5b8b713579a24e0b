"""jobs: the one queue shared by the UI, the Gradio API and REST. Job store (interface + SQLite),
JobService (submit, look up, cancel, position, ETA), the Worker (one generation at a time) and the
clean-up sweeper.

May import: core, generate, model (the Engine the worker drives), media. Not web or rest.
"""
