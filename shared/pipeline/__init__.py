"""ExCamera[n,x] as stage functions over a store (`stages`, `store`), run by the embedded
process-pool runner (`runner.run_job`, behind `excamera encode`) and, later, by the services.

    from shared.pipeline.runner import run_job
    summary = run_job("in.y4m", "out.webm", n=6, x=16)
"""
