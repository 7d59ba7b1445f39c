"""Prequential (online) codelength of a video stream (Dawid 1984; Blier & Ollivier, NeurIPS 2018).

* :mod:`~framecast.prequential.stream`: the stream (the config's training split, in a fixed order), its
  blocks, and the data module of one block's fit (the clips already transmitted, nothing else);
* :mod:`~framecast.prequential.coding`: what a block costs (block 0 uniform; later blocks coded frame by frame
  by a model trained on the blocks before);
* :mod:`~framecast.prequential.blocks`: the training rule of a block's fit, and every block of every
  predictor, resumably;
* :mod:`~framecast.prequential.report`: ``codelength.json``, ``codelength.md``, ``codelength.png``;
* :mod:`~framecast.prequential.command`: ``framecast codelength`` (see ``docs/prequential.md``).
"""
