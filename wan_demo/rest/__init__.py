"""rest: the REST job API with the hosted provider's contract (/api/v1/apikey/...). Routes, typed
schema, Bearer keys, input fetching (base64 / data URI / SSRF-guarded https). Routes call
RestService, which reaches jobs only through jobs.service.JobService.

May import: core, jobs, media, fastapi/starlette/pydantic. Not web or model.
"""
