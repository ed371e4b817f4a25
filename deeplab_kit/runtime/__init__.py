"""What every part of a run computes on and writes, below the model, the data, evaluation and
training: the device and its processes, the arithmetic decided once, the machine's fingerprint,
and a run folder's files.

| module | what it holds |
|---|---|
| `device` | the device ("auto": cuda, mps, cpu), autocast, determinism, Apple's missing kernels |
| `distributed` | torchrun process groups and the few collectives a run needs |
| `arithmetic` | precision and memory layout (`Arithmetic`), decided once by a rule per machine kind |
| `fingerprint` | the machine's fingerprint: what selects its kernels |
| `checkpoint` | self-describing checkpoints, written atomically, loaded with weights_only=True |
| `lock` | one writer per run folder |
| `run_files` | a run folder's history.csv, metrics.json and metrics tables |
"""
