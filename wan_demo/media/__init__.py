"""media: pictures in, videos out. Decode untrusted image bytes (format allow-list, pixel cap),
resize to the planned size; write the MP4 (settings inside), thumbnail and JSON sidecar.

May import: core, PIL, numpy, imageio-ffmpeg.
"""
