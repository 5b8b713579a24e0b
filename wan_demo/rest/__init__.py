"""rest: the REST job API with the hosted provider's contract (/api/v1/apikey/...). Routes, typed
schema, Bearer keys, input fetching (base64 / data URI / SSRF-guarded https). Routes call
RestService, which reaches jobs only through jobs.service.JobService. Also the operations routes
(ops.py: /metrics, /healthz, /readyz off the REST prefix) and the submit rate limit's storage in the
job store (limitstore.py, for the `limits` library). Community LoRAs: the payload's `loras` shape
(lora_schema.py); their https URLs are fetched under the URL-input rules (inputs.py).

May import: core, jobs, media, fastapi/starlette/pydantic, limits. Not web or model.
"""
