"""Suite-wide settings: one torch thread per test process.

The models of the suite are tiny; on a 2-core machine a second intra-op thread costs more in
synchronisation than it gains (measured: 7x the CPU time of one thread for one evaluation under
load), and CI runs the suite alone.
"""

import torch

torch.set_num_threads(1)
