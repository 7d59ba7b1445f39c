"""``framecast speed``: training and inference speed of a model, measured side by side with a plain reference.

    framecast speed --config FILE [--data.init_args.batch_size B] [--trainer.precision 32|bf16-mixed]
                    [--steps N] [--warmup W] [--inference-batch-size B] [--extra-precision P] [--compile]
                    [--json OUT] [--device cpu|cuda] [--model.KEY VALUE ...] [--data.init_args.KEY VALUE ...]

The model is built from the config's ``model:`` section exactly as ``framecast fit`` builds it (a
:class:`~framecast.module.FramePredictionModule`), and the input shape (context and horizon frames, size,
channels) from its ``data:`` section; the input is random, no data is read. What is timed:

* **training step**: what Lightning runs for one optimizer step of ``framecast fit``: the module's own
  ``training_step`` under Lightning's precision plugin (``bf16-mixed``: ``torch.autocast`` in bfloat16, so
  the convolutions run in bfloat16 and the loss in float32), ``backward``, and the plugin's own
  ``optimizer_step`` (the module's ``on_before_optimizer_step`` hook, gradient clipping as
  ``trainer.gradient_clip_val`` asks, the optimizer step), then the LR schedule step and ``zero_grad``;
* **inference**: a rollout of the horizon from the context under ``torch.inference_mode``;
* **reference**: for a ``convlstm`` model, a literal float32 eager ConvLSTM of the same configuration and
  weights with eight convolutions per cell (:mod:`framecast.profiling.reference`), timed in the same rounds;
* **convolution peak**: the model's own largest convolution (by FLOPs) alone, forward and forward+backward,
  in the chosen precision and at the same batch, timed in the same rounds: what this machine can do right
  now on the work the model consists of, so ``fraction_of_conv_peak`` says how close the model runs to it.

Every round times each candidate once, in alternating order (A B C, C B A, ...), so a change in the
machine's load hits all of them alike; the first ``--warmup`` rounds are not counted. Statistics are the
median, min, max and quartiles over the ``--steps`` counted rounds. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; a multiply-add is 2 FLOPs)
on one clip and scaled by the batch; ``frames_per_s`` counts the context and horizon frames of each clip.
Peak memory (``peak_memory_bytes``) is the candidate's own tensors kept between calls (weights, optimizer
state, inputs: ``state_bytes``) plus the working memory of one call (``peak_memory_rise_bytes``:
activations, gradients, temporaries), on CUDA from the allocator's peak, on the CPU from the allocation
events of ``torch.profiler`` (an extra untimed call after the warm-up), so each candidate is measured on
its own although all share one process.

Written: JSON to stdout and to ``--json OUT``; a short table to stderr.

Where things live:

* :mod:`~framecast.profiling.command`: the options (the shared command grammar) and ``main(argv)``;
* :mod:`~framecast.profiling.measure`: the benchmark itself: the candidates of each precision, the rounds,
  the JSON result;
* :mod:`~framecast.profiling.training`: one optimizer step through Lightning's own precision plugin, the
  module's optimizer, the reference ConvLSTM's candidates;
* :mod:`~framecast.profiling.harness`: candidates, interleaved rounds, statistics, memory;
* :mod:`~framecast.profiling.flops`: FLOP counting, the largest convolution and its peak, conv dtypes;
* :mod:`~framecast.profiling.report`: the machine description, per-phase results, the table;
* :mod:`~framecast.profiling.reference`: the literal float32 ConvLSTM compared against.
"""
