"""The splitter: consumes the ingest queue (plain JSON jobs from upstream systems and the API:
`ingest.py`) and runs each job's split (`split.py`: fetch the input under the operator's
policy, cut it into chunks, publish every chunk's libvpx encode, chain heads first)."""
