"""Training a run: the session loop with exact resume, the run's parts, the train step and its
loss, the schedule, TensorBoard.

    from deeplab_kit.config import RunConfig
    from deeplab_kit.training.loop import train
    result = train(RunConfig.from_recipe("demo", data_root="data/synthetic"), "runs/demo")

| module | what it holds |
|---|---|
| `loop` | `train`: the training loop, one session at a time, resumed exactly from checkpoints |
| `build` | a run's parts from its configuration: the seeded model, the loaders, the arithmetic |
| `step` | `TrainStep`: forward, loss, backward, optimiser update in the given arithmetic |
| `loss` | `Criterion`: cross-entropy over labelled pixels plus the weighted aux loss |
| `schedule` | the optimiser, the learning-rate schedule, what a resumed run may change |
| `tensorboard` | TensorBoard curves and images of a run |
"""
