"""rmt_lab: a workbench for the memory behaviour and scaling of the Recurrent Memory Transformer.

Bulatov, Kuratov, Burtsev, "Scaling Transformer to 1M tokens and beyond with RMT" (arXiv 2304.11062).
"""

__version__ = "0.1.0"
