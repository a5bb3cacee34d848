"""The encoder: phase 1 (libvpx encodes each chunk on its own) and stage 4 (each chunk's first
frame encoded given the previous chunk's libvpx exit state), the parallel, CPU-heavy work.
A Celery worker on the encode queue (`excamera service encoder`), or AWS Lambda
(`lambda_handler.handler`); both run `services.adapter.handle` on each task message."""
