"""The doors to other frameworks: NIR export and import, SpikingJelly and snnTorch adapters,
verification against the source.

Everything here builds robustsnn's own layers (:class:`~robustsnn.interop.graph.GraphNet` of
``SpikingNeuron`` s), so every gradient estimator applies to an imported model. ``nir`` is an
optional dependency (``pip install robustsnn[nir]``), imported only where a file is read or
written.
"""
