"""Shared test setup: the suite's networks are tiny, so one torch thread is fastest
and keeps run time stable on a busy 2-core machine."""

import torch

torch.set_num_threads(1)
