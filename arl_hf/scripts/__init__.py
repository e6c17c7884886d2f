"""The commands, one module per job, in TRL's shape: ``make_parser()`` and ``main()`` each.

* :mod:`arl_hf.scripts.train`: ``arl-hf train`` / ``examples/run_arl.py``;
* :mod:`arl_hf.scripts.evaluate`: ``arl-hf evaluate`` / ``examples/evaluate_arl.py``;
* :mod:`arl_hf.scripts.compare`: ``arl-hf compare`` / ``examples/compare.py``.

:mod:`arl_hf.cli` dispatches to them; :mod:`arl_hf.scripts.command` is what they share
(``--debug`` and the one-line errors).
"""
