"""The state-decoder: stage 3 (each chunk's exit state, decoded from its libvpx stream) and
each group's check (decode the group's output, verify it, measure SSIM/PSNR). A Celery worker
on the decode queue (`excamera service decoder`), or AWS Lambda (`lambda_handler.handler`);
both run `services.adapter.handle` on each task message."""
