"""Pictures and videos of predictions: what ``framecast visualize`` writes, as functions a notebook can call.

* :mod:`framecast.viz.style`: the one colour language (context, predicted, beyond, error map) and time labels;
* :mod:`framecast.viz.figures`: matplotlib figures (comparison, surprise, hidden state, error curves) and
  :func:`~framecast.viz.figures.save`;
* :mod:`framecast.viz.render`: side-by-side video frames as uint8 arrays (panels, borders, labels, fonts);
* :mod:`framecast.viz.codecs`: MP4 and GIF writing, reading a video back;
* :mod:`framecast.viz.analysis`: one model run over clips (``framecast.models.Rollout``), surprise maps, the
  PCA view of the hidden state, the error curves (through :func:`framecast.evaluation.evaluate`);
* :mod:`framecast.viz.clips`: the clips a picture shows (first clips of a split, longer "dream" clips);
* :mod:`framecast.viz.command`: ``framecast visualize`` (the parser, :func:`~framecast.viz.command.main`) and
  :func:`~framecast.viz.command.visualize`, which writes every file for a module and a data module.

Frames are ``(T, C, H, W)`` tensors in [0, 1] everywhere; nothing here is imported by this package file, so
importing one module costs only what that module needs.
"""
