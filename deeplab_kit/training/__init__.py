"""Training a run: its configuration and recipes, the session loop with exact resume, the train
step and its loss, the schedule, checkpoints, run files, data parallelism, the device and the
fastest path on it.

    from deeplab_kit.training.config import RunConfig
    from deeplab_kit.training.loop import train
    result = train(RunConfig.from_recipe("demo", data_root="data/synthetic"), "runs/demo")

| module | what it holds |
|---|---|
| `config` | `RunConfig` (every setting of a run) and the recipes; torch-free, so `--help` is fast |
| `loop` | `train`: the training loop, one session at a time, resumed exactly from checkpoints |
| `step` | `TrainStep`: forward, loss, backward, optimiser update on the chosen path |
| `loss` | `Criterion`: cross-entropy over labelled pixels plus the weighted aux loss |
| `schedule` | the optimiser, the learning-rate schedule, what a resumed run may change |
| `checkpoint` | self-describing checkpoints, written atomically, loaded with weights_only=True |
| `run_files` | a run folder's history.csv, metrics.json and metrics tables |
| `lock` | one writer per run folder |
| `tensorboard` | TensorBoard curves and images of a run |
| `distributed` | torchrun process groups and the few collectives training needs |
| `device` | the device ("auto": cuda, mps, cpu), autocast, determinism |
| `fastpath` | precision and memory format chosen by timing the candidates on this machine |
| `machine` | the machine's fingerprint: what selects its kernels |
"""
