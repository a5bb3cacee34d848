"""The rebaser: stage 5 in chunk order within each group, groups in parallel, then the join.
On RabbitMQ, groups are sharded over single-active-consumer queues, each owned by one process
through an exclusive lease (`service.py`); on SQS, one FIFO queue grouped by job:group
(`sqs_rebaser.py`). The join writes the output (`join.py`)."""
