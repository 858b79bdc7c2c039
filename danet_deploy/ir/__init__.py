"""The intermediate representation every stage passes along, below every stage.

* :mod:`danet_deploy.ir.graph`: the flat NIR-level graph (:class:`~danet_deploy.ir.graph.FlatGraph`)
  that export writes and compile, the float interpreter and the reports read, with its
  reset and discretisation conventions;
* :mod:`danet_deploy.ir.neurons`: each neuron node's per-step update, written once: the float
  interpreter runs it, the lowering turns it into populations (docs/compile.md §1);
* :mod:`danet_deploy.ir.resets`: how a spiking neuron fires and resets (a named rule), in floats
  and in the chip's integers, which the interpreter, the fast simulator and our Lava neuron run;
* :mod:`danet_deploy.ir.kinds`: the population kinds, a class each, stating what a population
  computes and answering what every stage asks of it (docs/compile.md §1, "Population kinds");
* :mod:`danet_deploy.ir.program`: the compiled program (populations, synapse groups, integers,
  core mapping) and its file, ``program.h5``, which the simulators, the Lava worker, the
  accountant and the netx writer read.

Stages (models -> export -> compile -> run -> account -> report) import this package and
lower stages, never a later one.
"""
