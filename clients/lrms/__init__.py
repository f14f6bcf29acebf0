"""LRMS plugins: the batch-system side of WNoDeS. Each batch system gets a thin adapter (Slurm's
job_submit.lua here; Grid Engine's starter method, HTCondor's job wrapper and PBS prologues fit
the same contract) around one program, ``run_job``: given an image, the job's cores, memory,
uid and node, it runs the job script in a fresh VM through the gateway's public API and behaves
as the script would have on bare metal (output, exit code, signals)."""
